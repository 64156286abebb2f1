// The agent's wire, as the pages speak it (docs/protocol.md).
import { base64url } from "./token.js";

// PROTOCOL_VERSION is the agent protocol these pages speak, sent in the
// PROTOCOL_HEADER of every POST /v1/rpc (docs/protocol.md §2).
export const PROTOCOL_VERSION = "1.0";
export const PROTOCOL_HEADER = "Porthole-Protocol";

// RAW_SUBPROTOCOL selects the raw attach mode, the bytes the stock
// AttachAddon expects (docs/protocol.md §7.5).
export const RAW_SUBPROTOCOL = "porthole.raw.v1";

// tokenSubprotocol carries a token to a WebSocket handshake, where a
// browser cannot set headers; the agent never selects it.
export function tokenSubprotocol(token) {
  return "porthole.token." + base64url(token);
}

// ATTACH_SUBPROTOCOL selects the framed attach mode (docs/protocol.md
// §7.3): output frames carry their stream and offset, and gaps, the end
// of each stream and the exit are notifications, so a client knows the
// exact offset to reattach at (§7.4).
export const ATTACH_SUBPROTOCOL = "porthole.attach.v1";

// STDOUT and STDERR are the stream bytes of output frames.
export const STDOUT = 1;
export const STDERR = 2;
const STREAMS = { [STDOUT]: "stdout", [STDERR]: "stderr" };
const OUTPUT_HEADER = 9;

// parseOutputFrame splits a framed attach socket's binary message
// (an ArrayBuffer or a Uint8Array) into {stream: "stdout"|"stderr",
// offset, payload: Uint8Array}, as protocol.ParseOutputFrame does; it
// throws for a frame shorter than its header, another stream byte or an
// offset above 2^62.
export function parseOutputFrame(buf) {
  const b = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (b.length < OUTPUT_HEADER) throw new Error(`output frame of ${b.length} bytes is shorter than its ${OUTPUT_HEADER}-byte header`);
  const stream = STREAMS[b[0]];
  if (!stream) throw new Error(`output frame names stream ${b[0]}; want 1 (stdout) or 2 (stderr)`);
  const off = new DataView(b.buffer, b.byteOffset, b.length).getBigUint64(1);
  if (off > 2n ** 62n) throw new Error(`output frame offset ${off} out of range`);
  return { stream, offset: Number(off), payload: b.subarray(OUTPUT_HEADER) };
}

// MAX_STDIN_FRAME bounds the stdin bytes of one frame, far below the
// agent's message limit (1 MiB by default, §18), so that a large paste
// does not close the socket with 1009.
export const MAX_STDIN_FRAME = 32 * 1024;

// stdinFrames returns the binary messages that carry bytes (a
// Uint8Array) to the process's stdin on a framed socket: the stream
// byte 0 then at most MAX_STDIN_FRAME bytes each.
export function stdinFrames(bytes) {
  const out = [];
  for (let i = 0; i < bytes.length; i += MAX_STDIN_FRAME) {
    const chunk = bytes.subarray(i, i + MAX_STDIN_FRAME);
    const f = new Uint8Array(chunk.length + 1);
    f.set(chunk, 1);
    out.push(f);
  }
  return out;
}

// gapMarker is the line a terminal shows where bytes were lost, the same
// as the agent writes on a raw socket (§7.5).
export function gapMarker(n) {
  return `\r\n[porthole: ${n} bytes of output were lost]\r\n`;
}
