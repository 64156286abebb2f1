package webtest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/internal/testutil"
)

// embedPages serves testdata/embed.html, a page of another origin with a
// stock xterm.js (web/terminal's node modules: @xterm/xterm and
// @xterm/addon-attach, nothing of porthole's), on a loopback port of its
// own, and returns its origin.
func embedPages(t *testing.T) string {
	t.Helper()
	webDist(t) // installs web/terminal's node modules
	root := repoRoot(t)
	mods := filepath.Join(root, "web", "terminal", "node_modules", "@xterm")
	files := map[string]string{
		"/":                filepath.Join(root, "webtest", "testdata", "embed.html"),
		"/xterm.js":        filepath.Join(mods, "xterm", "lib", "xterm.js"),
		"/xterm.css":       filepath.Join(mods, "xterm", "css", "xterm.css"),
		"/addon-attach.js": filepath.Join(mods, "addon-attach", "lib", "addon-attach.js"),
	}
	return "http://" + agenttest.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, f)
	}))
}

// ticketFor gets a ticket from the master as a program would (no Origin).
func (m *testMaster) ticketFor(t *testing.T, client string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+m.addr+"/api/tickets", nil)
	req.Header.Set("Authorization", "Bearer "+client)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tk struct{ Ticket string }
	if err := json.NewDecoder(resp.Body).Decode(&tk); err != nil || tk.Ticket == "" {
		t.Fatalf("POST /api/tickets: %s %v", resp.Status, err)
	}
	return tk.Ticket
}

// waitAgent waits until the machine's agent is connected to the master.
func (m *testMaster) waitAgent(t *testing.T, client, rid, name string) {
	t.Helper()
	testutil.WaitFor(t, "the agent of "+name+" connected", func() bool {
		req, _ := http.NewRequest("GET", "http://"+m.addr+"/api/runtimes/"+url.PathEscape(rid)+"/machines/"+url.PathEscape(name), nil)
		req.Header.Set("Authorization", "Bearer "+client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var doc struct {
			Agent struct{ Connected bool } `json:"agent"`
		}
		return json.NewDecoder(resp.Body).Decode(&doc) == nil && doc.Agent.Connected
	})
}

// TestDashboardEmbedOtherOrigin: a stock xterm.js page on another origin
// (testdata/embed.html, docs/dashboard.md "Embedding") starts a shell
// through porthole-master started with -allow-origin for it, gets a
// ticket, attaches with a stock AttachAddon and runs a command. A master
// without the flag refuses the same page: its requests fail CORS, and
// its WebSocket (with a ticket the test got for it) is refused.
func TestDashboardEmbedOtherOrigin(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	pages := embedPages(t)
	const rid, name = "ws7:default:owner7", "embedded"

	m := startMasterAt(t, bins, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)), t.TempDir(), "-allow-origin", pages)
	startAgentProc(t, bins, m, m.tokenFile(t, "-runtime-id", rid, "-machine-name", name), rid, name)
	client := m.token(t, "-client")
	m.waitAgent(t, client, rid, name)
	p := startBrowser(t, chromium)
	frag := func(m *testMaster, more ...string) string {
		v := url.Values{"master": {"http://" + m.addr}, "rid": {rid}, "name": {name}, "token": {client}}
		for i := 0; i+1 < len(more); i += 2 {
			v.Set(more[i], more[i+1])
		}
		return pages + "/#" + v.Encode()
	}
	p.do(chromedp.Navigate(frag(m)))
	p.wait("attached", `(window.embedStatus || '').startsWith('attached to process')`)
	p.wait("a shell prompt", `screen().includes(`+jsString(strings.TrimSpace(prompt))+`)`)
	p.typeText(`echo em""bed-$((6*7))` + "\r")
	p.wait("the command's output", hasLine("embed-42"))
	p.screenshot("embed.png")

	// Without -allow-origin: the same page gets nothing.
	other := startMaster(t, bins)
	otherClient := other.token(t, "-client")
	client = otherClient
	p.do(chromedp.Navigate("about:blank"))
	p.do(chromedp.Navigate(frag(other)))
	p.wait("the page's requests refused", `(window.embedStatus || '').startsWith('failed:')`)
	t.Logf("without -allow-origin: %s", eval[string](p, `window.embedStatus`))
	// Its WebSocket too, with a good ticket: refused before any agent.
	p.do(chromedp.Navigate("about:blank"))
	p.do(chromedp.Navigate(frag(other, "id", "1", "ticket", other.ticketFor(t, otherClient))))
	p.wait("the attach socket refused", `window.embedStatus === 'closed: code 1006 '`)
	if out := other.proc.output(); !strings.Contains(out, "is not the master's nor allowed") {
		t.Errorf("the master without -allow-origin did not log the refusal:\n%s", out)
	}
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}
