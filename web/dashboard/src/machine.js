// Runtimes and their machines: a section per runtime, and per machine a
// card with its status, installers, servers, installer logs and terminal.
import { badge, h, insertSorted } from "./dom.js";
import { LogView } from "./logs.js";
import { Player } from "./player.js";
import { PortsView } from "./ports.js";
import { ProcessList } from "./processes.js";
import { TerminalView, savedShells } from "./terminal.js";

const runtimesEl = document.getElementById("runtimes");
const emptyEl = document.getElementById("empty");
const runtimes = new Map(); // runtime id → {el, list, machines: Map name → MachineView}

function runtime(rid) {
  let rt = runtimes.get(rid);
  if (rt) return rt;
  const [ws = "", env = "", owner = ""] = rid.split(":");
  const list = h("div", { class: "machines" });
  const el = h("section", { class: "runtime", dataset: { runtime: rid } },
    h("h2", {}, ws || rid, h("span", { class: "muted" }, `env ${env} · owner ${owner} · ${rid}`)),
    list);
  rt = { el, list, machines: new Map() };
  runtimes.set(rid, rt);
  emptyEl.hidden = true;
  insertSorted(runtimesEl, el, "runtime");
  return rt;
}

// machine returns the view of a runtime's machine, added to the page the
// first time.
export function machine(rid, name) {
  const rt = runtime(rid);
  let mv = rt.machines.get(name);
  if (!mv) {
    mv = new MachineView(rid, name);
    rt.machines.set(name, mv);
    insertSorted(rt.list, mv.el, "machine");
  }
  return mv;
}

// findMachine returns a machine's view, or undefined.
export function findMachine(rid, name) {
  return runtimes.get(rid)?.machines.get(name);
}

// stale: the page's connection to the master is down, so what it shows
// of each machine may be out of date (main.js, from the live socket).
let stale = false;
export function setStale(s) {
  stale = s;
  for (const mv of machines()) mv.showAgent();
}

// machines yields every machine's view in the page.
export function* machines() {
  for (const rt of runtimes.values()) yield* rt.machines.values();
}

class MachineView {
  constructor(rid, name) {
    this.rid = rid;
    this.name = name;
    this.doc = null;
    this.terms = []; // TerminalViews, in tab order
    this.active = null; // the TerminalView shown
    this.player = null; // the Player shown

    this.statusEl = h("span", { class: "machine-status badge" });
    this.agentEl = h("span", { class: "agent-status" });
    this.bootEl = h("span", { class: "boot-status muted" });
    this.termButton = h("button", { class: "open-terminal", disabled: true, onclick: () => this.openTerminal() }, "New shell");
    this.errorEl = h("div", { class: "machine-error", hidden: true });
    this.installersEl = h("tbody");
    this.ports = new PortsView(this);
    this.logs = new LogView(this);
    this.procs = new ProcessList(this);
    this.tabsEl = h("div", { class: "terminal-tabs", role: "tablist", hidden: true });
    this.panelsEl = h("div", { class: "terminal-panels" });
    this.playerEl = h("div", { class: "player-slot" });
    this.el = h("article", { class: "machine", dataset: { runtime: rid, machine: name } },
      h("div", { class: "machine-head" },
        h("h3", {}, name), this.statusEl, this.agentEl, this.bootEl, h("span", { class: "spacer" }), this.termButton),
      this.errorEl,
      h("table", { class: "installers" },
        h("thead", {}, h("tr", {}, h("th", {}, "Installer"), h("th", {}, "Status"), h("th", {}, "Error"))),
        this.installersEl),
      this.ports.el,
      this.logs.el,
      this.procs.el, this.playerEl, this.tabsEl, this.panelsEl);
  }

  // showAgent shows the agent's state: from the last machine document,
  // or unknown while the page's connection to the master is down.
  showAgent() {
    const agent = (this.doc && this.doc.agent) || {};
    this.el.dataset.stale = stale ? "true" : "false";
    if (stale) {
      this.agentEl.replaceChildren("agent ", h("span", { class: "badge", dataset: { status: "UNKNOWN" }, title: "the page's connection to the master is down" }, "UNKNOWN (reconnecting)"));
      return;
    }
    this.agentEl.replaceChildren("agent ", badge(agent.connected ? "CONNECTED" : "DISCONNECTED"),
      agent.connected && agent.version ? " " + agent.version : "");
  }

  update(doc) {
    this.doc = doc;
    const st = doc.status || "UNKNOWN";
    this.statusEl.textContent = st;
    this.statusEl.dataset.status = st;
    this.logs.update(doc);
    this.showError();
    const agent = doc.agent || {};
    this.showAgent();
    const bs = doc.bootstrapper || {};
    this.bootEl.textContent = `bootstrapper ${bs.status || "–"}${bs.connected ? " (connected)" : ""}`;
    this.termButton.disabled = !agent.connected;
    this.termButton.title = agent.connected ? "open a shell on this machine" : "the machine's agent is not connected to the master";
    if (agent.connected) {
      this.procs.start();
      // After a reload: the shells this tab opened and did not close.
      for (const saved of savedShells(this.rid, this.name)) {
        if (!this.terminalFor(saved.id)) this.openTerminal(saved);
      }
    } else {
      this.procs.stop();
    }

    this.installersEl.replaceChildren(...(doc.installers || []).map((i) =>
      h("tr", { class: "installer", dataset: { installer: i.id } },
        h("td", { class: "mono" }, i.id), h("td", {}, badge(i.status, "installer-status")),
        h("td", { class: "error installer-error" }, i.error && i.error === doc.error ? h("span", { class: "muted" }, "the machine's error, above") : i.error || ""))));
    if (!this.installersEl.children.length) this.installersEl.append(h("tr", {}, h("td", { class: "muted", colspan: 3 }, "none")));

    this.ports.update(doc);
  }

  // lastSeq is the last journal entry the page holds (live.js resumes
  // after it).
  get lastSeq() {
    return this.logs.lastSeq;
  }

  // addEntries shows journal entries in order (logs.js).
  addEntries(entries) {
    this.logs.addEntries(entries);
  }

  // showError shows the machine's error once and, under it, the last
  // stderr lines of each failed installer: the cause, next to the
  // sentence.
  showError() {
    const doc = this.doc || {};
    const failed = (doc.installers || []).filter((i) => i.status === "FAILED");
    const tails = failed.map((i) => {
      const lines = this.logs.stderrTail(i.id);
      return h("div", { class: "stderr-tail", dataset: { installer: i.id } },
        h("div", { class: "muted" }, lines.length ? `last stderr lines of ${i.id}:` : `${i.id} wrote nothing on stderr that the page holds`),
        lines.length ? h("pre", {}, lines.join("\n")) : null);
    });
    this.errorEl.replaceChildren(doc.error ? h("div", { class: "machine-error-text" }, doc.error) : null, ...tails);
    this.errorEl.hidden = !doc.error && !tails.length;
  }

  // logsChanged: lines were added; the error's stderr lines follow.
  logsChanged() {
    if (this.doc && (this.doc.installers || []).some((i) => i.status === "FAILED")) this.showError();
  }

  // openTerminal opens a tab: on a saved or listed process ({id,
  // startedAt, tty}), else on a new shell.
  openTerminal(saved = null) {
    const tv = new TerminalView(this);
    this.terms.push(tv);
    tv.tab = h("button", { class: "terminal-tab", role: "tab", onclick: () => this.show(tv), onkeydown: (ev) => this.tabKey(ev, tv) }, "…");
    this.tabsEl.append(tv.tab);
    this.tabsEl.hidden = false;
    this.panelsEl.append(tv.el);
    this.show(tv);
    tv.start(saved).then(() => this.procs.soon(), (e) => tv.status(String(e.message || e), "failed"));
    return tv;
  }

  // tabKey: the arrow keys, Home and End move between the tabs (the
  // focus stays on the tabs; Tab goes on into the terminal).
  tabKey(ev, tv) {
    const i = this.terms.indexOf(tv), n = this.terms.length;
    const to = { ArrowRight: (i + 1) % n, ArrowLeft: (i - 1 + n) % n, Home: 0, End: n - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    const next = this.terms[to];
    this.show(next);
    next.tab.focus();
  }

  // newShell replaces an ended tab with a new shell.
  newShell(old) {
    old.close(false);
    this.openTerminal();
  }

  // attach shows a listed process in a tab: its own if it has one.
  attach(p) {
    const tv = this.terminalFor(p.id);
    if (tv) this.show(tv);
    else this.openTerminal({ id: p.id, startedAt: p.startedAt, tty: p.tty });
  }

  terminalFor(id) {
    return this.terms.find((t) => t.id === id);
  }

  show(tv) {
    this.active = tv;
    for (const t of this.terms) {
      t.el.hidden = t !== tv;
      t.tab.setAttribute("aria-selected", String(t === tv));
    }
    tv.focus();
  }

  // tabState labels a terminal's tab with its process and state.
  tabState(tv) {
    if (!tv.tab) return;
    const st = tv.statusEl.dataset.state;
    tv.tab.dataset.state = st;
    tv.tab.dataset.process = tv.id ?? "";
    tv.tab.textContent = (tv.id != null ? `#${tv.id}` : "new") + (st === "exited" || st === "failed" ? " (ended)" : "");
  }

  removeTerminal(tv) {
    this.terms = this.terms.filter((t) => t !== tv);
    tv.tab.remove();
    this.tabsEl.hidden = this.terms.length === 0;
    if (this.active === tv) {
      this.active = null;
      if (this.terms.length) this.show(this.terms[this.terms.length - 1]);
    }
    this.procs.soon();
  }

  // replay plays a process's recording in a player panel.
  replay(p) {
    if (this.player) this.player.close();
    this.player = new Player(this, p);
    this.playerEl.append(this.player.el);
    this.player.load();
  }
}
