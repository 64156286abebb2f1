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
