// The porthole browser terminal: xterm.js on a raw attach socket
// (porthole.raw.v1) with the stock AttachAddon, and POST /v1/rpc for
// process.start and process.resize. See docs/browser.md.
//
// URL: /[?id=N][&agent=URL]#token=TOKEN
//   #token  the agent's token; in the fragment, which is never sent to a
//           server (without it the page asks for it)
//   ?id     attach to that process instead of starting a shell
//   ?agent  the agent's base URL when it is not this page's origin (the
//           agent then needs -allow-origin for this page's origin)
import { Terminal } from "@xterm/xterm";
import { AttachAddon } from "@xterm/addon-attach";
import { FitAddon } from "@xterm/addon-fit";

const statusEl = document.getElementById("status");
function status(text) {
  statusEl.textContent = text;
  document.title = "porthole: " + text;
}

const query = new URLSearchParams(location.search);
const agent = new URL(query.get("agent") || location.origin);
const token = fragmentParam("token") || window.prompt("porthole agent token") || "";

// fragmentParam reads name=value from the fragment. Unlike URLSearchParams,
// it keeps "+" as it is: tokens are often base64.
function fragmentParam(name) {
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

// base64url without padding of the token's UTF-8 bytes (docs/protocol.md §4.1).
function b64url(s) {
  const bin = String.fromCharCode(...new TextEncoder().encode(s));
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

let rpcSeq = 0;
async function rpc(method, params) {
  let res;
  try {
    res = await fetch(new URL("/v1/rpc", agent), {
      method: "POST",
      headers: {
        "Authorization": "Bearer " + token,
        "Content-Type": "application/json",
        "Porthole-Protocol": "1.0",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcSeq, method, params }),
    });
  } catch (e) {
    // The browser hides why; from another origin, it is often -allow-origin.
    const hint = agent.origin === location.origin ? "" : ` (is ${location.origin} in the agent's -allow-origin?)`;
    throw new Error(`${method}: cannot reach the agent at ${agent.origin}: ${e.message}${hint}`);
  }
  const body = await res.text();
  let msg;
  try {
    msg = JSON.parse(body);
  } catch {
    throw new Error(`${method}: HTTP ${res.status}: ${body.trim()}`);
  }
  if (msg.error) throw new Error(`${method}: ${msg.error.message}`);
  return msg.result;
}

const term = new Terminal({ cursorBlink: true, scrollback: 10000 });
const fit = new FitAddon();
term.loadAddon(fit);
const el = document.getElementById("terminal");
term.open(el);
fit.fit();
window.term = term; // for tests and the console

let id = query.get("id");
let closed = false;

// Resizes go out one at a time, and the last size wins.
let pendingSize = null;
let resizing = false;
async function sendResize() {
  pendingSize = { rows: term.rows, cols: term.cols };
  if (resizing) return;
  resizing = true;
  while (pendingSize && !closed) {
    const size = pendingSize;
    pendingSize = null;
    try {
      await rpc("process.resize", { id, ...size });
    } catch (e) {
      console.warn(e);
    }
  }
  resizing = false;
}

async function main() {
  if (!token) {
    status("no token: open this page as " + location.pathname + "#token=TOKEN");
    return;
  }
  if (id) {
    await rpc("process.get", { id }); // a clear error for a wrong token or id
  } else {
    // Start at the size the fit addon chose, so the shell never sees 24x80.
    const p = await rpc("process.start", { tty: true, size: { rows: term.rows, cols: term.cols } });
    id = p.id;
    query.set("id", id);
    history.replaceState(null, "", "?" + query + location.hash); // reload = reattach
  }
  window.processId = id;
  status(`process ${id}: connecting`);

  const url = new URL(`/v1/processes/${encodeURIComponent(id)}/attach`, agent);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, ["porthole.raw.v1", "porthole.token." + b64url(token)]);
  term.loadAddon(new AttachAddon(ws));
  ws.addEventListener("open", () => {
    status(`process ${id}`);
    sendResize(); // another viewer may have left it at another size
  });
  ws.addEventListener("close", (e) => {
    closed = true;
    const why = e.code === 1000 ? e.reason : `disconnected (code ${e.code}${e.reason ? ": " + e.reason : ""})`;
    status(`process ${id}: ${why}`);
  });
  term.onResize(sendResize);
  new ResizeObserver(() => fit.fit()).observe(el);
  term.focus();
}

main().catch((e) => status(String(e.message || e)));
