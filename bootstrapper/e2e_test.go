package bootstrapper_test

// End-to-end tests of the real program: the test binary re-executed as
// porthole (testutil.Programs); each test runs `porthole bootstrap` (or
// the program as `bootstrapper`) against
// an in-test master (bootstraptest.Receiver) and asserts the exact events
// that arrive, the exit code, the errors and what is left of the
// installers' processes.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	bt "github.com/porthole-dev/porthole/bootstrapper/bootstraptest"
	"github.com/porthole-dev/porthole/cli"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol/che"
)

// porthole is cmd/porthole's main: run as "bootstrapper" (a link, as
// Che's infrastructures call it), it is `porthole bootstrap`.
func porthole(argv []string) int {
	args := argv[1:]
	if filepath.Base(argv[0]) == "bootstrapper" {
		args = append([]string{"bootstrap"}, args...)
	}
	return cli.Main(args, os.Environ())
}

// The test binary stands in for porthole, also when a test links it as
// bootstrapper.
var programs = testutil.Programs{"porthole": porthole, "bootstrapper": porthole}

// bin runs porthole: a link to the test binary.
var bin string

const wait = testutil.Wait // how long any awaited event may take

func TestMain(m *testing.M) {
	bin = filepath.Join(programs.Setup(), "porthole")
	goleak.VerifyTestMain(m, goleak.Cleanup(testutil.Exit))
}

// proc is a running bootstrapper.
type proc struct {
	cmd    *exec.Cmd
	out    string // the file of its stdout and stderr
	exited chan struct{}
}

// output returns what the process wrote so far.
func (p *proc) output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

// start runs the binary (as argv0 when set) with args; the process is
// killed at cleanup if it is still running.
func start(t *testing.T, argv0 string, args []string, env ...string) *proc {
	t.Helper()
	return startIn(t, "", argv0, args, env...)
}

// startIn is start in directory dir.
func startIn(t *testing.T, dir, argv0 string, args []string, env ...string) *proc {
	t.Helper()
	path := bin
	if argv0 != "" {
		path = argv0
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = append(testutil.CleanEnv(), env...)
	out, err := os.CreateTemp(t.TempDir(), "output")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	p := &proc{cmd: cmd, out: out.Name(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("bootstrapper output:\n%s", p.output())
		}
	})
	return p
}

// exit waits for the process to end and returns its exit code.
func (p *proc) exit(t *testing.T) int {
	t.Helper()
	return p.exitWithin(t, wait)
}

// exitWithin is exit with a deadline of d.
func (p *proc) exitWithin(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("the bootstrapper did not exit within %s", d)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitLine waits for a line of the process's output that contains every
// one of parts.
func (p *proc) waitLine(t *testing.T, parts ...string) {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("a line with %q", parts), func() bool {
		for l := range strings.Lines(p.output()) {
			if !slices.ContainsFunc(parts, func(s string) bool { return !strings.Contains(l, s) }) {
				return true
			}
		}
		return false
	})
}

// bootArgs are the flags of a run against r (statuses and logs on one
// endpoint, as Che's Kubernetes infrastructure does), then extra.
func bootArgs(t *testing.T, r *bt.Receiver, config string, extra ...string) []string {
	return append([]string{"bootstrap",
		"-file", config,
		"-push-endpoint", r.URL + "/api/websocket",
		"-push-logs-endpoint", r.URL + "/api/websocket",
		"-runtime-id", "workspace123:default:user1",
		"-machine-name", "dev-machine",
		"-spool-dir", t.TempDir(),
		"-stop-grace", "500ms",
	}, extra...)
}

// fixture copies fixtures/bootstrapper/name into a temporary directory,
// with port 45871 replaced by port, and returns its path.
func fixture(t *testing.T, name string, port int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "fixtures", "bootstrapper", name))
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("45871"), []byte(strconv.Itoa(port)))
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	config   = testutil.Config
	freePort = testutil.FreePort
)

// lines renders events as the Che tests compare them: method, status,
// installer, stream and text. The tests' want lists are this rendering:
// they spell statuses and streams as the wire does ("installer org.a
// DONE"), since what they check is Che's exact sequence, as one reads it.
func lines(evs []bt.Event) []string {
	var out []string
	for _, e := range evs {
		p := e.Params
		switch e.Method {
		case che.MethodBootstrapperStatus:
			out = append(out, "bootstrapper "+p.Status)
		case che.MethodInstallerStatus:
			out = append(out, "installer "+p.Installer+" "+p.Status)
		case che.MethodInstallerLog:
			out = append(out, "log "+p.Installer+" "+p.Stream+" "+p.Text)
		case che.MethodServerStatus:
			out = append(out, "server "+p.Installer+" "+p.Server+" "+p.Status)
		default:
			out = append(out, e.Method+" "+p.Installer+" "+p.Server+" "+p.Status)
		}
	}
	return out
}

var bootstrapperDone = bt.Has(che.MethodBootstrapperStatus, func(p bt.Params) bool { return p.Status == che.StatusDone || p.Status == che.StatusFailed })

func assertLines(t *testing.T, got []bt.Event, want []string) {
	t.Helper()
	if g := lines(got); !slices.Equal(g, want) {
		t.Fatalf("events:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
}

// twoScripts is the sequence of fixtures/bootstrapper/two-scripts.json.
func twoScripts() []string {
	want := []string{"bootstrapper STARTING"}
	for _, id := range []string{"org.example.first", "org.example.second"} {
		want = append(want, "installer "+id+" STARTING")
		for i := 1; i <= 10; i++ {
			want = append(want, fmt.Sprintf("log %s STDOUT %d", id, i))
		}
		want = append(want, "installer "+id+" DONE")
	}
	return append(want, "bootstrapper DONE")
}

// TestCheOrder is Che's TestBootstrap: two installers, each printing 1 to
// 10: STARTING, then per installer STARTING, a log per line, DONE, then
// DONE. Every event is a notification with Che's fields.
func TestCheOrder(t *testing.T) {
	r := bt.Start(t, bt.Options{})
	p := start(t, "", bootArgs(t, r, fixture(t, "two-scripts.json", 0)))
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	evs := r.Events()
	assertLines(t, evs, twoScripts())
	for i, e := range evs {
		p := e.Params
		if p.MachineName != "dev-machine" || p.RuntimeID != (che.RuntimeID{Workspace: "workspace123", Environment: "default", Owner: "user1"}) {
			t.Errorf("event %d: machine %q runtime %+v", i, p.MachineName, p.RuntimeID)
		}
		if p.Time.IsZero() { // a time that is not RFC 3339 would be a violation
			t.Errorf("event %d: no time", i)
		}
		if p.Seq != uint64(i+1) || len(p.BootID) != 16 || p.BootID != evs[0].Params.BootID {
			t.Errorf("event %d: seq %d bootId %q", i, p.Seq, p.BootID)
		}
	}
	if v := r.Violations(); len(v) > 0 {
		t.Fatalf("frames that are not notifications: %q", v)
	}
}

// TestCheFailOrder is Che's TestBootstrapWhenItFails: STARTING, STDOUT
// "1", STDERR "error", installer FAILED, bootstrapper FAILED, with Che's
// error text; exit code 1.
func TestCheFailOrder(t *testing.T) {
	for i := range 5 { // stdout before stderr every time, not by luck
		r := bt.Start(t, bt.Options{})
		p := start(t, "", bootArgs(t, r, fixture(t, "failing.json", 0)))
		if code := p.exit(t); code != 1 {
			t.Fatalf("exit code %d; want 1", code)
		}
		msg := che.ErrExitCode("org.example.failing", 1).Error()
		evs := r.Events()
		assertLines(t, evs, []string{
			"bootstrapper STARTING", "installer org.example.failing STARTING",
			"log org.example.failing STDOUT 1", "log org.example.failing STDERR error",
			"installer org.example.failing FAILED", "bootstrapper FAILED",
		})
		if evs[4].Params.Error != msg || evs[5].Params.Error != msg {
			t.Fatalf("errors %q, %q; want %q", evs[4].Params.Error, evs[5].Params.Error, msg)
		}
		if i == 0 && !strings.Contains(p.output(), msg) {
			t.Fatalf("stderr lacks the error:\n%s", p.output())
		}
	}
}

// Statuses and logs on two endpoints: each gets its own methods, each
// with its own sequence (1, 2, 3, …).
func TestSeparateEndpoints(t *testing.T) {
	r := bt.Start(t, bt.Options{})
	args := bootArgs(t, r, fixture(t, "two-scripts.json", 0))
	args = append(args, "-push-logs-endpoint", r.URL+"/api/websocket-minor")
	p := start(t, "", args)
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	seq := map[string]uint64{}
	logs := 0
	for _, e := range r.Events() {
		if (e.Method == che.MethodInstallerLog) != (e.Path == "/api/websocket-minor") {
			t.Errorf("%s arrived at %s", e, e.Path)
		}
		if seq[e.Path]++; e.Params.Seq != seq[e.Path] {
			t.Errorf("%s: seq %d; want %d", e.Path, e.Params.Seq, seq[e.Path])
		}
		if e.Method == che.MethodInstallerLog {
			logs++
		}
	}
	if logs != 20 || seq["/api/websocket"] != 6 {
		t.Fatalf("%d logs, %d statuses", logs, seq["/api/websocket"])
	}
}

// Without -push-logs-endpoint, as with Che, logs are not pushed; they go
// to the bootstrapper's own log.
func TestNoLogsEndpoint(t *testing.T) {
	r := bt.Start(t, bt.Options{})
	args := bootArgs(t, r, fixture(t, "failing.json", 0))
	args = append(args, "-push-logs-endpoint", "")
	p := start(t, "", args)
	p.exit(t)
	assertLines(t, r.Events(), []string{
		"bootstrapper STARTING", "installer org.example.failing STARTING",
		"installer org.example.failing FAILED", "bootstrapper FAILED",
	})
	if !strings.Contains(p.output(), "text=error") {
		t.Fatalf("the output is not in the bootstrapper's log:\n%s", p.output())
	}
}

// procStat is what a test reads of /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp int
	state           string
}

// processes lists the processes in /proc.
func processes(t *testing.T) []procStat {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []procStat
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		var st procStat
		fmt.Sscan(string(b), &st.pid)
		fmt.Sscan(string(b[bytes.LastIndexByte(b, ')')+1:]), &st.state, &st.ppid, &st.pgrp)
		out = append(out, st)
	}
	return out
}

// installerGroup waits for the bootstrapper's child (the installer's
// shell, the leader of its process group) and returns its pid.
func installerGroup(t *testing.T, p *proc) int {
	t.Helper()
	var pid int
	// Polling /proc: there is no event for a new process.
	testutil.WaitFor(t, "the installer's shell", func() bool {
		for _, st := range processes(t) {
			if st.ppid == p.cmd.Process.Pid && st.pgrp == st.pid {
				pid = st.pid
				return true
			}
		}
		return false
	})
	return pid
}

// assertGroupGone fails if group g has a live (not zombie) member.
func assertGroupGone(t *testing.T, g int) {
	t.Helper()
	for _, st := range processes(t) {
		if st.pgrp == g && st.state != "Z" && st.state != "X" {
			t.Errorf("process %d of the installer's group %d survived (state %s)", st.pid, g, st.state)
		}
	}
}

// testMark returns an environment variable unique to t, which a
// bootstrapper started with it passes on to its installers.
func testMark(t *testing.T) string {
	return fmt.Sprintf("PORTHOLE_TEST_MARK=%s/%d", t.Name(), time.Now().UnixNano())
}

// assertNoneLeft fails if a live (not zombie) process has mark in its
// environment: what survived of the installers of a bootstrapper started
// with it, whatever their group, found without having had to see them
// running (an installer killed by a 1 s timeout may be gone before a test
// under load has looked for it).
func assertNoneLeft(t *testing.T, mark string) {
	t.Helper()
	for _, st := range processes(t) {
		if st.state == "Z" || st.state == "X" {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", st.pid))
		if err == nil && bytes.Contains(append([]byte{0}, env...), []byte("\x00"+mark+"\x00")) {
			t.Errorf("process %d (state %s, group %d) survived", st.pid, st.state, st.pgrp)
		}
	}
}

// The timeout fails the installer with Che's text, and nothing of its
// process group survives, even what ignores SIGTERM.
func TestTimeoutKillsGroup(t *testing.T) {
	for _, c := range []struct{ name, config string }{
		{"fixture", ""},
		{"ignores SIGTERM", `[{"id":"org.example.slow","script":"trap '' TERM\necho starting\nsleep 600 &\nsleep 600"}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := bt.Start(t, bt.Options{})
			file := fixture(t, "timeout.json", 0)
			if c.config != "" {
				file = config(t, c.config)
			}
			mark := testMark(t)
			p := start(t, "", bootArgs(t, r, file, "-installer-timeout", "1"), mark)
			r.Wait(t, wait, "the script's output", bt.Has(che.MethodInstallerLog, nil))
			if code := p.exit(t); code != 1 {
				t.Fatalf("exit code %d", code)
			}
			msg := che.ErrTimeoutCompleted("org.example.slow").Error()
			evs := r.Events()
			assertLines(t, evs, []string{"bootstrapper STARTING", "installer org.example.slow STARTING",
				"log org.example.slow STDOUT starting", "installer org.example.slow FAILED", "bootstrapper FAILED"})
			if evs[3].Params.Error != msg || evs[4].Params.Error != msg {
				t.Fatalf("error %q", evs[3].Params.Error)
			}
			assertNoneLeft(t, mark)
		})
	}
}

// A failed installer leaves nothing either: the children it left behind
// are stopped with it. (Each script prints $$, its process group.) An
// installer whose script exits 0 is given until the timeout while
// something of its group runs, since that could still open the port.
func TestFailedInstallerKillsGroup(t *testing.T) {
	cases := []struct {
		name, config string
		want         error
	}{
		{"exit 2", `[{"id":"org.f","script":"sleep 600 &\necho $$\nexit 2"}]`, che.ErrExitCode("org.f", 2)},
		{"exit 0, no server yet", `[{"id":"org.f","script":"sleep 600 &\necho $$","servers":{"s":{"port":"PORT"}}}]`,
			che.ErrServersNotAvailable("org.f")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bt.Start(t, bt.Options{})
			cfg := config(t, strings.ReplaceAll(c.config, "PORT", strconv.Itoa(freePort(t))))
			p := start(t, "", bootArgs(t, r, cfg, "-installer-timeout", "1"))
			if code := p.exit(t); code != 1 {
				t.Fatalf("exit code %d", code)
			}
			evs := r.Events()
			assertLines(t, evs, []string{"bootstrapper STARTING", "installer org.f STARTING",
				"log org.f STDOUT " + evs[2].Params.Text, "installer org.f FAILED", "bootstrapper FAILED"})
			if evs[4].Params.Error != c.want.Error() {
				t.Fatalf("error %q; want %q", evs[4].Params.Error, c.want)
			}
			g, err := strconv.Atoi(evs[2].Params.Text)
			if err != nil {
				t.Fatal(err)
			}
			assertGroupGone(t, g)
		})
	}
}

// A script that never stops writing still times out on time: reading its
// output before reporting stops at what was there. The logs connection is
// cut at its first line and refused until the bootstrapper has FAILED, so
// lines never wait for the master (the spool drops them when full): when
// FAILED comes depends on the timeout and on reading what the pipes held,
// not on how fast this test's receiver digests lines.
func TestEndlessOutputTimesOut(t *testing.T) {
	o, reopen := cutAndRefuse("/logs", 1)
	r := bt.Start(t, o)
	p := start(t, "", bootArgs(t, r, config(t, `[{"id":"org.yes","script":"yes porthole"}]`), "-installer-timeout", "1",
		"-push-logs-endpoint", r.URL+"/logs", "-logs-endpoint-reconnect-period", "1",
		"-spool-memory", "64K", "-spool-max", "128K", "-flush-timeout", "1m"))
	r.Wait(t, wait, "bootstrapper FAILED", bootstrapperDone)
	reopen() // what is left of the lines can go now
	if code := p.exitWithin(t, 4*wait); code != 1 {
		t.Fatalf("exit code %d", code)
	}
	var statuses []bt.Event
	for _, e := range r.Events() {
		if e.Path != "/logs" {
			statuses = append(statuses, e)
		}
	}
	assertLines(t, statuses, []string{"bootstrapper STARTING", "installer org.yes STARTING", "installer org.yes FAILED", "bootstrapper FAILED"})
	if msg := statuses[3].Params.Error; msg != che.ErrTimeoutCompleted("org.yes").Error() {
		t.Fatalf("error %q", msg)
	}
}

// Interrupted while installing (a workspace stopped while starting): the
// installers are stopped, FAILED says so, the exit code is 128+SIGTERM.
func TestInterrupted(t *testing.T) {
	r := bt.Start(t, bt.Options{})
	cfg := config(t, `[{"id":"org.a","script":"echo a"},{"id":"org.b","script":"echo started\nsleep 600 &\nsleep 600"}]`)
	p := start(t, "", bootArgs(t, r, cfg))
	g := installerGroupOf(t, p, r, "org.b")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exit(t); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit code %d", code)
	}
	msg := che.ErrInterrupted("org.b", errors.New("the bootstrapper received SIGTERM")).Error()
	evs := r.Events()
	assertLines(t, evs, []string{"bootstrapper STARTING",
		"installer org.a STARTING", "log org.a STDOUT a", "installer org.a DONE",
		"installer org.b STARTING", "log org.b STDOUT started", "installer org.b FAILED", "bootstrapper FAILED"})
	if evs[6].Params.Error != msg || evs[7].Params.Error != msg {
		t.Fatalf("error %q; want %q", evs[6].Params.Error, msg)
	}
	assertGroupGone(t, g)
}

// installerGroupOf waits until installer id has printed a line and
// returns its process group.
func installerGroupOf(t *testing.T, p *proc, r *bt.Receiver, id string) int {
	t.Helper()
	r.Wait(t, wait, id+"'s output", bt.Has(che.MethodInstallerLog, func(p bt.Params) bool { return p.Installer == id }))
	return installerGroup(t, p)
}

// Servers: a fast server is seen long before -server-check-period (here
// 60 s, while the installer has 20 s); once DONE, the bootstrapper stays
// while the server runs, and SIGTERM then stops it (exit 0).
func TestServerDelayed(t *testing.T) {
	r := bt.Start(t, bt.Options{})
	port := freePort(t)
	p := start(t, "", bootArgs(t, r, fixture(t, "server-delayed.json", port), "-server-check-period", "60", "-installer-timeout", "20"))
	evs := r.Wait(t, wait, "bootstrapper DONE", bootstrapperDone)
	var status []string
	for _, e := range evs {
		if e.Method != che.MethodInstallerLog {
			status = append(status, lines([]bt.Event{e})...)
		}
	}
	want := []string{"bootstrapper STARTING", "installer org.example.server STARTING", "installer org.example.server RUNNING", "bootstrapper DONE"}
	if !slices.Equal(status, want) {
		t.Fatalf("statuses %q; want %q", status, want)
	}
	if lines(evs)[2] != "log org.example.server STDOUT installing" {
		t.Fatalf("the script's first line is not before RUNNING: %q", lines(evs))
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("the server is not up after RUNNING: %v", err)
	}
	c.Close()
	select {
	case <-p.exited:
		t.Fatal("the bootstrapper exited while the server runs")
	default:
	}
	g := installerGroup(t, p)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d after DONE and SIGTERM", code)
	}
	assertGroupGone(t, g)
}

// Che's error texts for installers with servers.
func TestServerFailures(t *testing.T) {
	cases := []struct {
		name, config, flags string
		want                error
	}{
		{"exit 0, never up", "@server-never.json", "", che.ErrServersNotAvailable("org.example.noserver")},
		{"exit non-zero", `[{"id":"org.s","script":"exit 3","servers":{"s":{"port":"45871"}}}]`, "", che.ErrScriptFailed("org.s", 3)},
		{"timeout", `[{"id":"org.s","script":"sleep 600","servers":{"s":{"port":"45871/tcp"}}}]`, "-installer-timeout 1", che.ErrTimeoutFinished("org.s")},
		{"killed by a signal", `[{"id":"org.s","script":"kill -KILL $$","servers":{"s":{"port":"45871/tcp"}}}]`, "", che.ErrScriptFailed("org.s", 137)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bt.Start(t, bt.Options{})
			port := freePort(t)
			var file string
			if name, ok := strings.CutPrefix(c.config, "@"); ok {
				file = fixture(t, name, port)
			} else {
				file = config(t, strings.ReplaceAll(c.config, "45871", strconv.Itoa(port)))
			}
			p := start(t, "", bootArgs(t, r, file, strings.Fields(c.flags)...))
			if code := p.exit(t); code != 1 {
				t.Fatalf("exit code %d", code)
			}
			evs := r.Events()
			last := evs[len(evs)-1]
			if last.Method != che.MethodBootstrapperStatus || last.Params.Status != che.StatusFailed || last.Params.Error != c.want.Error() {
				t.Fatalf("last event %s; want bootstrapper FAILED %q", last, c.want)
			}
		})
	}
}

// Bad configs: exit 1, a message naming the installer and field, pushed
// to the master as bootstrapper FAILED (it used to learn nothing, and wait
// for its own start timeout), and nothing started: no script run.
func TestBadConfigStartsNothing(t *testing.T) {
	ran := filepath.Join(t.TempDir(), "ran")
	cases := []struct{ name, file, want string }{
		{"dependency order", "@dependency-order.json", `installer[0] "org.example.app": dependencies[0] "org.example.runtime:1.0.0": listed after it`},
		{"malformed", "@malformed.json", "invalid JSON at line 3, column 1"},
		{"bad port", "@bad-port.json", `installer[2] "org.x": servers["web"].port "80/xyz": unknown protocol`},
		{"after a good one", `[{"id":"org.a","script":"touch ` + ran + `"},{"id":"org.b","servers":{"s":{"port":"http"}}}]`, `installer[1] "org.b": servers["s"].port "http": not a port number`},
		{"missing file", "", "no such file or directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bt.Start(t, bt.Options{})
			var file string
			switch {
			case c.file == "":
				file = filepath.Join(t.TempDir(), "config.json")
			case strings.HasPrefix(c.file, "@"):
				file = fixture(t, c.file[1:], 0)
			default:
				file = config(t, c.file)
			}
			p := start(t, "", bootArgs(t, r, file))
			if code := p.exit(t); code != 1 {
				t.Fatalf("exit code %d", code)
			}
			if out := p.output(); !strings.Contains(out, file+": ") || !strings.Contains(out, c.want) {
				t.Fatalf("stderr %q; want %q after the file's path", out, c.want)
			}
			assertReported(t, r, c.want)
			if _, err := os.Stat(ran); err == nil {
				t.Fatal("a script ran")
			}
		})
	}
}

// assertReported checks that r received exactly one event, bootstrapper
// FAILED with an error that contains want.
func assertReported(t *testing.T, r *bt.Receiver, want string) {
	t.Helper()
	evs := r.Events()
	if len(evs) != 1 || evs[0].Method != che.MethodBootstrapperStatus || evs[0].Params.Status != che.StatusFailed ||
		!strings.Contains(evs[0].Params.Error, want) || evs[0].Params.Seq != 1 {
		t.Fatalf("events:\n%s\nwant one: bootstrapper FAILED %q", bt.Summary(evs, 10), want)
	}
}

// Bad flags: exit 2 and a message naming the flag. A bad value of a flag
// other than those saying where and as whom to connect is also pushed to
// the master as bootstrapper FAILED; a command line the flag package
// cannot parse, or one without a usable endpoint, runtime or machine, is
// not (the endpoint may not be known).
func TestBadFlags(t *testing.T) {
	file := fixture(t, "two-scripts.json", 0)
	cases := []struct {
		flag, value, want string
		reported          bool
	}{
		{"-push-endpoint", "", "-push-endpoint is required", false},
		{"-push-endpoint", "http://127.0.0.1:1/x", `-push-endpoint "http://127.0.0.1:1/x": protocol must be either ws or wss`, false},
		{"-push-logs-endpoint", "tcp://x", `-push-logs-endpoint "tcp://x": protocol must be either ws or wss`, false},
		{"-runtime-id", "", "-runtime-id is required", false},
		{"-runtime-id", "w:e", `-runtime-id "w:e": want workspace:env:ownerId`, false},
		{"-machine-name", "", "-machine-name is required", false},
		{"-installer-timeout", "0", "-installer-timeout 0: must be > 0", true},
		{"-installer-timeout", "ten", `invalid value "ten" for flag -installer-timeout`, false},
		{"-server-check-period", "-1", "-server-check-period -1: must be > 0", true},
		{"-cacert", "/no/such.pem", "-cacert /no/such.pem: open /no/such.pem: no such file or directory", true},
		{"-cacert", file, "-cacert " + file + ": no PEM certificate found", true},
		{"-spool-dir", "/no/such/dir", `-spool-dir "/no/such/dir": not a directory`, true},
		{"-spool-memory", "1K", "-spool-memory 1024: must be at least 64K", true},
		{"-server-status-events", "sometimes", `-server-status-events "sometimes": want auto, always or never`, true},
		{"-liveness-period", "soon", `invalid value "soon" for flag -liveness-period`, false},
		{"-no-such-flag", "1", "flag provided but not defined: -no-such-flag", false},
	}
	for _, c := range cases {
		t.Run(c.flag+"="+c.value, func(t *testing.T) {
			r := bt.Start(t, bt.Options{})
			good := map[string]string{
				"-file": file, "-push-endpoint": r.URL + "/s", "-runtime-id": "w:e:o", "-machine-name": "m",
			}
			args := []string{"bootstrap"}
			for k, v := range good {
				if k != c.flag {
					args = append(args, k, v)
				}
			}
			if c.value != "" {
				args = append(args, c.flag, c.value)
			}
			p := start(t, "", args)
			if code := p.exit(t); code != 2 {
				t.Fatalf("exit code %d; want 2", code)
			}
			if !strings.Contains(p.output(), c.want) {
				t.Fatalf("stderr:\n%s\nwant %q", p.output(), c.want)
			}
			if c.reported {
				assertReported(t, r, c.want)
			} else if n := r.Handshakes(); n != 0 {
				t.Fatalf("%d connection(s) to the master", n)
			}
		})
	}
}

// The binary run as "bootstrapper" is `porthole bootstrap`, with Che's
// defaults: config.json in the working directory, -enable-auth from
// $CHE_AUTH_ENABLED and the token from $CHE_MACHINE_TOKEN, sent raw.
func TestBootstrapperAlias(t *testing.T) {
	const token = "machine-token-123"
	r := bt.Start(t, bt.Options{Token: token})
	dir := t.TempDir()
	link := filepath.Join(dir, "bootstrapper")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fixture(t, "two-scripts.json", 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startIn(t, dir, link, []string{"-push-endpoint", r.URL + "/api/websocket", "-runtime-id", "w:e:o", "-machine-name", "m"},
		"CHE_AUTH_ENABLED=true", "CHE_MACHINE_TOKEN="+token)
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	evs := r.Events()
	if len(evs) != 6 || evs[5].Params.Status != che.StatusDone { // statuses only: no -push-logs-endpoint
		t.Fatalf("events:\n%s", bt.Summary(evs, 10))
	}
	if auth := r.Auth(); len(auth) != 1 || auth[0] != token {
		t.Fatalf("Authorization headers %q; want the raw token", auth)
	}
}

// fixtures/bootstrapper/che-invocation.sh, the command line Che's
// Kubernetes infrastructure runs, starts porthole unchanged: detached,
// its log in a file, authenticated with the raw machine token.
func TestCheInvocation(t *testing.T) {
	const token = "che-machine-token"
	r := bt.Start(t, bt.Options{Token: token})
	dir := t.TempDir()
	bdir := filepath.Join(dir, "bootstrapper") + "/"
	if err := os.MkdirAll(bdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, bdir+"bootstrapper"); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(fixture(t, "two-scripts.json", 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bdir+"config.json", cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join("..", "fixtures", "bootstrapper", "che-invocation.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script)
	cmd.Env = append(testutil.CleanEnv(), "BOOTSTRAPPER_DIR="+bdir, "MACHINE_NAME=dev-machine",
		"WORKSPACE_ID=workspace123", "ENV_NAME=default", "OWNER_ID=user1",
		"PUSH_ENDPOINT="+r.URL+"/api/websocket", "PUSH_LOGS_ENDPOINT="+r.URL+"/api/websocket",
		"LOGS_DIR="+dir+"/logs", "CHE_MACHINE_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	evs := r.Wait(t, wait, "bootstrapper DONE", bootstrapperDone)
	r.WaitClosed(t, wait) // it closes its connection when it is done
	assertLines(t, evs, twoScripts())
	if auth := r.Auth(); len(auth) != 1 || auth[0] != token {
		t.Fatalf("Authorization %q", auth)
	}
	log, err := os.ReadFile(filepath.Join(dir, "logs", "bootstrapper", "bootstrapper.log"))
	if err != nil || !strings.Contains(string(log), "status="+che.StatusDone) {
		t.Fatalf("bootstrapper.log: %v\n%s", err, log)
	}
}

// 100,000 lines while the master cuts both connections several times:
// after dropping the duplicates by sequence number, every line arrives
// exactly once, in order, and every status too.
func TestReconnectExactlyOnce(t *testing.T) {
	const n = 100_000
	cuts := map[string][]int{ // frames after which each connection is cut, by path
		"/api/websocket":       {2, 1, 2},
		"/api/websocket-minor": {7_000, 20_000, 1, 15_000, 30_000},
	}
	var mu sync.Mutex
	seen := map[string]int{} // connections that received a frame, by path
	r := bt.Start(t, bt.Options{Cut: func(path string, conn, frames int) bool {
		mu.Lock()
		defer mu.Unlock()
		seen[path] = max(seen[path], conn)
		k := conn - 1 // connections are numbered per path
		return k < len(cuts[path]) && frames == cuts[path][k]
	}})
	cfg := config(t, fmt.Sprintf(`[{"id":"org.a","script":"echo a"},{"id":"org.lines","script":"seq 1 %d"},{"id":"org.b","script":"echo b"}]`, n))
	args := bootArgs(t, r, cfg, "-logs-endpoint-reconnect-period", "1", "-push-logs-endpoint", r.URL+"/api/websocket-minor",
		"-flush-timeout", "1m") // delivering what is left at DONE is bounded by the test's wait, not by the default 10 s
	p := start(t, "", args)
	if code := p.exitWithin(t, 4*wait); code != 0 { // 100,000 lines with the race detector on a busy machine
		t.Fatalf("exit code %d", code)
	}
	mu.Lock()
	if seen["/api/websocket"] < 4 || seen["/api/websocket-minor"] < 6 {
		t.Fatalf("connections made: %v; want every cut reconnected", seen)
	}
	mu.Unlock()
	kept, dups, err := bt.Dedup(r.Events())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	next := 1
	for _, e := range kept {
		if e.Method == che.MethodInstallerLog && e.Params.Installer == "org.lines" {
			if e.Params.Text != strconv.Itoa(next) {
				t.Fatalf("line %d is %q", next, e.Params.Text)
			}
			next++
			continue
		}
		got = append(got, lines([]bt.Event{e})...)
	}
	if next != n+1 {
		t.Fatalf("%d lines arrived; want %d", next-1, n)
	}
	want := []string{"bootstrapper STARTING", "installer org.a STARTING", "log org.a STDOUT a", "installer org.a DONE",
		"installer org.lines STARTING", "installer org.lines DONE", "installer org.b STARTING", "log org.b STDOUT b",
		"installer org.b DONE", "bootstrapper DONE"}
	if !sameElements(got, want) {
		t.Fatalf("other events %q; want %q", got, want)
	}
	t.Logf("%d duplicates dropped over %v connections", dups, seen)
}

// sameElements compares the statuses (one endpoint) and the other logs
// (the other) without their interleaving, which two connections do not
// define.
func sameElements(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// cutAndRefuse returns a receiver's options that cut the first connection
// to path after its frames-th frame and refuse every handshake on path
// from then on, until reopen is called.
func cutAndRefuse(path string, frames int) (o bt.Options, reopen func()) {
	var mu sync.Mutex
	refusing := false
	o.Cut = func(p string, conn, n int) bool {
		mu.Lock()
		defer mu.Unlock()
		if p == path && conn == 1 && n == frames {
			refusing = true
			return true
		}
		return false
	}
	o.Refuse = func(p string, _ int) bool {
		mu.Lock()
		defer mu.Unlock()
		return p == path && refusing
	}
	return o, func() {
		mu.Lock()
		refusing = false
		mu.Unlock()
	}
}

// While the master cannot be reached, the spool fills; the oldest lines
// give way to one event that says how many were lost, the rest arrive in
// order once it can be reached again.
func TestSpoolOverflowReportsLostLines(t *testing.T) {
	const n = 20_000
	o, reopen := cutAndRefuse("/logs", 10) // until every line is in the spool
	r := bt.Start(t, o)
	cfg := config(t, fmt.Sprintf(`[{"id":"org.lines","script":"seq 1 %d"}]`, n))
	args := bootArgs(t, r, cfg, "-logs-endpoint-reconnect-period", "1", "-push-logs-endpoint", r.URL+"/logs",
		"-spool-memory", "64K", "-spool-max", "128K", "-flush-timeout", "1m")
	p := start(t, "", args)
	r.Wait(t, wait, "installer DONE", bt.Has(che.MethodInstallerStatus, func(p bt.Params) bool { return p.Status == che.StatusDone }))
	reopen()
	if code := p.exitWithin(t, 4*wait); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	kept, _, err := bt.Dedup(r.Events())
	if err != nil {
		t.Fatal(err)
	}
	var lost uint64
	var markers int
	next := 1
	for _, e := range kept {
		if e.Method != che.MethodInstallerLog {
			continue
		}
		if e.Params.Lost > 0 {
			markers++
			lost += e.Params.Lost
			next += int(e.Params.Lost)
			if e.Params.Text != che.LostText(e.Params.Lost) || e.Params.Installer != "org.lines" {
				t.Fatalf("lost event %+v", e.Params)
			}
			continue
		}
		if e.Params.Text != strconv.Itoa(next) {
			t.Fatalf("line %q; want %d", e.Params.Text, next)
		}
		next++
	}
	if markers != 1 || lost == 0 || next != n+1 {
		t.Fatalf("%d lost events for %d lines; lines end at %d; want one event and the count to add up to %d", markers, lost, next-1, n)
	}
	if v := r.Violations(); len(v) > 0 {
		t.Fatalf("frames that are not well-formed notifications: %q", v)
	}
	t.Logf("%d of %d lines lost, reported in one event", lost, n)
}

// What a master should not send does not crash the bootstrapper: text
// that is not JSON, a binary frame, a batch, a request (answered with
// "method not found"), a stray response.
func TestGarbageFromMaster(t *testing.T) {
	r := bt.Start(t, bt.Options{Greet: []bt.Frame{
		{Data: "not json"},
		{Binary: true, Data: "\x00\x01binary"},
		{Data: `[{"jsonrpc":"2.0","method":"x"}]`},
		{Data: `{"jsonrpc":"2.0","id":7,"method":"machine/stop","params":{}}`},
		{Data: `{"jsonrpc":"2.0","id":99,"result":true}`},
		{Data: `{"jsonrpc":"1.0","method":"x"}`},
		{Data: `{}`},
	}})
	p := start(t, "", bootArgs(t, r, fixture(t, "two-scripts.json", 0)))
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if evs := r.Events(); len(evs) != 26 || !slices.ContainsFunc(evs, bootstrapperDone) {
		t.Fatalf("events:\n%s", bt.Summary(evs, 30))
	}
	replies := strings.Join(r.Replies(), "\n")
	if !strings.Contains(replies, `"id":7`) || !strings.Contains(replies, "-32601") || !strings.Contains(replies, "-32700") {
		t.Fatalf("replies:\n%s", replies)
	}
}

// Long lines are split, not dropped; invalid UTF-8 arrives as U+FFFD in
// text and exactly in raw.
func TestLongLinesAndUTF8(t *testing.T) {
	r := bt.Start(t, bt.Options{})
	script := `head -c 20000 /dev/zero | tr '\\000' a; echo; printf 'bad \\377\\376 bytes\\n'; printf 'caf\\303\\251\\n'`
	p := start(t, "", bootArgs(t, r, config(t, `[{"id":"org.x","script":"`+script+`"}]`), "-max-line", "8192"))
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	var logs []bt.Params
	for _, e := range r.Events() {
		if e.Method == che.MethodInstallerLog {
			logs = append(logs, e.Params)
		}
	}
	if len(logs) != 5 {
		t.Fatalf("%d log events", len(logs))
	}
	for i, want := range []struct {
		n       int
		partial bool
	}{{8192, true}, {8192, true}, {3616, false}} {
		if l := logs[i]; len(l.Text) != want.n || l.Partial != want.partial || strings.Trim(l.Text, "a") != "" {
			t.Fatalf("piece %d: %d bytes, partial %v", i, len(l.Text), l.Partial)
		}
	}
	if l := logs[3]; l.Text != "bad \ufffd\ufffd bytes" || string(l.Raw) != "bad \xff\xfe bytes" {
		t.Fatalf("invalid UTF-8: text %q raw %q", l.Text, l.Raw)
	}
	if l := logs[4]; l.Text != "café" || l.Raw != nil {
		t.Fatalf("valid UTF-8: text %q raw %q", l.Text, l.Raw)
	}
}

// A master that announces its message limit on the handshake never gets a
// frame above it: lines are split further, as long lines are (partial),
// whatever escaping (control characters: \u0001, six bytes each) or the
// raw copy of invalid UTF-8 adds. Before, an event above the master's
// limit was closed with 1009, resent, and stopped the stream for ever.
func TestAnnouncedLimitSplits(t *testing.T) {
	const limit = 2048
	r := bt.Start(t, bt.Options{Header: http.Header{che.HeaderMaxMessage: {strconv.Itoa(limit)}}})
	script := `head -c 20000 /dev/zero | tr '\\000' a; echo; head -c 3000 /dev/zero | tr '\\000' '\\001'; echo; ` +
		`head -c 3000 /dev/zero | tr '\\000' '\\377'; echo; echo end`
	p := start(t, "", bootArgs(t, r, config(t, `[{"id":"org.x","script":"`+script+`"}]`), "-max-line", "65536"))
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	var lines []string
	var line []byte
	for _, e := range r.Events() {
		if len(e.Frame) > limit {
			t.Fatalf("a frame of %d bytes; the master's limit is %d: %.200s", len(e.Frame), limit, e.Frame)
		}
		if e.Method != che.MethodInstallerLog {
			continue
		}
		if e.Params.Raw != nil {
			line = append(line, e.Params.Raw...)
		} else {
			line = append(line, e.Params.Text...)
		}
		if !e.Params.Partial {
			lines = append(lines, string(line))
			line = nil
		}
	}
	want := []string{strings.Repeat("a", 20000), strings.Repeat("\x01", 3000), strings.Repeat("\xff", 3000), "end"}
	if !slices.Equal(lines, want) {
		t.Fatalf("%d lines, of %v bytes; want 4 of 20000, 3000, 3000, 3", len(lines), lens(lines))
	}
}

func lens(ss []string) []int {
	n := make([]int, len(ss))
	for i, s := range ss {
		n[i] = len(s)
	}
	return n
}

// After DONE: the bootstrapper stays while the installers' processes run,
// still streams their output, and pushes each change of a server's
// liveness; it exits 0 when they have ended. The changes go out as
// installer/serverStatusChanged to a master that announces it understands
// it (porthole-master), or with -server-status-events always; to Che's
// master (no announcement) the wire is exactly Che's three methods, since
// Che's master logs an ERROR and answers -32601 for each.
func TestLivenessAfterDone(t *testing.T) {
	porthole := http.Header{che.HeaderCapabilities: {"other, " + che.CapServerStatus}}
	for _, c := range []struct {
		name   string
		header http.Header
		extra  []string
		sent   bool
	}{
		{"porthole master", porthole, nil, true},
		{"che master", nil, nil, false},
		{"che master, always", nil, []string{"-server-status-events", "always"}, true},
		{"porthole master, never", porthole, []string{"-server-status-events", "never"}, false},
	} {
		t.Run(c.name, func(t *testing.T) { testLivenessAfterDone(t, c.header, c.extra, c.sent) })
	}
}

func testLivenessAfterDone(t *testing.T, header http.Header, extra []string, sent bool) {
	r := bt.Start(t, bt.Options{Header: header})
	port := strconv.Itoa(freePort(t))
	var ln net.Listener
	listen := func() { // the server: accepts and drops the checks' connections
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		ln = l // its goroutine keeps its own: the next listen replaces ln
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	defer func() { ln.Close() }()
	flag := filepath.Join(t.TempDir(), "go")
	script := fmt.Sprintf(`echo up; while [ ! -e %s ]; do sleep 0.05; done; echo after done`, flag)
	cfg := config(t, fmt.Sprintf(`[{"id":"org.srv","script":"%s","servers":{"web":{"port":"%s/tcp"}}}]`, script, port))
	p := start(t, "", bootArgs(t, r, cfg, append([]string{"-liveness-period", "50ms"}, extra...)...))
	r.Wait(t, wait, "the script's first line", bt.Has(che.MethodInstallerLog, nil))
	listen() // the server comes up
	r.Wait(t, wait, "bootstrapper DONE", bootstrapperDone)

	stopped := func(status string) func(bt.Event) bool {
		return bt.Has(che.MethodServerStatus, func(p bt.Params) bool { return p.Status == status })
	}
	ln.Close()
	if sent {
		r.Wait(t, wait, "server STOPPED", stopped(che.StatusStopped))
	} else {
		p.waitLine(t, `msg="server status"`, "status=STOPPED")
	}
	listen()
	if sent {
		r.Wait(t, wait, "server RUNNING again", stopped(che.StatusRunning))
	} else {
		p.waitLine(t, `msg="server status"`, "status=RUNNING")
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	var got []string
	for _, l := range lines(r.Events()) {
		if l != "" {
			got = append(got, l)
		}
	}
	want := []string{"bootstrapper STARTING", "installer org.srv STARTING", "log org.srv STDOUT up", "installer org.srv RUNNING",
		"bootstrapper DONE", "server org.srv web STOPPED", "server org.srv web RUNNING",
		"log org.srv STDOUT after done"}
	if !sent {
		want = slices.Delete(want, 5, 7)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, e := range r.Events() {
		if e.Method == che.MethodServerStatus && e.Params.Port != port+"/tcp" {
			t.Fatalf("port %q", e.Params.Port)
		}
	}
	if v := r.Violations(); len(v) > 0 {
		t.Fatalf("frames that are not well-formed notifications: %q", v)
	}
}

// wss:// with -cacert: the certificate is trusted beside the system's;
// without it the connection is refused, and nothing starts.
func TestCACert(t *testing.T) {
	r := bt.Start(t, bt.Options{TLS: true})
	pemFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pemFile, r.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "", bootArgs(t, r, fixture(t, "two-scripts.json", 0), "-cacert", pemFile))
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	assertLines(t, r.Events(), twoScripts())

	// The first connection is given the installer timeout, and the run
	// lasts that long (a certificate error is retried): 5 s, since on a
	// busy machine a TLS handshake under the race detector has taken more
	// than a second to fail on its certificate.
	p = start(t, "", bootArgs(t, r, fixture(t, "two-scripts.json", 0), "-installer-timeout", "5"))
	if code := p.exit(t); code != 1 {
		t.Fatalf("exit code %d without -cacert", code)
	}
	if out := p.output(); !strings.Contains(out, "certificate") {
		t.Fatalf("output:\n%s", out)
	}
	if n := len(r.Events()); n != len(twoScripts()) {
		t.Fatalf("%d events after the refused run", n)
	}
}

// TestInstallersGetNoToken (issue 11, H2): the bootstrapper
// authenticates with $CHE_MACHINE_TOKEN, and its installer scripts run
// without it, or any other token, in their environment.
func TestInstallersGetNoToken(t *testing.T) {
	const token = "che-token-for-installers"
	r := bt.Start(t, bt.Options{Token: token})
	file := config(t, `[{"id":"org.example.env","script":"env | grep -c -e `+token+` -e porthole-token -e machine-token || true"}]`)
	p := start(t, "", bootArgs(t, r, file, "-enable-auth"),
		"CHE_MACHINE_TOKEN="+token, "PORTHOLE_TOKEN=porthole-token", "PORTHOLE_MACHINE_TOKEN=machine-token")
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, p.output())
	}
	assertLines(t, r.Events(), []string{"bootstrapper STARTING", "installer org.example.env STARTING",
		"log org.example.env STDOUT 0", "installer org.example.env DONE", "bootstrapper DONE"})
}

// TestLogsRedactToken (issue 11, low): Che's push endpoints carry the
// machine token in ?token=; the bootstrapper's logs and errors show the
// endpoint with the token replaced.
func TestLogsRedactToken(t *testing.T) {
	const secret = "url-token-s3cret"
	r := bt.Start(t, bt.Options{Refuse: func(_ string, n int) bool { return n == 1 }})
	args := bootArgs(t, r, fixture(t, "two-scripts.json", 0), "-log-level", "debug")
	for i, a := range args {
		if strings.HasPrefix(a, r.URL) {
			args[i] = a + "?token=" + secret
		}
	}
	p := start(t, "", args)
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	out := p.output()
	if strings.Contains(out, secret) || !strings.Contains(out, "token=xxxxx") {
		t.Fatalf("output shows the token, or no redacted endpoint:\n%s", out)
	}
}
