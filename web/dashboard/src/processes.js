// A machine's processes: process.list polled every POLL_MS on one control
// socket while the machine's agent is connected (the agent has no event
// for processes started by others), with Attach, Kill, Remove and, for a
// terminal, Replay (its recording, when the agent records: -record).
// Kill and Remove go through POST …/agent/v1/rpc, so the master's audit
// trail names them.
import { agentRPC } from "./api.js";
import { AgentSocket } from "./agentsocket.js";
import { badge, h } from "./dom.js";

// POLL_MS is the interval between two process.list calls.
export const POLL_MS = 3000;

export class ProcessList {
  // mv is the MachineView: rid, name, attach(info), replay(info).
  constructor(mv) {
    this.mv = mv;
    this.sock = new AgentSocket(mv.rid, mv.name);
    this.timer = null;
    this.running = false;
    this.busy = false;
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
    this.timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  render() {
    const now = Date.now();
    this.countEl.textContent = `(${this.procs.length})`;
    this.body.replaceChildren(...this.procs.map((p) => this.row(p, now)));
    if (!this.procs.length) this.body.append(h("tr", {}, h("td", { class: "muted", colspan: 10 }, "none")));
  }

  row(p, now) {
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
      h("td", { title: p.startedAt || "" }, age(p.startedAt, running ? now : Date.parse(p.exitedAt) || now)),
      h("td", { class: "clients" }, String(p.clients ?? 0)),
      h("td", { class: "exit" }, exit),
      h("td", {}, running && p.cpuSeconds ? p.cpuSeconds.toFixed(2) + " s" : ""),
      h("td", {}, running && p.rssBytes ? (p.rssBytes / 1048576).toFixed(1) + " MiB" : ""),
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
    this.refresh();
  }
}

// age is how long from start to end (ms since the epoch), as "42 s",
// "3 min", "2 h 5 min", "1 d 3 h".
export function age(start, end) {
  const t = Date.parse(start);
  if (!t) return "";
  const s = Math.max(0, Math.floor((end - t) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
