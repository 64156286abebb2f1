// A terminal panel on a machine: a shell (process.start, tty) through the
// master's agent proxy, viewed on a framed attach socket
// (.../agent/v1/processes/ID/attach, porthole.attach.v1) that survives
// dropped sockets and master restarts (shared/attach.js: it reattaches at
// the exact offset with the shared backoff), and process.resize on fit.
// A machine has several (machine.js shows them as tabs). The process ids
// are kept in sessionStorage per machine, so a reload reattaches to the
// same shells; only Close hangs one up (Detach leaves it running, listed
// in the machine's processes). Pop out moves a terminal into a browser
// tab of its own (popout.js: #/m/RID/MACHINE/p/ID, which a reload
// reattaches). Copy and paste: the selection is copied with Ctrl+Shift+C
// or Copy, pasted with Ctrl+Shift+V (the browser's paste) or Paste; a
// program writes the clipboard with OSC 52 (the clipboard addon), but
// never reads it. Links open only when http(s) (links.js).
import { Terminal } from "@xterm/xterm";
import { ClipboardAddon } from "@xterm/addon-clipboard";
import { FitAddon } from "@xterm/addon-fit";
import { WebLinksAddon } from "@xterm/addon-web-links";
import { gapMarker } from "../../shared/agent.js";
import { Attachment } from "../../shared/attach.js";
import { RPCError } from "../../shared/jsonrpc.js";
import { resizeQueue } from "../../shared/resize.js";
import { wsURL } from "../../shared/socket.js";
import { HTTPError, agentBase, agentRPC, ticket } from "./api.js";
import { h } from "./dom.js";
import { openLink } from "./links.js";

// The shells a page opened or attached to on a machine, kept across
// reloads of the tab: a JSON list of {id, startedAt} under SESSION_KEY +
// rid + "\n" + name (a single object, as earlier pages kept, is read as a
// list of one).
const SESSION_KEY = "porthole-dashboard.terminal\n";

// savedShells returns the shells this tab opened on the machine and did
// not close.
export function savedShells(rid, name) {
  try {
    let s = JSON.parse(sessionStorage.getItem(SESSION_KEY + rid + "\n" + name) || "[]");
    if (!Array.isArray(s)) s = [s];
    return s.filter((x) => x && typeof x.id === "string");
  } catch {
    return [];
  }
}

function saveShell(rid, name, s) {
  const list = savedShells(rid, name).filter((x) => x.id !== s.id);
  list.push(s);
  sessionStorage.setItem(SESSION_KEY + rid + "\n" + name, JSON.stringify(list));
}

function forgetShell(rid, name, id) {
  const list = savedShells(rid, name).filter((x) => x.id !== id);
  if (list.length) sessionStorage.setItem(SESSION_KEY + rid + "\n" + name, JSON.stringify(list));
  else sessionStorage.removeItem(SESSION_KEY + rid + "\n" + name);
}

// popoutURL is the address of a process's terminal in a tab of its own.
export function popoutURL(rid, name, id) {
  return `${location.pathname}#/m/${encodeURIComponent(rid)}/${encodeURIComponent(name)}/p/${encodeURIComponent(id)}`;
}

// clipboard is the clipboard addon's provider: OSC 52 may write the
// system clipboard; a read (OSC 52 "?") gets nothing, so a program on
// the machine cannot take what the user copied elsewhere.
const clipboard = {
  readText: () => "",
  writeText: (selection, text) => (selection === "c" ? navigator.clipboard.writeText(text) : undefined),
};

// finalError marks an error that retrying will not fix.
function finalError(message) {
  const e = new Error(message);
  e.final = true;
  return e;
}

export class TerminalView {
  // mv is the MachineView the panel belongs to: rid, name, and
  // removeTerminal, which close calls.
  constructor(mv) {
    this.mv = mv;
    this.id = null;
    this.startedAt = null;
    this.tty = true; // a pipe process has no size to set
    this.att = null; // the Attachment
    this.closed = false; // the panel was closed
    this.ended = false; // the process exited, or cannot be attached to
    this.countdown = null; // the interval that updates "next in x s"
    this.statusEl = h("span", { class: "terminal-status", dataset: { state: "starting" } }, "starting…");
    this.box = h("div", { class: "terminal" });
    this.el = h("div", { class: "terminal-panel" },
      h("div", { class: "terminal-bar" }, this.statusEl,
        this.newButton = h("button", { class: "new-shell", hidden: true, onclick: () => this.mv.newShell(this) }, "New shell"),
        h("button", { type: "button", class: "copy-terminal", title: "copy the selection (Ctrl+Shift+C)", onclick: () => this.copy() }, "Copy"),
        h("button", { type: "button", class: "paste-terminal", title: "paste the clipboard (Ctrl+Shift+V)", onclick: () => this.paste() }, "Paste"),
        this.popButton = h("button", { type: "button", class: "popout-terminal", title: "move this terminal into a browser tab of its own", hidden: !!mv.isPopout, onclick: () => this.popOut() }, "Pop out"),
        h("button", { class: "detach-terminal", title: "close this tab, leave the process running", onclick: () => this.close(false) }, "Detach"),
        h("button", { class: "close-terminal", title: "hang up the process (SIGHUP) and close this tab", onclick: () => this.close() }, "Close")),
      this.box);
    this.term = new Terminal({ cursorBlink: true, scrollback: 10000, fontSize: 13 });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.loadAddon(new ClipboardAddon(undefined, clipboard));
    this.term.loadAddon(new WebLinksAddon((_, uri) => openLink(uri)));
    // OSC 8 hyperlinks: their URI is the program's, any scheme.
    this.term.options.linkHandler = { activate: (_, uri) => openLink(uri), allowNonHttpProtocols: false };
    this.term.attachCustomKeyEventHandler((ev) => {
      if (ev.type !== "keydown" || !ev.ctrlKey || !ev.shiftKey || ev.altKey || ev.metaKey) return true;
      if (ev.code === "KeyC") {
        ev.preventDefault();
        this.copy();
        return false;
      }
      // Ctrl+Shift+V: the browser's paste event, which xterm.js takes.
      return ev.code !== "KeyV";
    });
  }

  // copy puts the terminal's selection on the clipboard.
  copy() {
    const sel = this.term.getSelection();
    if (sel) navigator.clipboard.writeText(sel).catch((e) => console.warn("copy:", e));
    this.term.focus();
  }

  // paste types the clipboard into the terminal (bracketed, when the
  // program asked for it).
  async paste() {
    try {
      const text = await navigator.clipboard.readText();
      if (text && !this.ended) this.term.paste(text);
    } catch (e) {
      this.status(`paste: ${e.message} (the page may not read the clipboard: use Ctrl+Shift+V)`);
    }
    this.term.focus();
  }

  // popOut opens the terminal in a tab of its own, then leaves it there
  // (Detach: the process goes on).
  popOut() {
    if (this.id == null || this.ended) return;
    // Not noopener: the new tab starts with a copy of this tab's
    // sessionStorage, which holds the token.
    const w = window.open(popoutURL(this.mv.rid, this.mv.name, this.id), "_blank");
    if (!w) {
      this.status("the browser blocked the new tab: allow pop-ups for this page");
      return;
    }
    this.close(false);
  }

  // status shows text in the panel's bar (never in the terminal's
  // output); state is data-state, for the page's style and tests.
  status(text, state = this.statusEl.dataset.state) {
    this.statusEl.textContent = text;
    this.statusEl.dataset.state = state;
    this.mv.tabState(this);
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
    if (saved) {
      this.id = saved.id;
      this.startedAt = saved.startedAt || null;
      this.tty = saved.tty !== false;
      if (!this.tty) this.term.options.convertEol = true; // a pipe's "\n"
      saveShell(rid, name, { id: this.id, startedAt: this.startedAt });
      this.mv.tabState(this);
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
      this.mv.tabState(this);
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
        if (s === "open" && this.tty) sendResize(); // another viewer may have left it at another size
      },
    });
    const enc = new TextEncoder();
    this.term.onData((data) => this.att.send(enc.encode(data)));
    // onBinary: mouse reports of some modes, one byte per character.
    this.term.onBinary((data) => this.att.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    if (this.tty) this.term.onResize(sendResize);
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
        forgetShell(this.mv.rid, name, this.id);
        this.newButton.hidden = false;
        this.status(`process ${this.id}: ${d.reason}`, "exited");
        this.term.write(`\r\n[${d.reason}]\r\n`);
        break;
      case "failed":
        this.ended = true;
        forgetShell(this.mv.rid, name, this.id);
        this.newButton.hidden = false;
        this.status(d.why, "failed");
        break;
    }
  }

  // close hangs the shell up (SIGHUP, as closing a terminal window does)
  // unless hangUp is false (Detach: the process goes on, listed in the
  // machine's processes), and removes the panel. Leaving the page does
  // not: a reload reattaches.
  close(hangUp = true) {
    this.closed = true;
    clearInterval(this.countdown);
    if (this.observer) this.observer.disconnect();
    if (this.id != null) forgetShell(this.mv.rid, this.mv.name, this.id);
    if (hangUp && this.id != null && !this.ended) this.hangUp(this.id);
    if (this.att) this.att.stop();
    this.term.dispose();
    this.el.remove();
    this.mv.removeTerminal(this);
  }

  hangUp(id) {
    agentRPC(this.mv.rid, this.mv.name, "process.signal", { id, signal: "HUP" }).catch((e) => console.warn(e));
  }
}
