// porthole-master's dashboard: every runtime's machines, their installers,
// servers and installer logs, live, and a terminal per machine whose agent
// is connected. See docs/master.md.
//
// URL: /#token=TOKEN
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
//   terminal.js  a machine's xterm.js terminal
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
import { terminals } from "./terminal.js";

const connEl = document.getElementById("conn");
function setConn(state, text) {
  connEl.dataset.state = state;
  connEl.textContent = text;
}

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

function start() {
  api("/api/info").then((i) => {
    document.getElementById("version").textContent = `${i.version} · agent protocol ${i.protocolVersion}`;
  }).catch(() => {});
  live.connect();
}

// For tests and the console: the open terminals.
window.porthole = {
  terminal: (rid, name) => terminals.get(rid + "\n" + name)?.term,
  processId: (rid, name) => terminals.get(rid + "\n" + name)?.id,
};

if (takeToken()) start();
else {
  showLogin("No client token: open this page as /#token=TOKEN, or paste it here.");
  setConn("error", "not signed in");
}
