// porthole-master's dashboard: every runtime's machines, their installers,
// servers and installer logs, live, and a terminal per machine whose agent
// is connected. See docs/master.md.
//
// URL: /#token=TOKEN, or /#/m/RUNTIME/MACHINE/p/ID for one process's
// terminal in a tab of its own (popout.js)
//   #token  a client token (porthole-master token -data DIR -client). It is
//           in the fragment, which is never sent to a server; the page
//           moves it to sessionStorage and out of the address bar. Without
//           it the page asks for it.
//
// The modules:
//   api.js       the master's HTTP API with the token; agent calls through
//                the master's proxy
//   live.js      the runtime.subscribe socket: reconnects, resumes by seq
//   machine.js   runtimes and machine cards: statuses and installer logs
//   logs.js      a machine's installer logs (logtext.js: lines, filter,
//                downloads)
//   ports.js     a machine's servers and listening ports, each opened
//                through the master (a ticket, then a site key)
//   terminal.js  a machine's xterm.js terminals (tabs); links.js: which
//                links open
//   popout.js    a terminal in a tab of its own
//   processes.js a machine's process list (process.list on a control
//                socket: agentsocket.js), Attach, Kill, Remove, Replay
//   player.js    a recorded session played in xterm.js
//   audit.js     the Audit view (GET /api/audit)
//   dom.js       h(), which builds the DOM
// and ../../shared (also used by web/terminal): the token from the
// fragment, base64url, the agent protocol, the resize queue.
//
// Every text from the server goes into the DOM as text (textContent,
// append of strings): never as HTML.
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { api, setToken, takeToken } from "./api.js";
import { Live } from "./live.js";
import { AuditView } from "./audit.js";
import { findMachine, setStale } from "./machine.js";
import { Popout, popoutRoute } from "./popout.js";

const connEl = document.getElementById("conn");
const bannerEl = document.getElementById("banner");
let wasLive = false;
let countdown = null;
// setConn shows the live socket's state; once it has been live, any
// other state shows a banner, with the countdown to the next attempt, and
// makes every machine's agent state unknown.
function setConn(state, text, retry) {
  clearInterval(countdown);
  connEl.dataset.state = state;
  connEl.textContent = text;
  if (state === "live") wasLive = true;
  const down = wasLive && state !== "live";
  bannerEl.hidden = !down;
  setStale(down);
  if (!down) return;
  const show = () => {
    const t = retry ? `${retry.why}; reconnecting in ${(Math.max(0, retry.at - Date.now()) / 1000).toFixed(1)} s` : text;
    bannerEl.textContent = `Connection to the master lost: machine states may be out of date. ${t}`;
    connEl.textContent = t;
  };
  show();
  if (retry) countdown = setInterval(show, 200);
}

// The views: machines, audit.
const audit = new AuditView(document.getElementById("audit"));
function view(name) {
  document.getElementById("runtimes").hidden = name !== "machines";
  document.getElementById("audit").hidden = name !== "audit";
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-pressed", String(b.dataset.view === name));
  if (name === "audit") audit.show();
}
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => view(b.dataset.view));

const loginEl = document.getElementById("login");
function showLogin(reason) {
  document.getElementById("login-reason").textContent = reason;
  loginEl.hidden = false;
}

const live = new Live({ onState: setConn, onUnauthorized: showLogin });

loginEl.addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken(document.getElementById("login-token").value.trim());
  loginEl.hidden = true;
  start();
});

// A popped-out terminal: that terminal only, no live subscription.
const route = popoutRoute();
let popout = null;
if (route) {
  document.body.classList.add("popout-page");
  popout = new Popout(route, document.body);
}

// The address names another view (a link, a typed address): load it.
addEventListener("hashchange", () => {
  const r = popoutRoute();
  if ((r && !popout) || (popout && !r) || (r && popout && r.id !== popout.route.id && r.id !== popout.active?.id)) location.reload();
});

function start() {
  if (popout) {
    setConn("live", "");
    popout.start();
    return;
  }
  api("/api/info").then((i) => {
    document.getElementById("version").textContent = `${i.version} · agent protocol ${i.protocolVersion}`;
  }).catch(() => {});
  live.connect();
}

// For tests and the console: a machine's terminal (its tab for process
// id, else the tab shown), its process id, and its player's terminal.
const tab = (rid, name, id) => {
  const mv = popout || findMachine(rid, name);
  return id != null ? mv?.terminalFor(id) : mv?.active;
};
window.porthole = {
  terminal: (rid, name, id) => tab(rid, name, id)?.term,
  processId: (rid, name) => tab(rid, name)?.id,
  player: (rid, name) => findMachine(rid, name)?.player?.term,
};

if (takeToken()) start();
else {
  showLogin("No client token: open this page as /#token=TOKEN, or paste it here.");
  setConn("error", "not signed in");
}
