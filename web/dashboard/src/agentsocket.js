// A control socket to a machine's agent through the master's proxy
// (…/agent/v1/rpc, porthole.rpc.v1, docs/protocol.md §5), for the
// process list's polling: one socket, so the master's audit trail records
// it once ("rpc") rather than every poll. It is opened on the first call
// (with a fresh ticket) and again on a call after it closed; calls that
// were waiting when it closed fail.
import { rpcRequest, rpcResult } from "../../shared/jsonrpc.js";
import { disconnected, wsURL } from "../../shared/socket.js";
import { agentBase, ticket } from "./api.js";

export const RPC_SUBPROTOCOL = "porthole.rpc.v1";

export class AgentSocket {
  constructor(rid, name) {
    this.rid = rid;
    this.name = name;
    this.ws = null;
    this.opening = null; // the promise of the socket being opened
    this.nextId = 0;
    this.pending = new Map(); // id → {method, resolve, reject}
  }

  async call(method, params) {
    const ws = await this.socket();
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { method, resolve, reject });
      ws.send(rpcRequest(id, method, params));
    });
  }

  socket() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
    if (!this.opening) {
      this.opening = this.open().finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  async open() {
    const t = await ticket();
    const ws = new WebSocket(wsURL(agentBase(this.rid, this.name) + "/v1/rpc", location.href, { ticket: t }), [RPC_SUBPROTOCOL]);
    await new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener("close", (ev) => reject(new Error(`control socket: cannot connect: ${disconnected(ev)}`)), { once: true });
    });
    this.ws = ws;
    ws.addEventListener("message", (ev) => this.receive(ev.data));
    ws.addEventListener("close", (ev) => {
      if (this.ws === ws) this.ws = null;
      for (const p of this.pending.values()) p.reject(new Error(`control socket: ${disconnected(ev)}`));
      this.pending.clear();
    });
    return ws;
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.id == null || !this.pending.has(msg.id)) return; // agent.hello, notifications
    const p = this.pending.get(msg.id);
    this.pending.delete(msg.id);
    try {
      p.resolve(rpcResult(p.method, msg));
    } catch (e) {
      p.reject(e);
    }
  }

  close() {
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
