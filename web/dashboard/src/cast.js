// Pure helpers of the dashboard, with no DOM (unit-tested by node:
// cast.test.mjs): the asciicast v2 reader of the player, the age of a
// process in the list, the audit page size.

// MAX_IDLE_S bounds the pause between two events as played (s).
export const MAX_IDLE_S = 2;

// parseCast reads an asciicast v2 file: {header, events: [[t, code,
// data]]}, t with pauses bounded by maxIdle. It throws naming the line
// that is not valid.
export function parseCast(text, maxIdle = MAX_IDLE_S) {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  if (!lines.length) throw new Error("recording: empty file");
  let header;
  try {
    header = JSON.parse(lines[0]);
  } catch (e) {
    throw new Error(`recording: line 1 (the header) is not JSON: ${e.message}`);
  }
  if (!header || header.version !== 2) throw new Error(`recording: asciicast version ${header && header.version}, want 2`);
  const events = [];
  let last = 0;
  let t = 0;
  for (let i = 1; i < lines.length; i++) {
    let ev;
    try {
      ev = JSON.parse(lines[i]);
    } catch (e) {
      throw new Error(`recording: line ${i + 1} is not JSON: ${e.message}`);
    }
    if (!Array.isArray(ev) || typeof ev[0] !== "number" || typeof ev[1] !== "string") {
      throw new Error(`recording: line ${i + 1} is not an event [time, code, data]`);
    }
    t += Math.min(Math.max(0, ev[0] - last), maxIdle);
    last = Math.max(last, ev[0]);
    events.push([t, ev[1], String(ev[2] ?? "")]);
  }
  return { header, events };
}

// age is how long from start (an RFC 3339 time) to end (ms since the
// epoch): "42 s", "3 min", "2 h 5 min", "1 d 3 h"; "" for no start.
export function age(start, end) {
  const t = Date.parse(start);
  if (!t) return "";
  const s = Math.max(0, Math.floor((end - t) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// auditPageSize is the entries the Audit view asks for per page:
// ?audit-page=N in the page's query (1..1000, the API's MaxAuditPage),
// else 100.
export function auditPageSize(search) {
  const v = new URLSearchParams(search).get("audit-page");
  const n = Number(v);
  return v !== null && Number.isInteger(n) && n >= 1 && n <= 1000 ? n : 100;
}
