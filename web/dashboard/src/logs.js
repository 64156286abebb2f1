// A machine's installer logs: its journal (log lines and events), live
// from the subscription (live.js) and, before that, from the master's
// API a page at a time (GET …/logs?after=&limit=): the page opens with
// the last LOAD_PAGE entries even when they are older than the
// subscription's hour (a machine that failed earlier shows why), and
// "Load earlier" goes back to the oldest the master keeps. Each line
// shows its time; the lines can be filtered by installer and stream and
// searched; Download gives the machine's whole journal (every page from
// the master, not only what the page holds) through the same filter, as
// text or JSON Lines (logtext.js says how each is written).
import { api } from "./api.js";
import { h } from "./dom.js";
import { addEntry, clock, downloadJSONL, downloadText, linesOf, matches, stderrTail } from "./logtext.js";

// MAX_LOG_LINES bounds the lines the page holds per machine: beyond, the
// oldest are dropped (and "Load earlier" brings them back).
export const MAX_LOG_LINES = 20000;
// LOAD_PAGE is the number of entries "Load earlier" asks for (at most
// masterapi.MaxLogsPage); DOWNLOAD_PAGE the page size of a download.
export const LOAD_PAGE = 1000;
const DOWNLOAD_PAGE = 10000;
// STDERR_TAIL is the number of a failed installer's last stderr lines
// shown with the machine's error.
export const STDERR_TAIL = 10;

export class LogView {
  // mv is the MachineView: rid, name, and logsChanged(), called when
  // lines were added (the error's stderr lines follow them).
  constructor(mv) {
    this.mv = mv;
    this.lines = []; // in order; each with its element (line.el)
    this.firstSeq = 0; // the first entry the page holds (0: none)
    this.lastSeq = 0; // the last
    this.docSeq = 0; // the machine's last entry, from its document
    this.atStart = false; // nothing before firstSeq is kept by the master
    this.loading = null; // the promise of a page being loaded
    this.filter = { installer: "", stream: "", search: "" };
    this.installers = new Set();

    this.logEl = h("div", { class: "log", role: "log", tabindex: "0", "aria-label": `installer logs of ${mv.name}` });
    this.countEl = h("span", { class: "muted log-count" });
    this.statusEl = h("span", { class: "muted log-status", role: "status" });
    this.earlierButton = h("button", { type: "button", class: "load-earlier", hidden: true, onclick: () => this.loadEarlier() }, "Load earlier");
    this.installerSel = h("select", { class: "log-installer", "aria-label": "installer", onchange: () => this.setFilter({ installer: this.installerSel.value }) },
      h("option", { value: "" }, "all installers"));
    this.streamSel = h("select", { class: "log-stream", "aria-label": "stream", onchange: () => this.setFilter({ stream: this.streamSel.value }) },
      h("option", { value: "" }, "all streams"), h("option", { value: "STDOUT" }, "stdout"), h("option", { value: "STDERR" }, "stderr"), h("option", { value: "event" }, "events"));
    let searchTimer = null;
    this.searchInput = h("input", { type: "search", class: "log-search", placeholder: "search", "aria-label": "search the logs",
      oninput: () => {
        clearTimeout(searchTimer);
        searchTimer = setTimeout(() => this.setFilter({ search: this.searchInput.value }), 150);
      },
      onkeydown: (ev) => {
        if (ev.key === "Enter") {
          clearTimeout(searchTimer);
          this.setFilter({ search: this.searchInput.value });
        }
      } });
    this.el = h("details", { class: "logs", open: true },
      h("summary", {}, "Installer logs ", this.countEl),
      h("div", { class: "log-tools" }, this.installerSel, this.streamSel, this.searchInput,
        h("button", { type: "button", class: "download-text", title: "the whole journal through the filter, as text", onclick: () => this.download("text") }, "Download text"),
        h("button", { type: "button", class: "download-jsonl", title: "the whole journal's entries through the filter, as JSON Lines", onclick: () => this.download("jsonl") }, "Download JSONL"),
        this.statusEl),
      this.earlierButton, this.logEl);
  }

  base() {
    return `/api/runtimes/${encodeURIComponent(this.mv.rid)}/machines/${encodeURIComponent(this.mv.name)}/logs`;
  }

  // update follows the machine's document: its installers (for the
  // filter) and its last entry; the first time there is an entry the
  // page does not hold, the last page is loaded.
  update(doc) {
    for (const i of doc.installers || []) this.addInstaller(i.id);
    const first = this.docSeq === 0;
    this.docSeq = doc.seq || 0;
    if (first && this.docSeq > 0 && this.lines.length === 0) this.loadEarlier();
    this.showEarlier();
  }

  addInstaller(id) {
    if (!id || this.installers.has(id)) return;
    this.installers.add(id);
    const opts = [...this.installerSel.options].slice(1);
    const o = h("option", { value: id }, id);
    const after = opts.find((x) => x.value > id);
    this.installerSel.insertBefore(o, after || null);
  }

  // addEntries shows live entries in order; those the page holds
  // (seq <= lastSeq) are skipped.
  addEntries(entries) {
    const log = this.logEl;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 4;
    let added = false;
    for (const e of entries) {
      if (typeof e.seq !== "number" || e.seq <= this.lastSeq) continue;
      this.lastSeq = e.seq;
      if (!this.firstSeq) this.firstSeq = e.seq;
      const n = this.lines.length;
      const line = addEntry(this.lines, e);
      if (this.lines.length > n) {
        this.render(line);
        log.append(line.el);
      } else {
        this.renderText(line);
      }
      added = true;
    }
    if (!added) return;
    while (this.lines.length > MAX_LOG_LINES) {
      this.lines.shift().el.remove();
      this.firstSeq = this.lines[0].seq;
      this.atStart = false;
    }
    this.changed();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // loadEarlier loads the LOAD_PAGE entries before the first the page
  // holds (before the machine's last one when it holds none).
  loadEarlier() {
    if (this.loading) return this.loading;
    this.loading = this.fetchEarlier().catch((e) => {
      this.statusEl.textContent = `cannot load the logs: ${e.message}`;
    }).finally(() => {
      this.loading = null;
      this.showEarlier();
    });
    this.showEarlier();
    return this.loading;
  }

  async fetchEarlier() {
    const upto = this.firstSeq ? this.firstSeq - 1 : this.docSeq;
    if (upto < 1) {
      this.atStart = true;
      return;
    }
    if (this.lines.length >= MAX_LOG_LINES) {
      this.statusEl.textContent = `${MAX_LOG_LINES} lines shown: download for the rest`;
      return;
    }
    const after = Math.max(0, upto - LOAD_PAGE);
    const page = await api(`${this.base()}?after=${after}&limit=${LOAD_PAGE}`);
    const entries = (page && page.entries) || [];
    // Those the page holds meanwhile (live entries) are left out.
    const got = entries.filter((e) => typeof e.seq === "number" && e.seq <= upto && (!this.firstSeq || e.seq < this.firstSeq));
    // Nothing before: the start was asked for, or the master keeps
    // nothing older (its first entry is past after+1).
    if (after === 0 || got.length === 0 || entries[0].seq > after + 1) this.atStart = true;
    if (!got.length) return;
    this.prepend(got);
  }

  // prepend puts entries older than every line held before them.
  prepend(entries) {
    const log = this.logEl;
    const fromBottom = log.scrollHeight - log.scrollTop;
    const older = linesOf(entries);
    const first = this.lines[0];
    const last = older[older.length - 1];
    if (first && last.open && first.kind === "log" && last.kind === "log" && first.installer === last.installer && first.stream === last.stream) {
      // A line the older page left open goes on in the first one held.
      first.text = last.text + first.text;
      first.entries = last.entries.concat(first.entries);
      first.seq = last.seq;
      first.time = last.time;
      this.render(first);
      older.pop();
    }
    for (const l of older) this.render(l);
    log.prepend(...older.map((l) => l.el));
    this.lines = older.concat(this.lines);
    this.firstSeq = this.lines[0].seq;
    if (!this.lastSeq) this.lastSeq = entries[entries.length - 1].seq;
    for (const l of older) this.addInstaller(l.installer);
    this.changed();
    log.scrollTop = log.scrollHeight - fromBottom; // what was in view stays
  }

  showEarlier() {
    this.earlierButton.hidden = this.atStart || !(this.firstSeq > 1 || (!this.firstSeq && this.docSeq > 0));
    this.earlierButton.disabled = !!this.loading;
    this.earlierButton.textContent = this.loading ? "Loading…" : "Load earlier";
  }

  // render makes a line's element: its time, installer, stream and text.
  render(line) {
    const cls = ["line", line.kind === "event" ? "event" : line.stream.toLowerCase(), line.lost ? "lost" : "", line.failed ? "error" : ""];
    line.el = h("div", { class: cls.join(" ").replace(/ +/g, " ").trim(), dataset: { seq: line.seq } },
      h("time", { datetime: line.time, title: line.time ? new Date(line.time).toString() : "" }, clock(line.time)),
      line.installer && line.kind === "log" ? h("span", { class: "installer" }, line.installer) : null,
      line.kind === "log" && line.stream === "STDERR" ? h("span", { class: "stream" }, "stderr") : null,
      line.textEl = h("span", { class: "text" }));
    this.renderText(line);
  }

  // renderText shows a line's text, its matches of the search marked, and
  // hides it when the filter leaves it out.
  renderText(line) {
    const q = this.filter.search;
    line.el.hidden = !matches(line, this.filter);
    if (!q || line.el.hidden) {
      line.textEl.textContent = line.text;
      return;
    }
    const lower = line.text.toLowerCase(), ql = q.toLowerCase();
    const parts = [];
    let i = 0;
    for (let j = lower.indexOf(ql); j >= 0; j = lower.indexOf(ql, j + ql.length)) {
      parts.push(line.text.slice(i, j), h("mark", {}, line.text.slice(j, j + q.length)));
      i = j + q.length;
    }
    parts.push(line.text.slice(i));
    line.textEl.replaceChildren(...parts);
  }

  setFilter(f) {
    Object.assign(this.filter, f);
    for (const l of this.lines) this.renderText(l);
    this.count();
  }

  count() {
    const n = this.lines.length;
    const filtered = this.filter.installer || this.filter.stream || this.filter.search;
    const shown = filtered ? this.lines.filter((l) => !l.el.hidden).length : n;
    this.countEl.textContent = `(${filtered ? `${shown} of ` : ""}${n} line${n === 1 ? "" : "s"}${this.lastSeq ? `, seq ${this.lastSeq}${this.firstSeq > 1 ? ` back to ${this.firstSeq}` : ""}` : ""})`;
  }

  changed() {
    this.count();
    this.showEarlier();
    this.mv.logsChanged();
  }

  // stderrTail is the last n stderr lines of an installer the page holds.
  stderrTail(installer, n = STDERR_TAIL) {
    return stderrTail(this.lines, installer, n);
  }

  // download saves the machine's whole journal, through the filter, as
  // text or JSON Lines ("jsonl"): every page the master keeps, up to the
  // last entry the page holds or the document names.
  async download(format) {
    const upto = Math.max(this.lastSeq, this.docSeq);
    this.statusEl.textContent = "downloading…";
    try {
      const entries = [];
      for (let after = 0; after < upto;) {
        const page = await api(`${this.base()}?after=${after}&limit=${DOWNLOAD_PAGE}`);
        const got = (page && page.entries) || [];
        for (const e of got) if (e.seq <= upto) entries.push(e);
        if (!got.length || page.next <= after) break;
        after = page.next;
      }
      const lines = linesOf(entries).filter((l) => matches(l, this.filter));
      const body = format === "jsonl" ? downloadJSONL(lines) : downloadText(lines);
      const type = format === "jsonl" ? "application/x-ndjson" : "text/plain";
      const a = h("a", { href: URL.createObjectURL(new Blob([body], { type: type + ";charset=utf-8" })), download: `${this.mv.name}-logs.${format === "jsonl" ? "jsonl" : "txt"}`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      this.statusEl.textContent = `downloaded ${lines.length} line${lines.length === 1 ? "" : "s"}`;
    } catch (e) {
      this.statusEl.textContent = `download failed: ${e.message}`;
    }
  }
}
