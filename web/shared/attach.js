// A view of one process that survives dropped sockets: a framed attach
// socket (docs/protocol.md §7.3) that, when it closes before the process's
// exit was received, reconnects with the shared backoff and reattaches at
// the offset of the next byte of each stream (§7.4), so that no byte is
// lost or shown twice. Framed mode rather than raw: every output frame
// names its offset and a gap is a notification, where a raw socket writes
// a marker line among the output bytes, which no byte count can tell from
// output.
import { ATTACH_SUBPROTOCOL, parseOutputFrame, stdinFrames } from "./agent.js";
import { Backoff } from "./backoff.js";
import { disconnected } from "./socket.js";

export class Attachment {
  // url(offsets) returns the attach socket's URL for {stdout, stderr}, the
  // next byte of each stream (async: it may fetch a ticket and check the
  // process). An error it throws fails the attempt, which is retried,
  // unless the error has final = true: then the attachment ends.
  //
  // The callbacks:
  //   output(stream, bytes)  bytes of "stdout" or "stderr", in order
  //   gap(stream, n)         n bytes of the stream were lost (§12)
  //   state(s, detail)       "connecting" {attempt}, "open",
  //                          "waiting" {attempt, delay, why} (the next
  //                          attempt in delay ms), "exited" {info,
  //                          reason}, "failed" {why}
  //
  // offsets: where to start ({stdout: 0, stderr: 0}: the first byte the
  // agent still holds).
  constructor({ url, output, gap = () => {}, state = () => {}, offsets, backoff }) {
    this.url = url;
    this.output = output;
    this.gap = gap;
    this.state = state;
    this.offsets = { stdout: 0, stderr: 0, ...offsets };
    this.backoff = backoff || new Backoff();
    this.ws = null;
    this.timer = null;
    this.exited = null; // the process.exited ProcessInfo
    this.done = false; // exited, failed or stopped: no more attempts
  }

  start() {
    this.attempt();
  }

  // open says whether input can be sent now.
  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  // send writes bytes (a Uint8Array) to the process's stdin, if the socket
  // is open; it returns whether it did. Input typed while reconnecting is
  // not queued: the user sees it was not echoed.
  send(bytes) {
    if (!this.open) return false;
    for (const f of stdinFrames(bytes)) this.ws.send(f);
    return true;
  }

  // stop ends the attachment: the socket is closed and not reopened. The
  // process goes on.
  stop() {
    this.done = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  }

  async attempt() {
    if (this.done) return;
    this.state("connecting", { attempt: this.backoff.failures });
    let u;
    try {
      u = await this.url({ ...this.offsets });
    } catch (e) {
      if (this.done) return;
      if (e && e.final) {
        this.fail(String(e.message || e));
        return;
      }
      this.retry(String((e && e.message) || e));
      return;
    }
    if (this.done) return;
    const ws = new WebSocket(u, [ATTACH_SUBPROTOCOL]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      opened = true;
      this.backoff.connected();
      this.state("open", {});
    });
    ws.addEventListener("message", (ev) => {
      if (this.ws !== ws) return;
      try {
        if (typeof ev.data === "string") this.notification(JSON.parse(ev.data));
        else this.frame(ev.data);
      } catch (e) {
        // A frame that breaks the protocol: the offsets can no longer be
        // trusted on this socket; a new one starts from the last good
        // byte.
        console.warn("attach socket:", e);
        this.ws = null;
        ws.close(4000);
        this.retry("protocol error: " + e.message);
      }
    });
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.exited) {
        this.done = true;
        this.state("exited", { info: this.exited, reason: ev.code === 1000 && ev.reason ? ev.reason : exitReason(this.exited) });
        return;
      }
      this.retry(opened ? disconnected(ev) : `cannot attach: ${disconnected(ev)}`);
    });
  }

  // frame takes an output frame: bytes already shown (an overlap) are
  // skipped, a jump past the expected offset is shown as a gap.
  frame(data) {
    const { stream, offset, payload } = parseOutputFrame(data);
    const want = this.offsets[stream];
    let bytes = payload;
    if (offset > want) this.gap(stream, offset - want);
    else if (offset < want) bytes = payload.subarray(Math.min(payload.length, want - offset));
    this.offsets[stream] = Math.max(want, offset + payload.length);
    if (bytes.length) {
      this.backoff.progress();
      this.output(stream, bytes);
    }
  }

  notification(msg) {
    const p = msg.params || {};
    switch (msg.method) {
      case "process.gap":
        if (p.to > this.offsets[p.stream]) {
          this.gap(p.stream, p.to - Math.max(p.from, this.offsets[p.stream]));
          this.offsets[p.stream] = p.to;
        }
        break;
      case "process.eof":
        this.offsets[p.stream] = Math.max(this.offsets[p.stream], p.offset);
        break;
      case "process.exited":
        this.exited = p;
        break;
      // process.started, and answers to requests (none are sent): nothing
      // to do.
    }
  }

  retry(why) {
    if (this.done) return;
    const delay = this.backoff.next();
    this.state("waiting", { attempt: this.backoff.failures, delay, why });
    this.timer = setTimeout(() => this.attempt(), delay);
  }

  fail(why) {
    this.done = true;
    this.state("failed", { why });
  }
}

// exitReason describes an exit as the agent's close reason does.
export function exitReason(info) {
  if (info.signal) return `killed by signal ${info.signal}`;
  return `exit code ${info.exitCode ?? "?"}`;
}
