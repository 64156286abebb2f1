// A recording player: a terminal session recorded by its agent (-record,
// asciicast v2: docs/operations.md "Session recording"), fetched through
// the master's proxy (…/agent/v1/processes/ID/recording) and played in an
// xterm.js terminal: "o" events written with their timing, "r" resizes
// applied, "m" markers shown in the bar. Pauses longer than MAX_IDLE_S
// are shortened to it. Play/pause, speed, restart.
import { Terminal } from "@xterm/xterm";
import { agentBase, fetchText } from "./api.js";
import { parseCast } from "./cast.js";
import { h } from "./dom.js";

const SPEEDS = [0.5, 1, 2, 4, 16];

export class Player {
  // mv: the MachineView (rid, name, player); p: the process's ProcessInfo.
  constructor(mv, p) {
    this.mv = mv;
    this.p = p;
    this.events = [];
    this.i = 0; // the next event
    this.pos = 0; // the time played (s)
    this.speed = 1;
    this.timer = null;
    this.playing = false;
    this.statusEl = h("span", { class: "player-status", dataset: { state: "loading" } }, `process ${p.id}: loading its recording…`);
    this.playButton = h("button", { class: "player-play", disabled: true, onclick: () => (this.playing ? this.pause() : this.play()) }, "Play");
    this.speedEl = h("select", { class: "player-speed", title: "speed", onchange: () => this.setSpeed(Number(this.speedEl.value)) },
      ...SPEEDS.map((s) => h("option", { value: s, selected: s === 1 }, `${s}×`)));
    this.box = h("div", { class: "player-term" });
    this.el = h("div", { class: "player" },
      h("div", { class: "terminal-bar" }, h("strong", {}, "Replay"), this.statusEl, this.playButton, this.speedEl,
        h("button", { class: "player-restart", onclick: () => this.restart() }, "Restart"),
        h("button", { class: "player-close", onclick: () => this.close() }, "Close")),
      this.box);
    this.term = new Terminal({ fontSize: 13, scrollback: 10000, disableStdin: true, cursorBlink: false });
  }

  status(text, state) {
    this.statusEl.textContent = text;
    if (state) this.statusEl.dataset.state = state;
  }

  async load() {
    const { rid, name } = this.mv;
    let text;
    try {
      text = await fetchText(agentBase(rid, name) + `/v1/processes/${encodeURIComponent(this.p.id)}/recording`);
      const cast = parseCast(text);
      this.header = cast.header;
      this.events = cast.events;
    } catch (e) {
      this.status(String(e.message || e), "failed");
      return;
    }
    this.term.open(this.box);
    this.term.resize(Math.max(2, this.header.width || 80), Math.max(2, this.header.height || 24));
    this.duration = this.events.length ? this.events[this.events.length - 1][0] : 0;
    this.playButton.disabled = false;
    this.play();
  }

  play() {
    if (this.i >= this.events.length) this.restart();
    this.playing = true;
    this.playButton.textContent = "Pause";
    this.last = performance.now();
    this.tick();
  }

  pause() {
    this.playing = false;
    clearTimeout(this.timer);
    this.playButton.textContent = "Play";
    this.status(`paused at ${this.pos.toFixed(1)} / ${this.duration.toFixed(1)} s`, "paused");
  }

  setSpeed(s) {
    if (!(s > 0)) return;
    this.speed = s;
    if (this.playing) {
      clearTimeout(this.timer);
      this.tick();
    }
  }

  restart() {
    clearTimeout(this.timer);
    this.term.reset();
    if (this.header) this.term.resize(Math.max(2, this.header.width || 80), Math.max(2, this.header.height || 24));
    this.i = 0;
    this.pos = 0;
    if (this.playing) {
      this.last = performance.now();
      this.tick();
    }
  }

  // tick writes the events due by now, and waits for the next one.
  tick() {
    if (!this.playing) return;
    const now = performance.now();
    this.pos += ((now - this.last) / 1000) * this.speed;
    this.last = now;
    while (this.i < this.events.length && this.events[this.i][0] <= this.pos) this.apply(this.events[this.i++]);
    if (this.i >= this.events.length) {
      this.playing = false;
      this.pos = this.duration;
      this.playButton.textContent = "Play";
      this.status(`process ${this.p.id}: ended (${this.duration.toFixed(1)} s, ${this.events.length} events)`, "ended");
      return;
    }
    this.status(`playing ${this.pos.toFixed(1)} / ${this.duration.toFixed(1)} s`, "playing");
    const wait = ((this.events[this.i][0] - this.pos) * 1000) / this.speed;
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.min(wait, 250)));
  }

  apply([, code, data]) {
    if (code === "o") this.term.write(data);
    else if (code === "r") {
      const m = /^(\d+)x(\d+)$/.exec(data);
      if (m) this.term.resize(Math.max(2, Number(m[1])), Math.max(2, Number(m[2])));
    } else if (code === "m") this.term.write(`\r\n\x1b[33m[porthole: ${data}]\x1b[0m\r\n`);
  }

  close() {
    this.playing = false;
    clearTimeout(this.timer);
    this.term.dispose();
    this.el.remove();
    if (this.mv.player === this) this.mv.player = null;
  }
}
