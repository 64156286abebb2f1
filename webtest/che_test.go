package webtest

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/cheapi"
)

// chePage is a stock xterm.js page speaking Che's terminal-agent
// protocol as Che's IDE and che-theia do: /pty?token=, {type:"data"} for
// keystrokes, {type:"resize",data:[cols,rows]} on open and on every
// resize, raw text frames written to the terminal as they come.
const chePage = `<!doctype html>
<html><head><meta charset="utf-8"><title>che terminal</title>
<link rel="stylesheet" href="xterm.css"><script src="xterm.js"></script></head>
<body><div id="status">connecting</div><div id="terminal"></div>
<script>
const token = decodeURIComponent(location.hash.replace(/^#token=/, ''));
const term = new Terminal({cols: 80, rows: 24});
window.term = term;
term.open(document.getElementById('terminal'));
const ws = new WebSocket('ws://' + location.host + '/pty?token=' + encodeURIComponent(token));
const send = m => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m)); };
ws.onopen = () => {
  document.getElementById('status').textContent = 'open';
  send({type: 'resize', data: [term.cols, term.rows]});
};
ws.onmessage = e => term.write(e.data);
ws.onclose = e => { document.getElementById('status').textContent = 'closed ' + e.code; };
term.onData(d => send({type: 'data', data: d}));
term.onResize(s => send({type: 'resize', data: [s.cols, s.rows]}));
</script></body></html>
`

// TestCheTerminalPage loads a stock xterm.js page that speaks Che's
// terminal-agent protocol (no porthole code in the page) from an agent
// with -che into headless Chromium: the shell follows the page's size,
// runs typed commands, prints UTF-8, follows a resize, and its exit
// closes the socket with 1000.
func TestCheTerminalPage(t *testing.T) {
	webDist(t) // installs web/terminal's node_modules: xterm.js itself
	chromium := chromiumPath(t)
	dir := t.TempDir()
	xterm := filepath.Join(repoRoot(t), "web", "terminal", "node_modules", "@xterm", "xterm")
	for src, dst := range map[string]string{"lib/xterm.js": "xterm.js", "css/xterm.css": "xterm.css"} {
		b, err := os.ReadFile(filepath.Join(xterm, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "che.html"), []byte(chePage), 0o644); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, agent.Options{WebDir: dir, Extensions: []agent.Extension{
		cheapi.Extension(cheapi.Options{TerminalShell: "/bin/sh"}),
	}})
	p := startBrowser(t, chromium)

	p.do(chromedp.Navigate("http://" + ag.addr + "/che.html#token=" + url.QueryEscape(token)))
	p.wait("a shell prompt", `screen().includes(`+jsString(strings.TrimSpace(prompt))+`)`)
	// The page sent its size on open: 24x80, not Che's initial 200x60.
	p.typeText("stty size\r")
	p.wait("stty size 24 80", hasLine("24 80"))
	p.typeText(`echo hel""lo-$((6*7))` + "\r")
	p.wait("hello-42", hasLine("hello-42"))
	// UTF-8 output: 日本 and é, from octal escapes (the keys are ASCII).
	p.typeText(`printf 'h\303\251llo \346\227\245\346\234\254\n'` + "\r")
	p.wait("UTF-8 output", hasLine("héllo 日本"))
	// A resize of the terminal reaches the shell.
	p.do(chromedp.Evaluate[chromedp.Void](`term.resize(100, 30)`))
	p.typeText("stty size\r")
	p.wait("stty size 30 100", hasLine("30 100"))
	p.typeText("exit\r")
	p.wait("the close", `document.getElementById('status').textContent === 'closed 1000'`)
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}
