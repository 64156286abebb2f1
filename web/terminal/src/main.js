// The porthole browser terminal: xterm.js on a raw attach socket
// (porthole.raw.v1) with the stock AttachAddon, and POST /v1/rpc for
// process.start and process.resize. See docs/browser.md.
//
// URL: /[?id=N]#token=TOKEN
//   #token  the agent's token; in the fragment, which is never sent to a
//           server (without it the page asks for it)
//   ?id     attach to that process instead of starting a shell
//
// The page talks to one agent only: its own origin, or the one its
// index.html names in <meta name="porthole-agent" content="URL"> (a page
// deployed for an agent on another origin, which then needs -allow-origin
// for the page's). A ?agent= naming any other origin is refused before
// anything is sent: a link must not be able to send the token elsewhere.
import { Terminal } from "@xterm/xterm";
import { AttachAddon } from "@xterm/addon-attach";
import { FitAddon } from "@xterm/addon-fit";
import { PROTOCOL_HEADER, PROTOCOL_VERSION, RAW_SUBPROTOCOL, tokenSubprotocol } from "../../shared/agent.js";
import { rpcRequest, rpcResult } from "../../shared/jsonrpc.js";
import { resizeQueue } from "../../shared/resize.js";
import { disconnected, wsURL } from "../../shared/socket.js";
import { fragmentParam } from "../../shared/token.js";

const statusEl = document.getElementById("status");
function status(text) {
  statusEl.textContent = text;
  document.title = "porthole: " + text;
}

const query = new URLSearchParams(location.search);
const agent = agentURL();
const token = agent ? fragmentParam("token") || window.prompt("porthole agent token") || "" : "";

// agentURL is the agent this page was deployed for (its own origin, or the
// porthole-agent meta tag's), or null when ?agent= names another: then
// the page says so and sends nothing.
function agentURL() {
  const meta = document.querySelector('meta[name="porthole-agent"]');
  let own;
  try {
    own = new URL(meta && meta.content ? meta.content : location.origin);
  } catch {
    status(`the page's porthole-agent meta tag is not a URL: ${meta.content}`);
    return null;
  }
  const asked = query.get("agent");
  if (asked !== null) {
    let origin = "";
    try {
      origin = new URL(asked).origin;
    } catch {}
    if (origin !== own.origin) {
      status(`refusing ?agent=${asked}: this page talks only to ${own.origin}`);
      return null;
    }
  }
  return own;
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
        [PROTOCOL_HEADER]: PROTOCOL_VERSION,
      },
      body: rpcRequest(++rpcSeq, method, params),
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
  return rpcResult(method, msg);
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
const resize = resizeQueue((size) => rpc("process.resize", { id, ...size }), () => closed);
function sendResize() {
  resize({ rows: term.rows, cols: term.cols });
}

async function main() {
  if (!agent) {
    return; // refused, and said why
  }
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

  const url = wsURL(`/v1/processes/${encodeURIComponent(id)}/attach`, agent);
  const ws = new WebSocket(url, [RAW_SUBPROTOCOL, tokenSubprotocol(token)]);
  term.loadAddon(new AttachAddon(ws));
  ws.addEventListener("open", () => {
    status(`process ${id}`);
    sendResize(); // another viewer may have left it at another size
  });
  ws.addEventListener("close", (e) => {
    closed = true;
    const why = e.code === 1000 ? e.reason : disconnected(e);
    status(`process ${id}: ${why}`);
  });
  term.onResize(sendResize);
  new ResizeObserver(() => fit.fit()).observe(el);
  term.focus();
}

main().catch((e) => status(String(e.message || e)));
