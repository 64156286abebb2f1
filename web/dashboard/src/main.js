// porthole-master's dashboard: every runtime's machines, their installers,
// servers and installer logs, live, and a terminal per machine whose agent
// is connected. See docs/master.md.
//
// URL: /#token=TOKEN
//   #token  a client token (porthole-master token -data DIR -client). It is
//           in the fragment, which is never sent to a server; the page
//           moves it to sessionStorage and out of the address bar. Without
//           it the page asks for it.
//
// Data: one WebSocket to /api/rpc (JSON-RPC 2.0) with runtime.subscribe
// {runtimeId: "*"}: runtime.machine notifications carry a machine's whole
// state, runtime.entries its journal (log lines and events) in order.
// After a disconnect the page reconnects with backoff and resubscribes
// with after = the last seq it holds per machine, so nothing is missed or
// shown twice.
//
// Terminals: POST .../agent/v1/rpc process.start (tty) through the master's
// agent proxy, then the stock AttachAddon on the raw attach socket
// (.../agent/v1/processes/ID/attach?mode=raw), and process.resize on fit.
//
// Every text from the server goes into the DOM as text (textContent,
// append of strings): never as HTML.
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { Terminal } from "@xterm/xterm";
import { AttachAddon } from "@xterm/addon-attach";
import { FitAddon } from "@xterm/addon-fit";

const TOKEN_KEY = "porthole-master.token";
// REPLAY_MS: on first load, the journal entries of the last hour are shown.
const REPLAY_MS = 60 * 60 * 1000;
// MAX_LOG_LINES bounds the log lines kept in the page per machine; older
// ones are removed from the DOM.
const MAX_LOG_LINES = 2000;
// Reconnection backoff: doubles from BACKOFF_MIN up to BACKOFF_MAX, with
// jitter, and starts over once a subscription succeeds.
const BACKOFF_MIN = 500;
const BACKOFF_MAX = 30000;
// The agent protocol this page speaks (docs/protocol.md §2).
const AGENT_PROTOCOL = "1.0";

// ---- DOM ------------------------------------------------------------------

// h creates an element. props: class, dataset, on<event> listeners, and
// attributes (false/null/undefined leave an attribute out). children:
// nodes, or anything else as text.
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function badge(status, cls = "") {
  return h("span", { class: ("badge " + cls).trim(), dataset: { status: status || "UNKNOWN" } }, status || "UNKNOWN");
}

const connEl = document.getElementById("conn");
function setConn(state, text) {
  connEl.dataset.state = state;
  connEl.textContent = text;
}

// ---- token and HTTP -------------------------------------------------------

// fragmentParam reads name=value from the fragment. Unlike URLSearchParams,
// it keeps "+" as it is: tokens may hold it.
function fragmentParam(name) {
  for (const kv of location.hash.slice(1).split("&")) {
    const i = kv.indexOf("=");
    if (i < 0 || kv.slice(0, i) !== name) continue;
    try {
      return decodeURIComponent(kv.slice(i + 1));
    } catch {
      return kv.slice(i + 1);
    }
  }
  return "";
}

function takeToken() {
  const t = fragmentParam("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

let token = takeToken();

class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// api calls the master with the client token; errors carry the master's
// {"error": ...} message.
async function api(path, { method = "GET", body, headers = {} } = {}) {
  const res = await fetch(path, {
    method,
    body,
    cache: "no-store",
    headers: { Authorization: "Bearer " + token, ...headers },
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported below when the status is an error
  }
  if (!res.ok) {
    const msg = (data && typeof data.error === "string" ? data.error : text.trim()) || res.statusText;
    throw new HTTPError(res.status, `${method} ${path}: ${res.status} ${msg}`);
  }
  return data;
}

// ticket returns a short-lived ticket for a WebSocket URL (browsers cannot
// set headers on WebSockets, and the token never goes in a URL).
async function ticket() {
  return (await api("/api/tickets", { method: "POST" })).ticket;
}

function wsURL(path, query) {
  const u = new URL(path, location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  return u.href;
}

function agentBase(rid, name) {
  return `/api/runtimes/${encodeURIComponent(rid)}/machines/${encodeURIComponent(name)}/agent`;
}

// agentRPC makes one JSON-RPC call to a machine's agent: POST /v1/rpc
// through the master's proxy.
let agentSeq = 0;
async function agentRPC(rid, name, method, params) {
  const msg = await api(agentBase(rid, name) + "/v1/rpc", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Porthole-Protocol": AGENT_PROTOCOL },
    body: JSON.stringify({ jsonrpc: "2.0", id: ++agentSeq, method, params }),
  });
  if (!msg) throw new Error(`${method}: empty answer`);
  if (msg.error) throw new Error(`${method}: ${msg.error.message}`);
  return msg.result;
}

// ---- runtimes and machines ------------------------------------------------

const runtimesEl = document.getElementById("runtimes");
const emptyEl = document.getElementById("empty");
const runtimes = new Map(); // runtime id → {el, list, machines: Map name → MachineView}

// insertSorted inserts el among parent's children whose dataset[key]
// orders them.
function insertSorted(parent, el, key) {
  const v = el.dataset[key];
  for (const c of parent.children) {
    if (c.dataset[key] !== undefined && c.dataset[key] > v) {
      parent.insertBefore(el, c);
      return;
    }
  }
  parent.append(el);
}

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

function machine(rid, name) {
  const rt = runtime(rid);
  let mv = rt.machines.get(name);
  if (!mv) {
    mv = new MachineView(rid, name);
    rt.machines.set(name, mv);
    insertSorted(rt.list, mv.el, "machine");
  }
  return mv;
}

class MachineView {
  constructor(rid, name) {
    this.rid = rid;
    this.name = name;
    this.doc = null;
    this.lastSeq = 0; // the last journal entry shown
    this.logLines = 0;
    this.partial = null; // the line a partial log entry left open: {key, el}
    this.term = null; // TerminalView

    this.statusEl = h("span", { class: "machine-status badge" });
    this.agentEl = h("span", { class: "agent-status" });
    this.bootEl = h("span", { class: "boot-status muted" });
    this.termButton = h("button", { class: "open-terminal", disabled: true, onclick: () => this.openTerminal() }, "Terminal");
    this.errorEl = h("div", { class: "machine-error", hidden: true });
    this.installersEl = h("tbody");
    this.serversEl = h("tbody");
    this.logEl = h("div", { class: "log", role: "log" });
    this.logCountEl = h("span", { class: "muted" });
    this.el = h("article", { class: "machine", dataset: { runtime: rid, machine: name } },
      h("div", { class: "machine-head" },
        h("h3", {}, name), this.statusEl, this.agentEl, this.bootEl, h("span", { class: "spacer" }), this.termButton),
      this.errorEl,
      h("table", { class: "installers" },
        h("thead", {}, h("tr", {}, h("th", {}, "Installer"), h("th", {}, "Status"), h("th", {}, "Error"))),
        this.installersEl),
      h("table", { class: "servers" },
        h("thead", {}, h("tr", {}, h("th", {}, "Server"), h("th", {}, "Port"), h("th", {}, "Status"), h("th", {}, "URL"))),
        this.serversEl),
      h("details", { class: "logs", open: true }, h("summary", {}, "Installer logs ", this.logCountEl), this.logEl));
  }

  update(doc) {
    this.doc = doc;
    const st = doc.status || "UNKNOWN";
    this.statusEl.textContent = st;
    this.statusEl.dataset.status = st;
    this.errorEl.textContent = doc.error || "";
    this.errorEl.hidden = !doc.error;
    const agent = doc.agent || {};
    this.agentEl.replaceChildren("agent ", badge(agent.connected ? "CONNECTED" : "DISCONNECTED"),
      agent.connected && agent.version ? " " + agent.version : "");
    const bs = doc.bootstrapper || {};
    this.bootEl.textContent = `bootstrapper ${bs.status || "–"}${bs.connected ? " (connected)" : ""}`;
    this.termButton.disabled = !agent.connected;
    this.termButton.title = agent.connected ? "open a shell on this machine" : "the machine's agent is not connected to the master";

    this.installersEl.replaceChildren(...(doc.installers || []).map((i) =>
      h("tr", { class: "installer", dataset: { installer: i.id } },
        h("td", { class: "mono" }, i.id), h("td", {}, badge(i.status, "installer-status")),
        h("td", { class: "error installer-error" }, i.error || ""))));
    if (!this.installersEl.children.length) this.installersEl.append(h("tr", {}, h("td", { class: "muted", colspan: 3 }, "none")));

    this.serversEl.replaceChildren(...(doc.servers || []).map((s) =>
      h("tr", { class: "server", dataset: { server: s.name } },
        h("td", { class: "mono" }, s.name), h("td", { class: "mono" }, s.port || ""),
        h("td", {}, badge(s.status, "server-status")), h("td", { class: "mono" }, link(s.url)))));
    if (!this.serversEl.children.length) this.serversEl.append(h("tr", {}, h("td", { class: "muted", colspan: 4 }, "none")));
  }

  // addEntries shows journal entries in order; those already shown
  // (seq <= lastSeq, after a resubscription) are skipped.
  addEntries(entries) {
    const log = this.logEl;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 4;
    for (const e of entries) {
      if (typeof e.seq !== "number" || e.seq <= this.lastSeq) continue;
      this.lastSeq = e.seq;
      this.addEntry(e);
    }
    while (this.logLines > MAX_LOG_LINES && log.firstChild) {
      log.firstChild.remove();
      this.logLines--;
    }
    this.logCountEl.textContent = `(${this.logLines} line${this.logLines === 1 ? "" : "s"}${this.lastSeq ? ", seq " + this.lastSeq : ""})`;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  addEntry(e) {
    const time = e.time ? new Date(e.time).toLocaleString() : "";
    if (e.type === "log") {
      const stderr = e.stream === "STDERR";
      const key = `${e.installer}\n${e.stream}`;
      if (this.partial && this.partial.key === key) {
        this.partial.el.append(e.text || ""); // the line goes on
      } else {
        const el = h("div", { class: [stderr ? "stderr" : "stdout", e.lost ? "lost" : ""].join(" ").trim(), title: time },
          e.installer ? h("span", { class: "installer" }, e.installer) : null, e.text || "");
        this.line(el);
        this.partial = e.partial ? { key, el } : null;
        return;
      }
      if (!e.partial) this.partial = null;
      return;
    }
    this.partial = null;
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
    this.line(h("div", { class: "event" + (e.status === "FAILED" ? " error" : ""), title: time }, text));
  }

  line(el) {
    this.logEl.append(el);
    this.logLines++;
  }

  openTerminal() {
    if (this.term) {
      this.term.focus();
      return;
    }
    this.term = new TerminalView(this);
    this.el.append(this.term.el);
    this.term.start().catch((e) => this.term && this.term.status(String(e.message || e)));
  }
}

// link shows a server URL: a link for http(s), text otherwise.
function link(url) {
  if (!url) return "";
  try {
    const u = new URL(url);
    if (u.protocol === "http:" || u.protocol === "https:") {
      return h("a", { href: u.href, target: "_blank", rel: "noopener noreferrer" }, url);
    }
  } catch {
    // not a URL: shown as text
  }
  return url;
}

// ---- terminals ------------------------------------------------------------

const terminals = new Map(); // "rid\nname" → TerminalView, for tests (window.porthole)

class TerminalView {
  constructor(mv) {
    this.mv = mv;
    this.id = null;
    this.ws = null;
    this.closed = false; // the panel was closed
    this.ended = false; // the attach socket has closed
    this.statusEl = h("span", { class: "terminal-status" }, "starting…");
    this.box = h("div", { class: "terminal" });
    this.el = h("div", { class: "terminal-panel" },
      h("div", { class: "terminal-bar" }, this.statusEl, h("button", { class: "close-terminal", onclick: () => this.close() }, "Close")),
      this.box);
    this.term = new Terminal({ cursorBlink: true, scrollback: 10000, fontSize: 13 });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.pendingSize = null;
    this.resizing = false;
  }

  status(text) {
    this.statusEl.textContent = text;
  }

  focus() {
    this.term.focus();
  }

  async start() {
    const { rid, name } = this.mv;
    this.term.open(this.box);
    this.fit.fit();
    this.el.scrollIntoView({ block: "nearest" });
    terminals.set(rid + "\n" + name, this);
    // Start at the size the fit addon chose, so the shell never sees 24x80.
    const p = await agentRPC(rid, name, "process.start", { tty: true, size: { rows: this.term.rows, cols: this.term.cols } });
    if (this.closed) {
      this.hangUp(p.id);
      return;
    }
    this.id = p.id;
    this.status(`process ${p.id}: connecting`);
    const url = wsURL(agentBase(rid, name) + `/v1/processes/${encodeURIComponent(p.id)}/attach`, { mode: "raw", ticket: await ticket() });
    if (this.closed) {
      this.hangUp(p.id);
      return;
    }
    const ws = new WebSocket(url, ["porthole.raw.v1"]);
    this.ws = ws;
    this.term.loadAddon(new AttachAddon(ws));
    ws.addEventListener("open", () => {
      this.status(`process ${p.id} on ${name}`);
      this.sendResize(); // another viewer may have left it at another size
    });
    ws.addEventListener("close", (e) => {
      this.ended = true;
      const why = e.code === 1000 ? e.reason || "closed" : `disconnected (code ${e.code}${e.reason ? ": " + e.reason : ""})`;
      this.status(`process ${p.id}: ${why}`);
      if (!this.closed) this.term.write(`\r\n[${why}]\r\n`);
    });
    this.term.onResize(() => this.sendResize());
    this.observer = new ResizeObserver(() => this.fit.fit());
    this.observer.observe(this.box);
    this.term.focus();
  }

  // sendResize tells the agent the terminal's size: one call at a time,
  // the last size wins.
  async sendResize() {
    this.pendingSize = { rows: this.term.rows, cols: this.term.cols };
    if (this.resizing || this.id == null) return;
    this.resizing = true;
    while (this.pendingSize && !this.ended) {
      const size = this.pendingSize;
      this.pendingSize = null;
      try {
        await agentRPC(this.mv.rid, this.mv.name, "process.resize", { id: this.id, ...size });
      } catch (e) {
        console.warn(e);
      }
    }
    this.resizing = false;
  }

  // close hangs the shell up (SIGHUP, as closing a terminal window does)
  // and removes the panel.
  close() {
    this.closed = true;
    if (this.observer) this.observer.disconnect();
    if (this.id != null && !this.ended) this.hangUp(this.id);
    if (this.ws) this.ws.close();
    terminals.delete(this.mv.rid + "\n" + this.mv.name);
    this.term.dispose();
    this.el.remove();
    this.mv.term = null;
  }

  hangUp(id) {
    agentRPC(this.mv.rid, this.mv.name, "process.signal", { id, signal: "HUP" }).catch((e) => console.warn(e));
  }
}

// ---- the live subscription ------------------------------------------------

class Live {
  constructor() {
    this.ws = null;
    this.nextId = 0;
    this.pending = new Map(); // request id → {resolve, reject}
    this.attempt = 0;
    this.timer = null;
    this.since = new Date(Date.now() - REPLAY_MS).toISOString();
  }

  async connect() {
    clearTimeout(this.timer);
    setConn("connecting", "connecting…");
    let t;
    try {
      t = await ticket();
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        showLogin(e.message);
        setConn("error", "not signed in");
        return;
      }
      this.retry(e.message);
      return;
    }
    const ws = new WebSocket(wsURL("/api/rpc", { ticket: t }));
    this.ws = ws;
    ws.addEventListener("open", () => this.subscribe(ws));
    ws.addEventListener("message", (ev) => this.receive(ev.data));
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const p of this.pending.values()) p.reject(new Error("socket closed"));
      this.pending.clear();
      this.retry(`disconnected (code ${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
    });
  }

  // subscribe asks for every runtime: on the first connection, what the
  // last REPLAY_MS held; after a reconnection, also only what follows the
  // last entry shown per machine. after is per machine name, so machines
  // of the same name in several runtimes resume from the lowest; the
  // duplicates are dropped by seq (MachineView.addEntries).
  async subscribe(ws) {
    const params = { runtimeId: "*", since: this.since };
    const after = {};
    for (const rt of runtimes.values()) {
      for (const mv of rt.machines.values()) {
        if (mv.lastSeq === 0) continue;
        after[mv.name] = mv.name in after ? Math.min(after[mv.name], mv.lastSeq) : mv.lastSeq;
      }
    }
    if (Object.keys(after).length) params.after = after;
    try {
      await this.call(ws, "runtime.subscribe", params);
      this.attempt = 0;
      setConn("live", "live");
    } catch (e) {
      setConn("error", "runtime.subscribe: " + e.message);
      ws.close();
    }
  }

  call(ws, method, params) {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn("not JSON from /api/rpc", data);
      return;
    }
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (m.method === "runtime.machine") {
        const d = m.params.machine;
        machine(d.runtimeId, d.name).update(d);
      } else if (m.method === "runtime.entries") {
        machine(m.params.runtimeId, m.params.machineName).addEntries(m.params.entries || []);
      } else if (m.id != null && this.pending.has(m.id)) {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error) p.reject(new Error(m.error.message));
        else p.resolve(m.result);
      }
    }
  }

  retry(why) {
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.attempt);
    this.attempt++;
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    setConn("error", `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

// ---- start ----------------------------------------------------------------

const live = new Live();
const loginEl = document.getElementById("login");

function showLogin(reason) {
  document.getElementById("login-reason").textContent = reason;
  loginEl.hidden = false;
}

loginEl.addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("login-token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  loginEl.hidden = true;
  start();
});

function start() {
  api("/api/info").then((i) => {
    document.getElementById("version").textContent = `${i.version} · agent protocol ${i.protocolVersion}`;
  }).catch(() => {});
  live.connect();
}

// For tests and the console: the open terminals.
window.porthole = {
  terminal: (rid, name) => terminals.get(rid + "\n" + name)?.term,
  processId: (rid, name) => terminals.get(rid + "\n" + name)?.id,
};

if (token) start();
else {
  showLogin("No client token: open this page as /#token=TOKEN, or paste it here.");
  setConn("error", "not signed in");
}
