// A terminal panel on a machine: a shell (process.start, tty) through the
// master's agent proxy, viewed on a framed attach socket
// (.../agent/v1/processes/ID/attach, porthole.attach.v1) that survives
// dropped sockets and master restarts (shared/attach.js: it reattaches at
// the exact offset with the shared backoff), and process.resize on fit.
// The process id is kept in sessionStorage per machine, so a reload
// reattaches to the same shell; only Close hangs it up.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { gapMarker } from "../../shared/agent.js";
import { Attachment } from "../../shared/attach.js";
import { RPCError } from "../../shared/jsonrpc.js";
import { resizeQueue } from "../../shared/resize.js";
import { wsURL } from "../../shared/socket.js";
import { HTTPError, agentBase, agentRPC, ticket } from "./api.js";
import { h } from "./dom.js";

// terminals holds the open terminals by "rid\nname", for tests and the
// console (window.porthole).
export const terminals = new Map();

// The shell a page opened on a machine, kept across reloads of the tab:
// {id, startedAt} under SESSION_KEY + rid + "\n" + name.
const SESSION_KEY = "porthole-dashboard.terminal\n";

// savedShell returns the shell this tab opened on the machine and did not
// close, or null.
export function savedShell(rid, name) {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY + rid + "\n" + name) || "null");
    return s && typeof s.id === "string" ? s : null;
  } catch {
    return null;
  }
}

function saveShell(rid, name, s) {
  sessionStorage.setItem(SESSION_KEY + rid + "\n" + name, JSON.stringify(s));
}

function forgetShell(rid, name) {
  sessionStorage.removeItem(SESSION_KEY + rid + "\n" + name);
}

// finalError marks an error that retrying will not fix.
function finalError(message) {
  const e = new Error(message);
  e.final = true;
  return e;
}

export class TerminalView {
  // mv is the MachineView the panel belongs to: rid, name, and term, which
  // close clears.
  constructor(mv) {
    this.mv = mv;
    this.id = null;
    this.startedAt = null;
    this.att = null; // the Attachment
    this.closed = false; // the panel was closed
    this.ended = false; // the process exited, or cannot be attached to
    this.countdown = null; // the interval that updates "next in x s"
    this.statusEl = h("span", { class: "terminal-status", dataset: { state: "starting" } }, "starting…");
    this.box = h("div", { class: "terminal" });
    this.el = h("div", { class: "terminal-panel" },
      h("div", { class: "terminal-bar" }, this.statusEl, h("button", { class: "close-terminal", onclick: () => this.close() }, "Close")),
      this.box);
    this.term = new Terminal({ cursorBlink: true, scrollback: 10000, fontSize: 13 });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
  }

  // status shows text in the panel's bar (never in the terminal's
  // output); state is data-state, for the page's style and tests.
  status(text, state = this.statusEl.dataset.state) {
    this.statusEl.textContent = text;
    this.statusEl.dataset.state = state;
  }

  focus() {
    this.term.focus();
  }

  // start opens the terminal: on the saved shell (a reload), else on a new
  // shell.
  async start(saved) {
    const { rid, name } = this.mv;
    this.term.open(this.box);
    this.fit.fit();
    this.el.scrollIntoView({ block: "nearest" });
    terminals.set(rid + "\n" + name, this);
    if (saved) {
      this.id = saved.id;
      this.startedAt = saved.startedAt || null;
    } else {
      // Start at the size the fit addon chose, so the shell never sees 24x80.
      const p = await agentRPC(rid, name, "process.start", { tty: true, size: { rows: this.term.rows, cols: this.term.cols } });
      if (this.closed) {
        this.hangUp(p.id);
        return;
      }
      this.id = p.id;
      this.startedAt = p.startedAt;
      saveShell(rid, name, { id: p.id, startedAt: p.startedAt });
    }
    const id = this.id;
    // Resizes go out one at a time, and the last size wins.
    const resize = resizeQueue((size) => agentRPC(rid, name, "process.resize", { id, ...size }), () => this.ended || !this.att?.open);
    const sendResize = () => resize({ rows: this.term.rows, cols: this.term.cols });
    // A reload starts from the first byte the agent holds (the new
    // terminal is empty: the shell's screen is redrawn); a reconnection
    // goes on at the next byte.
    this.att = new Attachment({
      url: (off) => this.attachURL(off),
      output: (_, bytes) => this.term.write(bytes),
      gap: (_, n) => this.term.write(gapMarker(n)),
      state: (s, d) => {
        this.attachState(s, d);
        if (s === "open") sendResize(); // another viewer may have left it at another size
      },
    });
    const enc = new TextEncoder();
    this.term.onData((data) => this.att.send(enc.encode(data)));
    // onBinary: mouse reports of some modes, one byte per character.
    this.term.onBinary((data) => this.att.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(sendResize);
    this.observer = new ResizeObserver(() => this.fit.fit());
    this.observer.observe(this.box);
    this.att.start();
    this.term.focus();
  }

  // attachURL checks that the process is still there and is the one this
  // page started (an agent restarted since numbers its processes anew),
  // and returns its attach socket's URL at the offsets. A process that is
  // gone, or a token the master refuses, is final.
  async attachURL(off) {
    const { rid, name } = this.mv;
    let info;
    try {
      info = await agentRPC(rid, name, "process.get", { id: this.id });
    } catch (e) {
      if (e instanceof RPCError && (e.code === -32001 || e.code === -32602)) throw finalError(`process ${this.id} is gone: ${e.message}`);
      if (e instanceof HTTPError && (e.status === 401 || e.status === 403)) throw finalError(e.message);
      throw e;
    }
    if (this.startedAt && info.startedAt !== this.startedAt) {
      throw finalError(`process ${this.id} is gone: the agent restarted (its process ${this.id} now started at ${info.startedAt})`);
    }
    const t = await ticket();
    return wsURL(agentBase(rid, name) + `/v1/processes/${encodeURIComponent(this.id)}/attach`, location.href,
      { stdout: off.stdout, stderr: off.stderr, ticket: t });
  }

  attachState(s, d) {
    clearInterval(this.countdown);
    this.countdown = null;
    const name = this.mv.name;
    switch (s) {
      case "connecting":
        if (d.attempt === 0) this.status(`process ${this.id}: connecting`, "connecting");
        else this.status(`reconnecting… (attempt ${d.attempt})`, "reconnecting");
        break;
      case "open":
        this.status(`process ${this.id} on ${name}`, "open");
        break;
      case "waiting": {
        const at = Date.now() + d.delay;
        const show = () => this.status(`reconnecting… (attempt ${d.attempt}, next in ${(Math.max(0, at - Date.now()) / 1000).toFixed(1)} s): ${d.why}`, "reconnecting");
        show();
        if (d.delay > 200) this.countdown = setInterval(show, 200);
        break;
      }
      case "exited":
        this.ended = true;
        forgetShell(this.mv.rid, name);
        this.status(`process ${this.id}: ${d.reason}`, "exited");
        this.term.write(`\r\n[${d.reason}]\r\n`);
        break;
      case "failed":
        this.ended = true;
        forgetShell(this.mv.rid, name);
        this.status(d.why, "failed");
        break;
    }
  }

  // close hangs the shell up (SIGHUP, as closing a terminal window does)
  // and removes the panel. Leaving the page does not: a reload reattaches.
  close() {
    this.closed = true;
    clearInterval(this.countdown);
    if (this.observer) this.observer.disconnect();
    forgetShell(this.mv.rid, this.mv.name);
    if (this.id != null && !this.ended) this.hangUp(this.id);
    if (this.att) this.att.stop();
    terminals.delete(this.mv.rid + "\n" + this.mv.name);
    this.term.dispose();
    this.el.remove();
    this.mv.term = null;
  }

  hangUp(id) {
    agentRPC(this.mv.rid, this.mv.name, "process.signal", { id, signal: "HUP" }).catch((e) => console.warn(e));
  }
}
