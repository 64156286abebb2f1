// The live subscription: one WebSocket to /api/rpc (JSON-RPC 2.0) with
// runtime.subscribe {runtimeId: "*"}. runtime.machine notifications carry a
// machine's whole state, runtime.entries its journal (log lines and events)
// in order. After a disconnect it reconnects with the shared backoff
// (shared/backoff.js, the Go programs' discipline) and resubscribes with
// after = the last seq shown per machine, so nothing is missed or shown
// twice.
import { Backoff } from "../../shared/backoff.js";
import { rpcRequest } from "../../shared/jsonrpc.js";
import { disconnected, wsURL } from "../../shared/socket.js";
import { ticket } from "./api.js";
import { machine, machines } from "./machine.js";

// REPLAY_MS: on first load, the journal entries of the last hour are shown.
const REPLAY_MS = 60 * 60 * 1000;
// Reconnection: the wait before an attempt is uniform in
// [0, min(BACKOFF_MAX, BACKOFF_FIRST·2^n)), n the connections since the
// last one that made progress: one that received a notification after
// subscribing, or lived BACKOFF_STABLE.
const BACKOFF_FIRST = 500;
const BACKOFF_MAX = 30000;
const BACKOFF_STABLE = 5000;

export class Live {
  // onState(state, text, retry) shows the connection's state:
  // "connecting", "live" or "error" (retry: {why, at}, when the next
  // attempt is due, for a countdown). onUnauthorized(reason) asks for a token: the master
  // refused this one, and Live stops until connect is called again.
  constructor({ onState, onUnauthorized }) {
    this.onState = onState;
    this.onUnauthorized = onUnauthorized;
    this.ws = null;
    this.nextId = 0;
    this.pending = new Map(); // request id → {resolve, reject}
    this.backoff = new Backoff({ first: BACKOFF_FIRST, max: BACKOFF_MAX, stable: BACKOFF_STABLE });
    this.subscribed = false; // runtime.subscribe succeeded on this.ws
    this.timer = null;
    this.since = new Date(Date.now() - REPLAY_MS).toISOString();
  }

  async connect() {
    clearTimeout(this.timer);
    this.onState("connecting", "connecting…");
    let t;
    try {
      t = await ticket();
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        this.onUnauthorized(e.message);
        this.onState("error", "not signed in");
        return;
      }
      this.retry(e.message);
      return;
    }
    const ws = new WebSocket(wsURL("/api/rpc", location.href, { ticket: t }));
    this.ws = ws;
    this.subscribed = false;
    ws.addEventListener("open", () => {
      this.backoff.connected();
      this.subscribe(ws);
    });
    ws.addEventListener("message", (ev) => this.receive(ev.data));
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.subscribed = false;
      for (const p of this.pending.values()) p.reject(new Error("socket closed"));
      this.pending.clear();
      this.retry(disconnected(ev));
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
    for (const mv of machines()) {
      if (mv.lastSeq === 0) continue;
      after[mv.name] = mv.name in after ? Math.min(after[mv.name], mv.lastSeq) : mv.lastSeq;
    }
    if (Object.keys(after).length) params.after = after;
    try {
      await this.call(ws, "runtime.subscribe", params);
      if (this.ws !== ws) return;
      this.subscribed = true;
      this.onState("live", "live");
    } catch (e) {
      this.onState("error", "runtime.subscribe: " + e.message);
      ws.close();
    }
  }

  call(ws, method, params) {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(rpcRequest(id, method, params));
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
      if (this.subscribed && (m.method === "runtime.machine" || m.method === "runtime.entries")) this.backoff.progress();
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
    const delay = this.backoff.next();
    this.onState("error", `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`, { why, at: Date.now() + delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
