// WebSocket helpers for both pages.

// wsURL is path resolved against base with a ws: or wss: scheme (wss: for
// an https: base), with query's entries as parameters.
export function wsURL(path, base, query = {}) {
  const u = new URL(path, base);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  return u;
}

// disconnected says why a socket closed, from its close event.
export function disconnected(ev) {
  return `disconnected (code ${ev.code}${ev.reason ? ": " + ev.reason : ""})`;
}
