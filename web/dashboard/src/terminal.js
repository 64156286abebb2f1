// A terminal panel on a machine: process.start (tty) through the master's
// agent proxy, then the stock AttachAddon on the raw attach socket
// (.../agent/v1/processes/ID/attach?mode=raw), and process.resize on fit.
import { Terminal } from "@xterm/xterm";
import { AttachAddon } from "@xterm/addon-attach";
import { FitAddon } from "@xterm/addon-fit";
import { RAW_SUBPROTOCOL } from "../../shared/agent.js";
import { resizeQueue } from "../../shared/resize.js";
import { disconnected, wsURL } from "../../shared/socket.js";
import { agentBase, agentRPC, ticket } from "./api.js";
import { h } from "./dom.js";

// terminals holds the open terminals by "rid\nname", for tests and the
// console (window.porthole).
export const terminals = new Map();

export class TerminalView {
  // mv is the MachineView the panel belongs to: rid, name, and term, which
  // close clears.
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
    const url = wsURL(agentBase(rid, name) + `/v1/processes/${encodeURIComponent(p.id)}/attach`, location.href, { mode: "raw", ticket: await ticket() });
    if (this.closed) {
      this.hangUp(p.id);
      return;
    }
    const ws = new WebSocket(url, [RAW_SUBPROTOCOL]);
    this.ws = ws;
    this.term.loadAddon(new AttachAddon(ws));
    // Resizes go out one at a time, and the last size wins.
    const resize = resizeQueue((size) => agentRPC(rid, name, "process.resize", { id: p.id, ...size }), () => this.ended);
    const sendResize = () => resize({ rows: this.term.rows, cols: this.term.cols });
    ws.addEventListener("open", () => {
      this.status(`process ${p.id} on ${name}`);
      sendResize(); // another viewer may have left it at another size
    });
    ws.addEventListener("close", (e) => {
      this.ended = true;
      const why = e.code === 1000 ? e.reason || "closed" : disconnected(e);
      this.status(`process ${p.id}: ${why}`);
      if (!this.closed) this.term.write(`\r\n[${why}]\r\n`);
    });
    this.term.onResize(sendResize);
    this.observer = new ResizeObserver(() => this.fit.fit());
    this.observer.observe(this.box);
    this.term.focus();
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
