// A machine's processes: process.list polled every POLL_MS on one control
// socket while the machine's agent is connected and the page is visible
// (the agent has no event for processes started by others), with Attach, Kill, Remove and, for a
// terminal, Replay (its recording, when the agent records: -record).
// Kill and Remove go through POST …/agent/v1/rpc, so the master's audit
// trail names them.
import { agentRPC } from "./api.js";
import { AgentSocket } from "./agentsocket.js";
import { age } from "./cast.js";
import { badge, h } from "./dom.js";

// POLL_MS is the interval between two process.list calls; after an
// action (Kill, Remove, a tab opened or closed), the next FAST_POLLS are
// FAST_MS apart, so that its effect (an exit, a client) shows at once.
export const POLL_MS = 3000;
const FAST_MS = 250;
const FAST_POLLS = 4;

export class ProcessList {
  // mv is the MachineView: rid, name, attach(info), replay(info).
  constructor(mv) {
    this.mv = mv;
    this.sock = new AgentSocket(mv.rid, mv.name);
    this.timer = null;
    this.running = false;
    this.busy = false;
    this.fast = 0; // polls left at FAST_MS
    this.procs = [];
    this.countEl = h("span", { class: "muted" });
    this.statusEl = h("span", { class: "process-list-status muted" });
    this.body = h("tbody");
    this.el = h("details", { class: "processes", open: true },
      h("summary", {}, "Processes ", this.countEl, " ", this.statusEl),
      h("table", { class: "processes" },
        h("thead", {}, h("tr", {}, ...["Id", "Command", "TTY", "State", "Age", "Clients", "Exit", "CPU", "RSS", ""].map((t) => h("th", {}, t)))),
        this.body));
  }

  // start polls from now on; stop stops (the agent is gone).
  start() {
    if (this.running) return;
    this.running = true;
    this.refresh();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.sock.close();
  }

  // refresh lists now, then every POLL_MS.
  async refresh() {
    clearTimeout(this.timer);
    if (!this.running) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    if (document.hidden) {
      // Not shown: no polling until the page is visible again.
      this.timer = setTimeout(() => this.refresh(), POLL_MS);
      return;
    }
    this.busy = true;
    try {
      const r = await this.sock.call("process.list", null);
      this.procs = r.processes || [];
      this.el.dataset.state = "live";
      this.statusEl.textContent = "";
      this.render();
    } catch (e) {
      // The last list stays, marked stale.
      this.el.dataset.state = "stale";
      this.statusEl.textContent = "(stale: " + (e.message || e) + ")";
    } finally {
      this.busy = false;
    }
    if (!this.running) return;
    if (this.again) {
      this.again = false;
      this.refresh();
      return;
    }
    this.timer = setTimeout(() => this.refresh(), this.fast > 0 ? (this.fast--, FAST_MS) : POLL_MS);
  }

  // soon lists now and then quickly for a while: an action's effect
  // follows.
  soon() {
    this.fast = FAST_POLLS;
    this.refresh();
  }

  // render updates the table in place: a row is rebuilt only when what
  // its buttons depend on changed (so a focused button keeps the focus
  // across polls); age, clients, CPU and RSS are updated as text.
  render() {
    const now = Date.now();
    this.countEl.textContent = `(${this.procs.length})`;
    const old = this.rows || new Map();
    this.rows = new Map();
    const want = [];
    for (const p of this.procs) {
      const key = JSON.stringify([p.state, p.tty, p.name, p.argv, p.exitCode, p.signal, p.startedAt, !!this.mv.terminalFor(p.id)]);
      let r = old.get(p.id);
      if (!r || r.key !== key) r = { key, tr: this.row(p) };
      const running = p.state === "running";
      const cells = r.tr.children;
      cells[4].textContent = age(p.startedAt, running ? now : Date.parse(p.exitedAt) || now);
      cells[5].textContent = String(p.clients ?? 0);
      cells[7].textContent = running && p.cpuSeconds ? p.cpuSeconds.toFixed(2) + " s" : "";
      cells[8].textContent = running && p.rssBytes ? (p.rssBytes / 1048576).toFixed(1) + " MiB" : "";
      this.rows.set(p.id, r);
      want.push(r.tr);
    }
    if (!want.length) want.push(h("tr", {}, h("td", { class: "muted", colspan: 10 }, "none")));
    const same = want.length === this.body.children.length && want.every((tr, i) => this.body.children[i] === tr);
    if (!same) this.body.replaceChildren(...want);
  }

  row(p) {
    const running = p.state === "running";
    const cmd = p.name || (p.argv && p.argv.length ? p.argv.join(" ") : "(shell)");
    const exit = p.signal ? "SIG" + p.signal : p.exitCode != null ? String(p.exitCode) : "";
    const act = (cls, label, fn, title) => h("button", { class: cls, title, onclick: fn }, label);
    const open = this.mv.terminalFor(p.id);
    return h("tr", { class: "process", dataset: { process: p.id, state: p.state } },
      h("td", { class: "mono" }, p.id),
      h("td", { class: "mono command", title: (p.argv || []).join(" ") }, cmd),
      h("td", {}, p.tty ? "yes" : "no"),
      h("td", {}, badge(String(p.state || "unknown").toUpperCase(), "process-state")),
      h("td", { class: "age", title: p.startedAt || "" }),
      h("td", { class: "clients" }),
      h("td", { class: "exit" }, exit),
      h("td", { class: "cpu" }),
      h("td", { class: "rss" }),
      h("td", { class: "actions" },
        act("attach", open ? "Show" : "Attach", () => this.mv.attach(p), "view this process in a terminal tab (from the first byte the agent holds)"),
        running ? act("kill", "Kill", () => this.action("process.kill", p.id), "SIGKILL to its process group") : null,
        !running ? act("remove", "Remove", () => this.action("process.remove", p.id), "forget this exited process") : null,
        p.tty ? act("replay", "Replay", () => this.mv.replay(p), "play its recording (agents started with -record)") : null));
  }

  async action(method, id) {
    try {
      await agentRPC(this.mv.rid, this.mv.name, method, { id });
    } catch (e) {
      this.statusEl.textContent = `(${e.message || e})`;
    }
    this.soon();
  }
}
