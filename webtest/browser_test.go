package webtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/cli"
	"github.com/porthole-dev/porthole/internal/testutil"
)

// The test binary stands in for porthole (testutil.Programs); its link
// is in programsDir.
var programs = testutil.Programs{"porthole": func(argv []string) int { return cli.Main(argv[1:], os.Environ()) }}

var programsDir string

func TestMain(m *testing.M) {
	programsDir = programs.Setup()
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBinaries() // dashboard_test.go's
		testutil.Exit(code)
	}))
}

const (
	// "+" survives the fragment, and the subprotocol needs base64url's - and _.
	token  = "porthole>>web??test+"
	prompt = "ph-test> "
	// waitFor bounds every wait for the page: generous, since it only
	// matters when something is broken.
	waitFor = testutil.Wait
)

// screenJS is the text of the terminal's visible rows.
const screenJS = `(document.querySelector('.xterm-rows')?.innerText ?? '').replace(/\u00a0/g, ' ')`

// TestBrowserTerminal loads web/terminal from an agent into headless
// Chromium: the page starts a shell at the size it fits, runs a command
// typed into xterm.js, follows a window resize (stty size), reattaches
// on reload with ?id= and replays the output, and shows the exit status.
func TestBrowserTerminal(t *testing.T) {
	dist := webDist(t)
	chromium := chromiumPath(t)
	ag := startAgent(t, agent.Options{WebDir: dist})
	p := startBrowser(t, chromium)
	base := "http://" + ag.addr

	// Start: the page starts a shell at the size the fit addon chose.
	// The token as it is ("+" must stay "+"); escaped on the reload below.
	p.do(chromedp.Navigate(base + "/#token=" + token))
	p.wait("a shell prompt", `screen().includes(`+jsString(strings.TrimSpace(prompt))+`)`)
	p.wait("window.processId", `typeof window.processId === 'string'`)
	id := eval[string](p, `window.processId`)
	if got := eval[string](p, `location.search`); got != "?id="+id {
		t.Errorf("location.search = %q, want %q (reload must reattach)", got, "?id="+id)
	}
	size := p.termSize()
	if info := ag.get(t, id); info.Size != size {
		t.Errorf("process %s started at %+v, want the terminal's %+v", id, info.Size, size)
	}
	t.Logf("process %s, terminal %dx%d", id, size.Rows, size.Cols)

	// Type a command; only its output, not its echo, reads hello-42.
	p.typeText(`echo hel""lo-$((6*7))` + "\r")
	p.wait("hello-42", hasLine("hello-42"))

	// Resize the window: the fit addon resizes xterm.js, the page POSTs
	// process.resize, and the shell's terminal follows.
	p.do(chromedp.EmulateViewport(640, 360))
	p.wait("xterm.js to follow the window", fmt.Sprintf(`term.rows !== %d || term.cols !== %d`, size.Rows, size.Cols))
	newSize := p.termSize()
	ag.waitSize(t, id, newSize)
	p.typeText("stty size\r")
	p.wait("stty size", hasLine(fmt.Sprintf("%d %d", newSize.Rows, newSize.Cols)))
	t.Logf("resized to %dx%d", newSize.Rows, newSize.Cols)
	p.screenshot("resized.png")

	// Reload with ?id=: the page attaches to the same process, which
	// replays its output from the ring.
	p.do(chromedp.Navigate("about:blank"))
	p.do(chromedp.Navigate(base + "/?id=" + id + "#token=" + url.QueryEscape(token)))
	p.wait("window.processId after reload", `window.processId === `+jsString(id))
	p.wait("hello-42 replayed", hasLine("hello-42"))
	p.wait("stty size replayed", hasLine(fmt.Sprintf("%d %d", newSize.Rows, newSize.Cols)))
	if n := ag.count(t); n != 1 {
		t.Errorf("agent has %d processes after the reload, want 1 (reattach, not a new shell)", n)
	}

	// Exit: the close reason shows in the status line and the title.
	p.typeText("exit 3\r")
	p.wait("the exit status", `document.title.includes('exit code 3') && document.getElementById('status').textContent.includes('exit code 3')`)
	p.screenshot("exited.png")
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// TestBrowserTerminalOtherOrigin serves the page from another origin, which
// the agent allows with -allow-origin: the page, deployed for that agent
// (its porthole-agent meta tag), reaches it, its WebSocket passes the
// origin check, and its POSTs pass CORS.
func TestBrowserTerminalOtherOrigin(t *testing.T) {
	dist := webDist(t)
	chromium := chromiumPath(t)
	var pageDir atomic.Value // the pages name the agent, which must allow their origin
	pages := agenttest.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.FileServer(http.Dir(pageDir.Load().(string))).ServeHTTP(w, r)
	}))
	ag := startAgent(t, agent.Options{AllowedOrigins: []string{"http://" + pages}})
	pageDir.Store(deployedFor(t, dist, "http://"+ag.addr))
	p := startBrowser(t, chromium)

	p.do(chromedp.Navigate("http://" + pages + "/#token=" + url.QueryEscape(token)))
	p.wait("a shell prompt", `screen().includes(`+jsString(strings.TrimSpace(prompt))+`)`)
	p.wait("window.processId", `typeof window.processId === 'string'`)
	id := eval[string](p, `window.processId`)
	p.typeText(`echo hel""lo-$((6*7))` + "\r")
	p.wait("hello-42", hasLine("hello-42"))
	size := p.termSize()
	p.do(chromedp.EmulateViewport(640, 360))
	p.wait("xterm.js to follow the window", fmt.Sprintf(`term.rows !== %d || term.cols !== %d`, size.Rows, size.Cols))
	ag.waitSize(t, id, p.termSize()) // the cross-origin POST arrived
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// TestBrowserTerminalRefusesOtherAgent (issue 11, M3): a link to the
// page with ?agent= naming another origin (an attacker's, which would
// gladly allow the page's origin) gets nothing from the page: no request,
// no token; the status line says why. The page's own agent starts nothing
// either. Before, the page sent the token to whatever ?agent= named.
func TestBrowserTerminalRefusesOtherAgent(t *testing.T) {
	dist := webDist(t)
	chromium := chromiumPath(t)
	ag := startAgent(t, agent.Options{WebDir: dist})
	var mu sync.Mutex
	var got []string // what the other origin received
	evil := agenttest.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.String()+" "+r.Header.Get("Authorization")+r.Header.Get("Sec-WebSocket-Protocol"))
		mu.Unlock()
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Headers", "*")
		w.Header().Set("Access-Control-Allow-Methods", "*")
	}))
	p := startBrowser(t, chromium)
	for _, other := range []string{"http://" + evil, "http://" + evil + "/x", "javascript:alert(1)", "not a url"} {
		p.do(chromedp.Navigate("http://" + ag.addr + "/?agent=" + url.QueryEscape(other) + "#token=" + url.QueryEscape(token)))
		p.wait("the refusal", `document.getElementById('status').textContent.startsWith('refusing ?agent=')`)
	}
	// The page's own origin, named, is still fine.
	p.do(chromedp.Navigate("http://" + ag.addr + "/?agent=" + url.QueryEscape("http://"+ag.addr) + "#token=" + url.QueryEscape(token)))
	p.wait("a shell prompt", `screen().includes(`+jsString(strings.TrimSpace(prompt))+`)`)
	if n := ag.count(t); n != 1 {
		t.Errorf("the agent has %d processes; want 1 (the refused pages start none)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) > 0 {
		t.Errorf("the other origin received:\n%s", strings.Join(got, "\n"))
	}
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// deployedFor copies the built page into a new directory, with
// index.html naming agentURL in its porthole-agent meta tag, as a page
// deployed for an agent on another origin is.
func deployedFor(t *testing.T, dist, agentURL string) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dist, e.Name()))
		if err != nil {
			continue // a directory
		}
		if e.Name() == "index.html" {
			b = bytes.Replace(b, []byte("<title>"), []byte(`<meta name="porthole-agent" content="`+agentURL+`">`+"\n<title>"), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// hasLine is a predicate: some visible row, trimmed, equals s.
func hasLine(s string) string {
	return `screen().split('\n').some(l => l.trim() === ` + jsString(s) + `)`
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// repoRoot is the module root: the test runs in webtest/.
func repoRoot(t *testing.T) string {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// webDist returns web/terminal/dist, built first with npm when it is
// missing or older than its sources.
func webDist(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "web", "terminal")
	dist := filepath.Join(dir, "dist")
	built := mtime(filepath.Join(dist, "main.js"))
	fresh := !built.IsZero()
	for _, f := range []string{"dist/index.html", "dist/xterm.css"} {
		fresh = fresh && !mtime(filepath.Join(dir, f)).IsZero()
	}
	if fresh && !sourcesNewer(t, dir, built, "index.html", "package.json", "package-lock.json") {
		return dist
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("web/terminal/dist is missing or older than its sources, and npm is not installed (%v): install node and npm (Debian: apt-get install nodejs npm), or build the page with `make web` first", err)
	}
	lock := filepath.Join(dir, "package-lock.json")
	installed := mtime(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if installed.IsZero() || mtime(lock).After(installed) || mtime(filepath.Join(dir, "package.json")).After(installed) {
		install := "install"
		if !mtime(lock).IsZero() {
			install = "ci"
		}
		runNPM(t, dir, npm, install)
	}
	runNPM(t, dir, npm, "run", "build")
	return dist
}

// sourcesNewer reports whether a page's sources changed after built: the
// page's src/*, the named files in dir, and web/shared/*, which both pages
// import.
func sourcesNewer(t *testing.T, dir string, built time.Time, files ...string) bool {
	t.Helper()
	srcs, _ := filepath.Glob(filepath.Join(dir, "src", "*"))
	shared, _ := filepath.Glob(filepath.Join(repoRoot(t), "web", "shared", "*"))
	srcs = append(srcs, shared...)
	for _, f := range files {
		srcs = append(srcs, filepath.Join(dir, f))
	}
	for _, f := range srcs {
		if mtime(f).After(built) {
			return true
		}
	}
	return false
}

func runNPM(t *testing.T, dir, npm string, args ...string) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(npm, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building the page: npm %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	t.Logf("npm %s (%v)", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
}

func mtime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	const deb = "/usr/bin/chromium"
	if _, err := os.Stat(deb); err == nil {
		return deb
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatalf("%s not found: the browser test needs Chromium (Debian: apt-get install -y chromium chromium-driver; .ci/run installs them)", deb)
	return ""
}

// testAgent is an in-process agent serving the page on loopback.
type testAgent struct{ addr string }

// startAgent starts an agent with the test's token and a /bin/sh with a
// known prompt.
func startAgent(t *testing.T, o agent.Options) *testAgent {
	t.Helper()
	// A known prompt, and no startup files: the shell is /bin/sh with PS1.
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PORTHOLE_TOKEN", "ENV", "BASH_ENV", "PS1", "TERM":
		default:
			env = append(env, kv)
		}
	}
	o.Token, o.Shell, o.Env = token, "/bin/sh", append(env, "PS1="+prompt)
	_, addr := agenttest.Start(t, o)
	return &testAgent{addr: addr}
}

type winSize struct {
	Rows int `json:"rows"`
	Cols int `json:"cols"`
}

type processInfo struct {
	ID    string  `json:"id"`
	State string  `json:"state"`
	Size  winSize `json:"size"`
}

// rpc makes one call over POST /v1/rpc, as the page does.
func (ag *testAgent) rpc(t *testing.T, method string, params, result any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	req, _ := http.NewRequest("POST", "http://"+ag.addr+"/v1/rpc", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var msg struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil {
		t.Fatalf("%s: HTTP %s: %v", method, resp.Status, err)
	}
	if msg.Error != nil {
		t.Fatalf("%s: %d %s", method, msg.Error.Code, msg.Error.Message)
	}
	if err := json.Unmarshal(msg.Result, result); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
}

func (ag *testAgent) get(t *testing.T, id string) processInfo {
	t.Helper()
	var info processInfo
	ag.rpc(t, "process.get", map[string]string{"id": id}, &info)
	return info
}

func (ag *testAgent) count(t *testing.T) int {
	t.Helper()
	var list struct {
		Processes []processInfo `json:"processes"`
	}
	ag.rpc(t, "process.list", nil, &list)
	return len(list.Processes)
}

// waitSize waits until the page's process.resize has reached the agent.
func (ag *testAgent) waitSize(t *testing.T, id string, want winSize) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got := ag.get(t, id).Size
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s is %+v after %v, want the terminal's %+v", id, got, waitFor, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// page is a browser tab.
type page struct {
	t   *testing.T
	ctx context.Context

	mu     sync.Mutex
	thrown []string
}

func startBrowser(t *testing.T, chromium string) *page {
	t.Helper()
	// Registered first, so removed last: after the browser has exited.
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1000, 700),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelTab)
	ctx, cancel := context.WithTimeout(tabCtx, 3*time.Minute)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	p := &page{t: t, ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		if ev, ok := ev.(*runtime.EventExceptionThrown); ok {
			p.mu.Lock()
			defer p.mu.Unlock()
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			p.thrown = append(p.thrown, msg)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *page) exceptions() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.thrown...)
}

func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("%v%s", err, p.state())
	}
}

func eval[T any](p *page, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v%s", expr, err, p.state())
	}
	return v
}

// wait polls a JavaScript predicate, which may call screen(), until it
// holds.
func (p *page) wait(what, predicate string) {
	p.t.Helper()
	expr := `(() => { const screen = () => ` + screenJS + `; return Boolean(` + predicate + `); })()`
	_, err := chromedp.Run(p.ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(25*time.Millisecond),
		chromedp.WithPollingTimeout(waitFor)))
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) {
			err = fmt.Errorf("not after %v", waitFor)
		}
		p.t.Fatalf("waiting for %s: %v%s", what, err, p.state())
	}
}

// typeText types s into the terminal (its helper textarea) as a person
// would. For each key it sends a keyDown that carries the text, then a
// keyUp, as Puppeteer does. chromedp.SendKeys sends keyDown, char, keyUp
// instead: xterm.js handles the keydown and calls preventDefault, which a
// person's browser honours by not firing keypress, but the separate char
// event fires it anyway, and every character would arrive twice.
func (p *page) typeText(s string) {
	p.t.Helper()
	p.do(chromedp.Focus(chromedp.CSS(".xterm-helper-textarea")))
	p.typeKeys(s)
}

// typeKeys types s into the element that has the focus, as typeText does.
func (p *page) typeKeys(s string) {
	p.t.Helper()
	for _, r := range s {
		evs := kb.Encode(r)
		if len(evs) == 3 && evs[1].Type == kb.KeyChar { // keyDown, char, keyUp
			evs[0].Text, evs[0].UnmodifiedText = evs[1].Text, evs[1].UnmodifiedText
			evs = []*input.DispatchKeyEventParams{evs[0], evs[2]}
		}
		for _, ev := range evs {
			if _, err := chromedp.Call(p.ctx, input.DispatchKeyEvent, *ev); err != nil {
				p.t.Fatalf("typing %q: %v%s", s, err, p.state())
			}
		}
	}
}

func (p *page) termSize() winSize {
	p.t.Helper()
	return eval[winSize](p, `({rows: term.rows, cols: term.cols})`)
}

// state describes the page for a failure message.
func (p *page) state() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`location.href + '\nstatus: ' + (document.getElementById('status')?.textContent ?? '') +
			(document.getElementById('runtimes') ? '\ndashboard: ' + document.getElementById('conn').textContent + '\n' + document.getElementById('runtimes').innerText : '') +
			'\nscreen:\n' + `+screenJS))
	if err != nil {
		s = "(page state unavailable: " + err.Error() + ")"
	}
	if ex := p.exceptions(); len(ex) > 0 {
		s += "\nexceptions:\n" + strings.Join(ex, "\n")
	}
	return "\n" + s
}

// screenshot writes a PNG of the page to the directory named by
// $PORTHOLE_WEBTEST_SCREENSHOTS, if it is set: a look at the page while
// developing, and the pictures of docs/dashboard.md (docs/dashboard/,
// written by one run of the dashboard's tests).
func (p *page) screenshot(name string) {
	p.t.Helper()
	dir := os.Getenv("PORTHOLE_WEBTEST_SCREENSHOTS")
	if dir == "" {
		return
	}
	path := filepath.Join(dir, name)
	png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
}
