package webtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// TestDashboard runs porthole-master with the dashboard built in, a
// machine's agent connected to it through its tunnel (-listen none) and a
// bootstrapper pushing to it, and loads the dashboard into headless
// Chromium: the machine shows RUNNING with its installer, server and
// logs (stderr marked), live; its terminal runs a shell through the
// master's agent proxy and follows a window resize.
func TestDashboard(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws1:default:owner1", "dev-machine"
	machineToken := m.tokenFile(t, "-runtime-id", rid, "-machine-name", name)

	p := startBrowser(t, chromium)
	// The page first, with no machine yet: everything after arrives live.
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + m.token(t, "-client")))
	p.wait("the token out of the address bar", `location.hash === '' && sessionStorage.getItem('porthole-master.token') !== null`)
	p.wait("the live subscription", `document.getElementById('conn').dataset.state === 'live'`)

	startAgentProc(t, bins, m, machineToken, rid, name)
	port := testutil.FreePort(t)
	cfg := fmt.Sprintf(`[{"id":"org.example.web","script":"echo installing\necho warming up >&2\nexec /proc/$PPID/exe agent -insecure-no-auth -listen 127.0.0.1:%d",
		"servers":{"web":{"port":"%d/tcp","protocol":"http","path":"/healthz"}}}]`, port, port)
	startBootstrap(t, bins, m, machineToken, rid, name, cfg)

	card := machineJS(rid, name)
	p.wait("the machine RUNNING", card+`?.querySelector('.machine-status')?.dataset.status === `+jsString(masterapi.MachineRunning))
	p.wait("the installer RUNNING", card+`.querySelector('tr.installer[data-installer="org.example.web"] .badge').dataset.status === `+jsString(che.StatusRunning))
	p.wait("the server with its link through the master and its URL", card+`.querySelector('tr.server[data-server="web"] .badge').dataset.status === `+jsString(masterapi.ServerRunning)+` && `+
		card+`.querySelector('tr.server[data-server="web"] a.open-port')?.getAttribute('href') === `+jsString(fmt.Sprintf("/api/runtimes/%s/machines/%s/ports/%d/healthz", strings.ReplaceAll(rid, ":", "%3A"), name, port))+` && `+
		card+`.querySelector('tr.server[data-server="web"] .machine-url')?.textContent === `+jsString(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)))
	p.wait("the installer's stdout", logLines(card, ".stdout")+`.some(l => l.endsWith('installing'))`)
	p.wait("the installer's stderr, marked", logLines(card, ".stderr")+`.some(l => l.endsWith('warming up'))`)
	p.wait("the agent connected", `!`+card+`.querySelector('.open-terminal').disabled`)
	p.screenshot("dashboard.png")

	// The terminal: process.start through the master, raw attach.
	eval[bool](p, card+`.querySelector('.open-terminal').click() ?? true`)
	termJS := `window.porthole.terminal(` + jsString(rid) + `, ` + jsString(name) + `)`
	// The terminal's text from its buffer (the page's test hook): the DOM
	// renderer draws only what is in view.
	bufHas := func(s string) string {
		return `(t => { const b = t?.buffer.active; if (!b) return false; for (let i = 0; i < b.length; i++) { if (b.getLine(i).translateToString(true).trim() === ` +
			jsString(s) + `) return true; } return false; })(` + termJS + `)`
	}
	p.wait("a shell prompt", bufHas(strings.TrimSpace(prompt)))
	size := eval[winSize](p, `(t => ({rows: t.rows, cols: t.cols}))(`+termJS+`)`)
	p.typeText("stty size; echo hi-$((6*7))\r")
	p.wait("hi-42", bufHas("hi-42"))
	p.wait("stty size", bufHas(fmt.Sprintf("%d %d", size.Rows, size.Cols)))
	t.Logf("terminal %dx%d", size.Rows, size.Cols)

	// A smaller window: the fit addon resizes the terminal, the page
	// POSTs process.resize, the shell's terminal follows.
	p.do(chromedp.EmulateViewport(640, 400))
	p.wait("the terminal to follow the window", fmt.Sprintf(`(t => t.rows !== %d || t.cols !== %d)(%s)`, size.Rows, size.Cols, termJS))
	newSize := eval[winSize](p, `(t => ({rows: t.rows, cols: t.cols}))(`+termJS+`)`)
	m.waitSize(t, rid, name, eval[string](p, `window.porthole.processId(`+jsString(rid)+`, `+jsString(name)+`)`), newSize)
	p.typeText("stty size\r")
	p.wait("stty size after the resize", bufHas(fmt.Sprintf("%d %d", newSize.Rows, newSize.Cols)))
	// What the buffer holds is also what xterm.js drew.
	p.wait("hi-42 on the screen", hasLine("hi-42"))
	t.Logf("resized to %dx%d", newSize.Rows, newSize.Cols)
	p.screenshot("dashboard-terminal.png")
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// TestDashboardFailedInstaller: a failing installer shows FAILED, with
// its error, on the machine and the installer, and its output.
func TestDashboardFailedInstaller(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws2:default:owner2", "broken"
	machineToken := m.tokenFile(t, "-runtime-id", rid, "-machine-name", name)
	startBootstrap(t, bins, m, machineToken, rid, name,
		`[{"id":"org.example.failing","script":"echo about to fail\necho 'it went <wrong>' >&2\nexit 3"}]`)

	p := startBrowser(t, chromium)
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + m.token(t, "-client")))
	card := machineJS(rid, name)
	msg := che.ErrExitCode("org.example.failing", 3).Error()
	p.wait("the machine FAILED", card+`?.querySelector('.machine-status')?.dataset.status === `+jsString(masterapi.MachineFailed))
	p.wait("the machine's error", card+`.querySelector('.machine-error').textContent.includes(`+jsString(msg)+`)`)
	p.wait("the installer FAILED", card+`.querySelector('tr.installer[data-installer="org.example.failing"] .badge').dataset.status === `+jsString(che.StatusFailed))
	// Text, never HTML: the <wrong> of the output stays text.
	p.wait("the installer's stderr", logLines(card, ".stderr")+`.some(l => l.endsWith('it went <wrong>'))`)
	if n := eval[int](p, card+`.querySelectorAll('wrong').length`); n != 0 {
		t.Errorf("the log made %d <wrong> elements of the installer's output", n)
	}
	// The cause next to the sentence: the installer's last stderr lines.
	p.wait("the last stderr lines under the error", card+`.querySelector('.machine-error .stderr-tail[data-installer="org.example.failing"] pre')?.textContent === 'it went <wrong>'`)
	// The sentence once outside the log (the installer's row points at
	// it), and once in it (the bootstrapper's failure says "above").
	outside := eval[string](p, `(() => { const c = `+card+`.cloneNode(true); c.querySelector('details.logs').remove(); return c.textContent })()`)
	inLog := eval[string](p, card+`.querySelector('.log').textContent`)
	if n, k := strings.Count(outside, msg), strings.Count(inLog, msg); n != 1 || k != 1 {
		t.Errorf("the error sentence shows %d times outside the log and %d times in it, want once each%s", n, k, p.state())
	}
	if !eval[bool](p, card+`.querySelector('.open-terminal').disabled`) {
		t.Error("the terminal button is enabled, but no agent is connected")
	}
	p.screenshot("dashboard-failed.png")
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// TestDashboardReconnect restarts the master under an open page: the page
// reconnects, resubscribes after the last entry it shows, and shows what
// the bootstrapper pushed meanwhile, each entry once.
func TestDashboardReconnect(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws3:default:owner3", "restarted"
	machineToken := m.tokenFile(t, "-runtime-id", rid, "-machine-name", name)
	flag := filepath.Join(t.TempDir(), "go-on")
	startBootstrap(t, bins, m, machineToken, rid, name, fmt.Sprintf(
		`[{"id":"org.example.slow","script":"echo first\nwhile [ ! -e %s ]; do sleep 0.05; done\necho second"}]`, flag),
		"-logs-endpoint-reconnect-period", "1")

	p := startBrowser(t, chromium)
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + m.token(t, "-client")))
	card := machineJS(rid, name)
	p.wait("the first line", logLines(card, ".stdout")+`.some(l => l.endsWith('first'))`)

	m.stop(t)
	p.wait("the page to see the master gone", `document.getElementById('conn').dataset.state !== 'live'`)
	startMasterAt(t, bins, m.addr, m.data) // stopped at cleanup
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.wait("the page back", `document.getElementById('conn').dataset.state === 'live'`)
	p.wait("the second line", logLines(card, ".stdout")+`.some(l => l.endsWith('second'))`)
	p.wait("the machine RUNNING or STOPPED", `[`+jsString(masterapi.MachineRunning)+`, `+jsString(masterapi.MachineStopped)+`].includes(`+card+`.querySelector('.machine-status').dataset.status)`)
	if n := eval[int](p, logLines(card, ".stdout")+`.filter(l => l.endsWith('first')).length`); n != 1 {
		t.Errorf("the first line shows %d times, want once", n)
	}
	// Every journal entry shows once: as many lines as entries.
	lines, seq := eval[int](p, card+`.querySelectorAll('.log > div').length`), eval[int](p, `(() => {
		const m = /seq (\d+)/.exec(`+card+`.querySelector('summary').textContent); return m ? Number(m[1]) : -1 })()`)
	if lines != seq {
		t.Errorf("the log shows %d lines for %d entries%s", lines, seq, p.state())
	}
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// TestDashboardTerminalReconnect: a terminal streaming numbered lines
// survives the master being killed (SIGKILL) and restarted on the same
// port and data directory: the panel's bar says it is reconnecting (its
// output does not), the page reattaches at the exact offset, and the
// buffer holds every line once, in order; so does a reload while it
// streams. A reload then reattaches to the same shell (the agent has no second process) and replays it, and
// Close hangs up that shell. While the master is down, a banner says so
// and the agent's state shows unknown, not CONNECTED. When the agent restarts, the panel says its
// shell is gone and stops.
func TestDashboardTerminalReconnect(t *testing.T) {
	dashboardDist(t)
	chromium := chromiumPath(t)
	bins := buildBinaries(t)
	m := startMaster(t, bins)
	const rid, name = "ws4:default:owner4", "survivor"
	machineToken := m.tokenFile(t, "-runtime-id", rid, "-machine-name", name)
	agent := startAgentProc(t, bins, m, machineToken, rid, name)
	client := m.token(t, "-client")

	p := startBrowser(t, chromium)
	p.do(chromedp.Navigate("http://" + m.addr + "/#token=" + client))
	card := machineJS(rid, name)
	p.wait("the agent connected", card+`?.querySelector('.open-terminal')?.disabled === false`)
	eval[bool](p, card+`.querySelector('.open-terminal').click() ?? true`)
	termJS := `window.porthole.terminal(` + jsString(rid) + `, ` + jsString(name) + `)`
	idJS := `window.porthole.processId(` + jsString(rid) + `, ` + jsString(name) + `)`
	stateJS := card + `?.querySelector('.terminal-status')?.dataset.state`
	// The buffer's lines, wrapped rows joined.
	linesJS := `(t => { const b = t?.buffer.active, out = []; if (!b) return out; for (let i = 0; i < b.length; i++) {
		const l = b.getLine(i), s = l.translateToString(true); if (l.isWrapped && out.length) out[out.length - 1] += s; else out.push(s); } return out; })(` + termJS + `)`
	has := func(re string) string { return linesJS + `.some(l => /` + re + `/.test(l))` }
	// lastNumber is the highest nN line shown, 0 for none.
	lastNumber := `Math.max(0, ...` + linesJS + `.map(l => /^n(\d+)$/.exec(l)).filter(Boolean).map(m => Number(m[1])))`
	// checkNumbers: the lines n1..nK, each once and in order, then end-K.
	checkNumbers := func(when string) {
		t.Helper()
		var got []int
		end := -1
		for _, l := range eval[[]string](p, linesJS) {
			l = strings.TrimSpace(l)
			if n, err := strconv.Atoi(strings.TrimPrefix(l, "n")); err == nil && strings.HasPrefix(l, "n") {
				got = append(got, n)
			} else if n, err := strconv.Atoi(strings.TrimPrefix(l, "end-")); err == nil && strings.HasPrefix(l, "end-") {
				end = n
			} else if strings.Contains(l, "reconnecting") || strings.Contains(l, "lost]") || strings.Contains(l, "zzz") {
				t.Errorf("%s: the terminal's output has %q", when, l)
			}
		}
		if end != len(got) {
			t.Errorf("%s: %d numbered lines, but the loop printed %d", when, len(got), end)
		}
		for i, n := range got {
			if n != i+1 {
				t.Fatalf("%s: line %d is n%d, want n%d (lines %v)", when, i+1, n, i+1, got[max(0, i-3):min(len(got), i+4)])
			}
		}
		t.Logf("%s: n1..n%d, each once and in order", when, len(got))
	}

	p.wait("a shell prompt", has(`^`+strings.TrimSpace(prompt)))
	p.wait("attached", stateJS+` === 'open'`)
	id := eval[string](p, idJS)
	dir := t.TempDir()
	flag, counter := filepath.Join(dir, "stop"), filepath.Join(dir, "counter")
	// The loop also writes its count to a file, which the test reads
	// while the master is down.
	p.typeText(fmt.Sprintf("i=0; while [ ! -e %s ]; do i=$((i+1)); echo n$i; echo $i >%s; sleep 0.01; done; echo end-$i\r", flag, counter))
	p.wait("the stream", lastNumber+` >= 20`)

	m.kill(t)
	p.wait("the bar to say reconnecting", stateJS+` === 'reconnecting' && `+card+`.querySelector('.terminal-status').textContent.startsWith('reconnecting… (attempt ')`)
	t.Logf("while the master is down: %s", eval[string](p, card+`.querySelector('.terminal-status').textContent`))
	// The page can no longer vouch for the agent: a banner, and its state
	// unknown instead of CONNECTED.
	agentJS := card + `.querySelector('.agent-status .badge')`
	p.wait("the banner and the agent's state unknown", `!document.getElementById('banner').hidden && /reconnecting in \d+\.\d s/.test(document.getElementById('banner').textContent) && `+agentJS+`.dataset.status === 'UNKNOWN' && `+agentJS+`.textContent.includes('reconnecting')`)
	// Typing while reconnecting sends nothing (the tty would echo it).
	p.typeText("zzz")
	p.screenshot("dashboard-terminal-reconnecting.png")
	// The shell goes on while the master is down: the page reattaches
	// behind what it has shown.
	before := eval[int](p, lastNumber)
	testutil.WaitFor(t, "the loop to print 30 lines while the master is down", func() bool {
		b, _ := os.ReadFile(counter)
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && n >= before+30
	})
	down := time.Now()
	startMasterAt(t, bins, m.addr, m.data) // stopped at cleanup
	t.Logf("the master answers again after %v", time.Since(down).Round(time.Millisecond))
	p.wait("reattached", stateJS+` === 'open'`)
	p.wait("the banner gone, the agent CONNECTED", `document.getElementById('banner').hidden && `+agentJS+`.dataset.status === 'CONNECTED'`)
	t.Logf("reattached after %v", time.Since(down).Round(time.Millisecond))
	p.wait("the stream going on live", fmt.Sprintf(`%s >= %d`, lastNumber, before+20))
	p.screenshot("dashboard-terminal-reconnected.png")
	// A reload while the shell streams: the same process, replayed from
	// its first byte, then live; no line twice, none missing.
	streamed := eval[int](p, lastNumber)
	p.do(chromedp.Reload())
	p.wait("the same shell after a reload while streaming", fmt.Sprintf(`%s === %s && %s === 'open'`, idJS, jsString(id), stateJS))
	p.wait("the stream going on after the reload", fmt.Sprintf(`%s >= %d`, lastNumber, streamed+20))
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.wait("the end of the stream", has(`^end-\d+$`))
	checkNumbers("after the master's restart and a reload while streaming")

	// A reload: the tab reattaches to the shell it opened, and replays it.
	p.do(chromedp.Reload())
	p.wait("the same shell after the reload", fmt.Sprintf(`%s === %s && %s === 'open'`, idJS, jsString(id), stateJS))
	p.wait("the replay", has(`^end-\d+$`))
	checkNumbers("after the reload")
	var list struct {
		Processes []processInfo `json:"processes"`
	}
	m.agentRPC(t, client, rid, name, "process.list", nil, &list)
	if len(list.Processes) != 1 || list.Processes[0].ID != id || list.Processes[0].State != "running" {
		t.Errorf("the agent's processes after the reload: %+v, want only the shell %s, running", list.Processes, id)
	}
	p.typeText("echo again-$((6*7))\r")
	p.wait("input after the reload", has(`^again-42$`))

	// Close hangs up this shell, and a reload no longer opens it.
	eval[bool](p, card+`.querySelector('.close-terminal').click() ?? true`)
	deadline := time.Now().Add(waitFor)
	for {
		var info processInfo
		m.agentRPC(t, client, rid, name, "process.get", map[string]string{"id": id}, &info)
		if info.State == "exited" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell is %q %v after Close, want exited", info.State, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
	savedJS := `Object.keys(sessionStorage).filter(k => k.startsWith('porthole-dashboard.terminal')).length`
	if n := eval[int](p, savedJS); n != 0 {
		t.Errorf("sessionStorage keeps %d terminal(s) after Close", n)
	}

	// The agent restarts (SIGKILL, a new agent): a new shell's panel says
	// the shell is gone, stops retrying and forgets it.
	p.wait("the panel closed", card+`.querySelector('.terminal-panel') === null`)
	eval[bool](p, card+`.querySelector('.open-terminal').click() ?? true`)
	p.wait("a new shell", fmt.Sprintf(`%s !== undefined && %s !== %s && %s === 'open'`, idJS, idJS, jsString(id), stateJS))
	id = eval[string](p, idJS)
	agent.cmd.Process.Kill()
	<-agent.exited
	p.wait("the bar to say reconnecting after the agent's death", stateJS+` === 'reconnecting'`)
	startAgentProc(t, bins, m, machineToken, rid, name)
	p.wait("the panel to say the shell is gone", stateJS+` === 'failed' && `+card+`.querySelector('.terminal-status').textContent.startsWith(`+jsString("process "+id+" is gone")+`)`)
	t.Logf("after the agent's restart: %s", eval[string](p, card+`.querySelector('.terminal-status').textContent`))
	if n := eval[int](p, savedJS); n != 0 {
		t.Errorf("sessionStorage keeps %d terminal(s) whose shell is gone", n)
	}
	if ex := p.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw:\n%s", strings.Join(ex, "\n"))
	}
}

// TestDashboardSharedJS runs the unit tests of web/shared (the backoff,
// the framed attach protocol, the attachment's offsets) and of the
// dashboard's pure helpers (the asciicast reader, ages, the audit page
// size) with node's test runner: web/shared/shared.test.mjs,
// web/dashboard/src/cast.test.mjs.
func TestDashboardSharedJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (%v): install node and npm (Debian: apt-get install nodejs npm)", err)
	}
	cmd := exec.Command(node, "--test", filepath.Join("web", "shared"), filepath.Join("web", "dashboard", "src"))
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test web/shared web/dashboard/src: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "# fail 0") || strings.Contains(string(out), "# pass 0") {
		t.Fatalf("node --test web/shared web/dashboard/src ran no test, or reported a failure:\n%s", out)
	}
}

// machineJS is an expression for the card of a machine.
func machineJS(rid, name string) string {
	return `[...document.querySelectorAll('article.machine')].find(e => e.dataset.runtime === ` + jsString(rid) +
		` && e.dataset.machine === ` + jsString(name) + `)`
}

// logLines is an expression for the texts of the log lines of a card that
// match sel.
func logLines(card, sel string) string {
	return `[...(` + card + `?.querySelectorAll('.log > ` + sel + `') ?? [])].map(e => e.textContent)`
}

// dashboardDist builds web/dashboard into master/dashboard/dist when it is
// missing or older than its sources.
func dashboardDist(t *testing.T) {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "web", "dashboard")
	dist := filepath.Join(repoRoot(t), "master", "dashboard", "dist")
	built := mtime(filepath.Join(dist, "index.html"))
	fresh := !built.IsZero()
	for _, f := range []string{"main.js", "main.css"} {
		fresh = fresh && !mtime(filepath.Join(dist, f)).IsZero()
	}
	if fresh && !sourcesNewer(t, dir, built, "index.html", "build.mjs", "package.json", "package-lock.json") {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("master/dashboard/dist is missing or older than web/dashboard, and npm is not installed (%v): install node and npm (Debian: apt-get install nodejs npm), or build the dashboard with `make web` first", err)
	}
	installed := mtime(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if installed.IsZero() || mtime(filepath.Join(dir, "package-lock.json")).After(installed) || mtime(filepath.Join(dir, "package.json")).After(installed) {
		runNPM(t, dir, npm, "ci")
	}
	runNPM(t, dir, npm, "run", "build")
}

// binaries are porthole and porthole-master.
type binaries struct{ porthole, master string }

var (
	binsOnce sync.Once
	bins     binaries
	binsDir  string
	binsErr  error
)

// buildBinaries returns porthole, the test binary re-executed (see
// TestMain), and porthole-master, built once for the package (after
// dashboardDist) into a directory TestMain removes. The master is built,
// not re-executed, because it embeds master/dashboard/dist, which
// dashboardDist may only have built after this test binary was compiled.
// It is built with -race when the tests run with it.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	binsOnce.Do(func() {
		binsDir, binsErr = os.MkdirTemp("", "porthole-webtest-")
		if binsErr != nil {
			return
		}
		bins = binaries{porthole: filepath.Join(programsDir, "porthole"), master: filepath.Join(binsDir, "porthole-master")}
		args := []string{"build", "-o", bins.master}
		if testutil.Race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/porthole-master")...)
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			binsErr = fmt.Errorf("go build ./cmd/porthole-master: %v\n%s", err, out)
		}
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return bins
}

func removeBinaries() {
	if binsDir != "" {
		os.RemoveAll(binsDir)
	}
}

// proc is a process of the test, stopped at cleanup.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    string // its stdout and stderr
	exited chan struct{}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

// startProc runs path with args in a clean environment, a known shell
// and prompt for terminals, plus env. At cleanup it gets SIGTERM (the
// bootstrapper stops its installers then), and SIGKILL if it is still
// there after testutil.Wait; its output is logged if the test failed.
func startProc(t *testing.T, name, path string, args []string, env ...string) *proc {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(path, args...)
	cmd.Env = append(testutil.CleanEnv("TERM", "SHELL=/bin/sh", "PS1="+prompt), env...)
	cmd.Stdout, cmd.Stderr = out, out
	p := &proc{name: name, cmd: cmd, out: out.Name(), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(testutil.Wait):
			t.Errorf("%s did not exit within %s of SIGTERM: killed", name, testutil.Wait)
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

// testMaster is a running porthole-master.
type testMaster struct {
	bins binaries
	addr string
	data string
	proc *proc
}

// startMaster runs porthole-master on a free loopback port and waits
// until it answers.
func startMaster(t *testing.T, b binaries) *testMaster {
	t.Helper()
	return startMasterAt(t, b, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)), t.TempDir())
}

// startMasterAt runs porthole-master on addr with data directory data.
// extra are more flags.
func startMasterAt(t *testing.T, b binaries, addr, data string, extra ...string) *testMaster {
	t.Helper()
	m := &testMaster{bins: b, addr: addr, data: data}
	p := startProc(t, "porthole-master", b.master, append([]string{"-listen", m.addr, "-data", m.data, "-log-level", "debug"}, extra...))
	m.proc = p
	deadline := time.Now().Add(waitFor)
	for {
		resp, err := http.Get("http://" + m.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("porthole-master exited: %v\n%s", p.cmd.ProcessState, p.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("porthole-master does not answer on %s after %v: %v\n%s", m.addr, waitFor, err, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the master (SIGTERM) and waits for it to exit.
func (m *testMaster) stop(t *testing.T) {
	t.Helper()
	m.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.proc.exited:
	case <-time.After(waitFor):
		t.Fatalf("porthole-master did not exit within %v of SIGTERM", waitFor)
	}
}

// kill kills the master (SIGKILL) and waits for it to exit.
func (m *testMaster) kill(t *testing.T) {
	t.Helper()
	m.proc.cmd.Process.Kill()
	select {
	case <-m.proc.exited:
	case <-time.After(waitFor):
		t.Fatalf("porthole-master did not exit within %v of SIGKILL", waitFor)
	}
}

// token runs porthole-master token with args and returns the token.
func (m *testMaster) token(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(m.bins.master, append([]string{"token", "-data", m.data}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("porthole-master token %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// tokenFile writes a token into a file (0600) and returns both.
func (m *testMaster) tokenFile(t *testing.T, args ...string) tokenFile {
	t.Helper()
	tok := m.token(t, args...)
	path := filepath.Join(t.TempDir(), "machine-token")
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tokenFile{token: tok, path: path}
}

type tokenFile struct{ token, path string }

// startAgentProc runs a machine's agent that serves only through its
// tunnel to the master.
func startAgentProc(t *testing.T, b binaries, m *testMaster, tok tokenFile, rid, name string, extra ...string) *proc {
	t.Helper()
	return startProc(t, "porthole agent", b.porthole, append([]string{"agent",
		"-master", "ws://" + m.addr, "-machine-token-file", tok.path,
		"-runtime-id", rid, "-machine-name", name, "-listen", "none"}, extra...))
}

// startBootstrap runs porthole bootstrap with config (installers JSON)
// pushing to the master with the machine token, as Che runs it.
func startBootstrap(t *testing.T, b binaries, m *testMaster, tok tokenFile, rid, name, config string, extra ...string) *proc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return startProc(t, "porthole bootstrap", b.porthole, append([]string{"bootstrap",
		"-file", path,
		"-push-endpoint", "ws://" + m.addr + "/api/websocket",
		"-push-logs-endpoint", "ws://" + m.addr + "/api/websocket",
		"-runtime-id", rid, "-machine-name", name,
		"-spool-dir", t.TempDir(), "-stop-grace", "500ms", "-enable-auth"}, extra...),
		"CHE_MACHINE_TOKEN="+tok.token)
}

// agentRPC makes one call to a machine's agent through the master's
// agent proxy, as the page does, and decodes its result into result.
func (m *testMaster) agentRPC(t *testing.T, client, rid, name, method string, params, result any) {
	t.Helper()
	u := "http://" + m.addr + "/api/runtimes/" + url.PathEscape(rid) + "/machines/" + url.PathEscape(name) + "/agent/v1/rpc"
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", u, strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+client)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s through the master: %v", method, err)
	}
	defer resp.Body.Close()
	var msg struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil {
		t.Fatalf("%s through the master: HTTP %s: %v", method, resp.Status, err)
	}
	if msg.Error != nil {
		t.Fatalf("%s through the master: %s", method, msg.Error.Message)
	}
	if err := json.Unmarshal(msg.Result, result); err != nil {
		t.Fatalf("%s through the master: %v", method, err)
	}
}

// waitSize waits until the page's process.resize has reached the agent:
// process.get through the master's agent proxy, as the page calls it.
func (m *testMaster) waitSize(t *testing.T, rid, name, id string, want winSize) {
	t.Helper()
	client := m.token(t, "-client")
	deadline := time.Now().Add(waitFor)
	for {
		var got processInfo
		m.agentRPC(t, client, rid, name, "process.get", map[string]string{"id": id}, &got)
		if got.Size == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s is %+v after %v, want the terminal's %+v", id, got.Size, waitFor, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
