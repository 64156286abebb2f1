// The master's HTTP API with the client token, and calls to a machine's
// agent through the master's proxy.
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from "../../shared/agent.js";
import { rpcRequest, rpcResult } from "../../shared/jsonrpc.js";
import { fragmentParam } from "../../shared/token.js";

const TOKEN_KEY = "porthole-master.token";

let token = "";

// takeToken moves a token from the fragment to sessionStorage and out of
// the address bar, and returns the token the page holds ("" for none).
export function takeToken() {
  const t = fragmentParam("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem(TOKEN_KEY) || "";
  return token;
}

// setToken uses and keeps a token typed into the login form.
export function setToken(t) {
  token = t;
  sessionStorage.setItem(TOKEN_KEY, t);
}

// HTTPError is a master's answer with an error status.
export class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// api calls the master with the client token; errors carry the master's
// {"error": ...} message.
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const res = await fetch(path, {
    method,
    body,
    cache: "no-store",
    headers: { Authorization: "Bearer " + token, ...headers },
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported below when the status is an error
  }
  if (!res.ok) {
    const msg = (data && typeof data.error === "string" ? data.error : text.trim()) || res.statusText;
    throw new HTTPError(res.status, `${method} ${path}: ${res.status} ${msg}`);
  }
  return data;
}

// ticket returns a short-lived ticket for a WebSocket URL (browsers cannot
// set headers on WebSockets, and the token never goes in a URL).
export async function ticket() {
  return (await api("/api/tickets", { method: "POST" })).ticket;
}

// agentBase is the path of a machine's agent behind the master's proxy.
export function agentBase(rid, name) {
  return `/api/runtimes/${encodeURIComponent(rid)}/machines/${encodeURIComponent(name)}/agent`;
}

// siteURL is the path of a machine's HTTP server on port through the
// master (path relative to the server's root).
export function siteURL(rid, name, port, path = "/") {
  const p = path.startsWith("/") ? path.slice(1) : path;
  return `/api/runtimes/${encodeURIComponent(rid)}/machines/${encodeURIComponent(name)}/ports/${port}/${p}`;
}

// agentRPC makes one JSON-RPC call to a machine's agent: POST /v1/rpc
// through the master's proxy.
let agentSeq = 0;
export async function agentRPC(rid, name, method, params) {
  const msg = await api(agentBase(rid, name) + "/v1/rpc", {
    method: "POST",
    headers: { "Content-Type": "application/json", [PROTOCOL_HEADER]: PROTOCOL_VERSION },
    body: rpcRequest(++agentSeq, method, params),
  });
  if (!msg) throw new Error(`${method}: empty answer`);
  return rpcResult(method, msg);
}

// fetchText GETs a master path with the client token and returns its body
// as text; an error status throws an HTTPError with the answer's message.
export async function fetchText(path) {
  const res = await fetch(path, { cache: "no-store", headers: { Authorization: "Bearer " + token } });
  const text = await res.text();
  if (!res.ok) {
    let msg = text.trim();
    try {
      const d = JSON.parse(text);
      if (d && typeof d.error === "string") msg = d.error;
    } catch {
      // not JSON
    }
    throw new HTTPError(res.status, `GET ${path}: ${res.status} ${msg || res.statusText}`);
  }
  return text;
}
