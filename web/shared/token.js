// The token as both pages take it: from the URL fragment, which is never
// sent to a server, and as base64url for a WebSocket subprotocol.

// fragmentParam reads name=value from the fragment. Unlike URLSearchParams,
// it keeps "+" as it is: tokens are often base64.
export function fragmentParam(name) {
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

// base64url is s's UTF-8 bytes in base64url without padding
// (docs/protocol.md §4.1).
export function base64url(s) {
  const bin = String.fromCharCode(...new TextEncoder().encode(s));
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
