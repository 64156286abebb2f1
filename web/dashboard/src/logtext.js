// The installer logs' pure part (no DOM; logtext.test.mjs runs it in
// node): journal entries (masterapi.Entry) made into lines, the filter,
// the text of a download.
//
// A line is {seq, time, kind, installer, stream, text, lost, failed,
// entries, open}: kind "log" (stream "STDOUT" or "STDERR") or "event"
// (kind "event": an installer's, the bootstrapper's, a server's or the
// agent's status); seq and time are its first entry's; entries are the
// journal entries it is made of (a log line the bootstrapper sent in
// parts is one line: partial entries go on the line they started); open:
// its last entry was partial, so the next one of the same installer and
// stream goes on it.

// eventText is what an event entry says.
export function eventText(e) {
  let text;
  switch (e.type) {
    case "installer":
      text = `installer ${e.installer}: ${e.status}`;
      break;
    case "bootstrapper":
      text = `bootstrapper: ${e.status}`;
      break;
    case "server":
      text = `server ${e.server} (${e.port}) of ${e.installer}: ${e.status}`;
      break;
    case "agent":
      text = `agent: ${e.status}`;
      break;
    default:
      text = `${e.type}: ${e.status || ""}`;
  }
  if (e.error) text += ` — ${e.error}`;
  return text;
}

const logKey = (e) => `${e.installer || ""}\n${e.stream || ""}`;

// addEntry adds entry e to lines (an array, changed in place) and returns
// the line it made or went on: a new one is last in lines.
export function addEntry(lines, e) {
  const last = lines[lines.length - 1];
  if (e.type === "log") {
    if (last && last.open && last.kind === "log" && logKey(last) === logKey(e)) {
      last.text += e.text || "";
      last.entries.push(e);
      last.open = !!e.partial;
      return last;
    }
    if (last) last.open = false;
    const line = { seq: e.seq, time: e.time || "", kind: "log", installer: e.installer || "", stream: e.stream === "STDERR" ? "STDERR" : "STDOUT", text: e.text || "", lost: !!e.lost, failed: false, entries: [e], open: !!e.partial };
    lines.push(line);
    return line;
  }
  if (last) last.open = false;
  // The bootstrapper's failure repeats its installer's error: said once.
  let text = eventText(e);
  if (e.error) {
    const prev = lines.findLast((l) => l.kind === "event");
    if (prev && prev.entries[0].error === e.error) text = eventText({ ...e, error: "" }) + " (the error above)";
  }
  const line = { seq: e.seq, time: e.time || "", kind: "event", installer: e.installer || "", stream: "", text, lost: false, failed: e.status === "FAILED", entries: [e], open: false };
  lines.push(line);
  return line;
}

// linesOf makes lines of entries in order.
export function linesOf(entries) {
  const lines = [];
  for (const e of entries) addEntry(lines, e);
  return lines;
}

// Filter: installer ("" any), stream ("" any, "STDOUT", "STDERR",
// "event"), search (text looked for, case-insensitively, in the line's
// text and installer; "" any).
export function matches(line, { installer = "", stream = "", search = "" } = {}) {
  if (installer && line.installer !== installer) return false;
  if (stream === "event" ? line.kind !== "event" : stream && line.stream !== stream) return false;
  if (search) {
    const q = search.toLowerCase();
    return line.text.toLowerCase().includes(q) || line.installer.toLowerCase().includes(q);
  }
  return true;
}

// lineText is a line of the text download: its time (RFC 3339, UTC, as
// the master recorded it), its installer ("-" for none), its stream
// ("stdout", "stderr", or "event"), then its text as it was written.
export function lineText(line) {
  const what = line.kind === "event" ? "event" : line.stream.toLowerCase();
  return `${line.time || "-"} ${line.installer || "-"} ${what} ${line.text}`;
}

// downloadText is the text download of lines: one line each.
export function downloadText(lines) {
  return lines.map((l) => lineText(l) + "\n").join("");
}

// downloadJSONL is the JSON Lines download of lines: their journal
// entries, one JSON object a line, as the master's API gives them.
export function downloadJSONL(lines) {
  return lines.flatMap((l) => l.entries).map((e) => JSON.stringify(e) + "\n").join("");
}

// clock shows a time as the page does: HH:MM:SS local, with the date
// (YYYY-MM-DD) before it when it is not today's.
export function clock(iso, now = new Date()) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const p = (n) => String(n).padStart(2, "0");
  const t = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return t;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${t}`;
}

// stderrTail is the texts of the last n stderr lines of an installer.
export function stderrTail(lines, installer, n) {
  const out = [];
  for (let i = lines.length - 1; i >= 0 && out.length < n; i--) {
    const l = lines[i];
    if (l.kind === "log" && l.stream === "STDERR" && l.installer === installer) out.push(l.text);
  }
  return out.reverse();
}
