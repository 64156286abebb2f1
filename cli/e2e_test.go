package cli_test

// End-to-end tests of the real porthole binary: TestMain builds it once,
// every test starts its own agent process on a free loopback port, and the
// terminal tests drive `porthole exec -it` inside a real terminal, a tmux
// pane on a private tmux server: typing, resizing the window and reading
// the pane back.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/protocol"
)

// bin is the porthole binary TestMain built.
var bin string

const (
	waitTimeout = 10 * time.Second      // how long any awaited event may take
	pollEvery   = 20 * time.Millisecond // how often a condition is polled
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "porthole-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "porthole")
	if err := buildBinary(bin); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building porthole:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// buildBinary runs `go build -o out ./cmd/porthole` in the module root.
func buildBinary(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return errors.New("not inside a Go module")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/porthole")
	cmd.Dir = filepath.Dir(mod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, b)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Helpers: environment, agent, CLI runs.

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// baseEnv is this process's environment without anything that would leak
// into or confuse the processes the tests start.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PORTHOLE_") || k == "TMUX" || k == "TMUX_PANE" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// agentProc is a running `porthole agent`.
type agentProc struct {
	addr, url, token string
	cmd              *exec.Cmd
	logPath          string
	exited           chan struct{} // closed when the process has exited
	waitErr          error         // set before exited is closed
}

// freeAddr returns a loopback address nobody listened on a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startAgent starts an agent with a random token, waits until it is
// healthy and stops it with SIGTERM at cleanup, expecting exit status 0.
func startAgent(t *testing.T) *agentProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		a, err := tryStartAgent(t)
		if err == nil {
			return a
		}
		// Another process may have taken the port between freeAddr
		// closing it and the agent binding it: try another one.
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		t.Fatal(err)
	}
}

func tryStartAgent(t *testing.T) (*agentProc, error) {
	a := &agentProc{addr: freeAddr(t), token: randHex(16), exited: make(chan struct{})}
	a.url = "ws://" + a.addr
	logf, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a.logPath = logf.Name()
	a.cmd = exec.Command(bin, "agent", "-listen", a.addr, "-grace", "2s")
	a.cmd.Env = append(baseEnv(), "PORTHOLE_TOKEN="+a.token)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // should the test binary die
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.exited)
	}()

	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(waitTimeout)
	for {
		resp, err := hc.Get("http://" + a.addr + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-a.exited:
			return nil, fmt.Errorf("agent exited before it was healthy (%v):\n%s", a.waitErr, a.log())
		case <-time.After(pollEvery):
		}
		if time.Now().After(deadline) {
			a.cmd.Process.Kill()
			<-a.exited
			return nil, fmt.Errorf("agent not healthy on %s after %s:\n%s", a.addr, waitTimeout, a.log())
		}
	}
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log())
		}
	})
	return a, nil
}

func (a *agentProc) log() string {
	b, _ := os.ReadFile(a.logPath)
	return string(b)
}

// stop sends SIGTERM (once) and expects the agent to exit with status 0.
func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-a.exited:
		if a.cmd.ProcessState.Exited() && a.cmd.ProcessState.ExitCode() == 0 {
			return // stopped already
		}
		t.Errorf("agent exited on its own: %v", a.waitErr)
		return
	default:
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM agent: %v", err)
	}
	select {
	case <-a.exited:
		if a.waitErr != nil {
			t.Errorf("agent after SIGTERM: %v, want exit status 0", a.waitErr)
		}
	case <-time.After(15 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
		t.Errorf("agent did not exit within 15s of SIGTERM")
	}
}

// result is one finished CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// porthole runs the CLI to completion with the agent's token (unless env
// sets PORTHOLE_TOKEN itself) and stdin as its standard input.
func porthole(t *testing.T, a *agentProc, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = baseEnv()
	if a != nil {
		cmd.Env = append(cmd.Env, "PORTHOLE_TOKEN="+a.token)
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("porthole %q did not finish within %s\nstdout: %s\nstderr: %s", args, waitTimeout, &stdout, &stderr)
	case errors.As(err, &ee):
		if !ee.Exited() {
			t.Fatalf("porthole %q died: %v\nstderr: %s", args, err, &stderr)
		}
	case err != nil:
		t.Fatalf("porthole %q: %v", args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
}

// ---------------------------------------------------------------------------
// The CLI without a terminal.

func TestVersion(t *testing.T) {
	t.Parallel()
	r := porthole(t, nil, nil, "", "version")
	if r.code != 0 {
		t.Fatalf("porthole version: exit %d, stderr %q", r.code, r.stderr)
	}
	if want := "(protocol 1.0)"; protocol.Version != "1.0" || !strings.Contains(r.stdout, want) {
		t.Errorf("porthole version printed %q, want it to name %s", r.stdout, want)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"exec without command", []string{"exec"}, "exec needs a command"},
		{"exec with only --", []string{"exec", "-url", "ws://127.0.0.1:1", "--"}, "exec needs a command"},
		{"unknown flag", []string{"exec", "-no-such-flag", "--", "true"}, "no-such-flag"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"kill without id", []string{"kill"}, "kill needs one process id"},
		{"kill with bad signal", []string{"kill", "-s", "NOPE", "p1"}, "-s"},
		{"attach without id", []string{"attach"}, "attach needs one process id"},
		{"no listener without master", []string{"agent", "-listen", "none"}, "-listen"},
		{"runtime id without master", []string{"agent", "-runtime-id", "w:e:o"}, "-runtime-id needs -master"},
		{"master not a WebSocket URL", []string{"agent", "-master", "http://127.0.0.1:1"}, "-master"},
		{"master without machine token", []string{"agent", "-master", "ws://127.0.0.1:1", "-runtime-id", "w:e:o", "-machine-name", "m"}, "PORTHOLE_MACHINE_TOKEN"},
		{"master without runtime id", []string{"agent", "-master", "ws://127.0.0.1:1", "-machine-token-file", "/dev/stdin", "-machine-name", "m"}, "-runtime-id"},
		{"master without machine name", []string{"agent", "-master", "ws://127.0.0.1:1", "-machine-token-file", "/dev/stdin", "-runtime-id", "w:e:o"}, "-machine-name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := porthole(t, nil, nil, "machine-token\n", tc.args...)
			if r.code != 2 {
				t.Errorf("porthole %q: exit %d, want 2 (usage)", tc.args, r.code)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("porthole %q: stderr %q, want it to mention %q", tc.args, r.stderr, tc.want)
			}
		})
	}
}

// TestExecExitCode: the remote exit code becomes the CLI's, 128+signal
// when a signal killed the process.
func TestExecExitCode(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	for _, tc := range []struct {
		name string
		argv []string
		want int
	}{
		{"success", []string{"true"}, 0},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3},
		{"exit 255", []string{"sh", "-c", "exit 255"}, 255},
		{"SIGKILL", []string{"sh", "-c", "kill -9 $$"}, 137},
		{"SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 143},
		{"SIGKILL with -t", []string{"-t", "--", "sh", "-c", "kill -9 $$"}, 137},
		{"exit 5 with -i -t", []string{"-i", "-t", "--", "sh", "-c", "exit 5"}, 5},
		{"exit 6 with -it", []string{"-it", "--", "sh", "-c", "exit 6"}, 6},
		{"command not found", []string{"/nonexistent/command"}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"exec", "-url", a.url}, tc.argv...)
			if !strings.HasPrefix(tc.argv[0], "-") {
				args = append([]string{"exec", "-url", a.url, "--"}, tc.argv...)
			}
			r := porthole(t, a, nil, "", args...)
			if tc.want < 0 {
				if r.code == 0 || !strings.Contains(r.stderr, "no such file or directory") {
					t.Errorf("porthole %q: exit %d, stderr %q; want a failure naming the cause", args, r.code, r.stderr)
				}
				return
			}
			if r.code != tc.want {
				t.Errorf("porthole %q: exit %d, want %d\nstderr: %s", args, r.code, tc.want, r.stderr)
			}
		})
	}
}

// TestExecStreams: stdout and stderr arrive separately and complete.
func TestExecStreams(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	var seq strings.Builder
	for i := 1; i <= 100000; i++ {
		fmt.Fprintln(&seq, i)
	}
	for _, tc := range []struct {
		name               string
		argv               []string
		wantOut, wantErr   string
		wantCode           int
		wantNotInAnyOutput string
	}{
		{"separate", []string{"sh", "-c", "echo to-out; echo to-err >&2"}, "to-out\n", "to-err\n", 0, ""},
		{"stderr only, failing", []string{"sh", "-c", "echo oops >&2; exit 4"}, "", "oops\n", 4, ""},
		{"large stdout", []string{"seq", "100000"}, seq.String(), "", 0, ""},
		{"token not in child env", []string{"sh", "-c", "echo ${PORTHOLE_TOKEN:-unset}"}, "unset\n", "", 0, a.token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"exec", "-url", a.url, "--"}, tc.argv...)
			r := porthole(t, a, nil, "", args...)
			if r.code != tc.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tc.wantCode, r.stderr)
			}
			if r.stdout != tc.wantOut {
				t.Errorf("stdout: got %d bytes %.200q, want %d bytes %.200q", len(r.stdout), r.stdout, len(tc.wantOut), tc.wantOut)
			}
			if r.stderr != tc.wantErr {
				t.Errorf("stderr: got %q, want %q", r.stderr, tc.wantErr)
			}
			if s := tc.wantNotInAnyOutput; s != "" && strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("output contains %q", s)
			}
		})
	}
}

// TestExecStdin: with -i stdin is forwarded and its EOF too; without -i the
// process gets an immediate EOF.
func TestExecStdin(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	lines := strings.Repeat("a line of input\n", 5000)
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"EOF forwarded", []string{"-i", "--", "wc", "-c"}, "abcdef", "6"},
		{"empty stdin", []string{"-i", "--", "wc", "-c"}, "", "0"},
		{"cat round trip", []string{"-i", "--", "cat"}, lines, strings.TrimSpace(lines)},
		{"no -i: stdin not forwarded", []string{"--", "wc", "-c"}, "abcdef", "0"},
		// A terminal has no half-close: the agent types ^D (stdin is not
		// a terminal here, so no raw mode; the remote terminal echoes).
		{"EOF forwarded with -t", []string{"-i", "-t", "--", "cat"}, "abc\n", "abc\r\nabc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"exec", "-url", a.url}, tc.args...)
			r := porthole(t, a, nil, tc.stdin, args...)
			if r.code != 0 {
				t.Fatalf("porthole %q: exit %d, stderr %q", args, r.code, r.stderr)
			}
			if got := strings.TrimSpace(r.stdout); got != tc.want {
				t.Errorf("porthole %q: stdout %.200q, want %.200q", args, got, tc.want)
			}
		})
	}
}

// TestWrongToken: a refused token fails clearly and never echoes a token.
func TestWrongToken(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	wrong := "wrong-" + randHex(16)
	for _, tc := range []struct {
		name  string
		token string
		args  []string
		want  string
	}{
		{"exec", wrong, []string{"exec", "-url", a.url, "--", "true"}, "invalid token"},
		{"ps", wrong, []string{"ps", "-url", a.url}, "invalid token"},
		{"kill", wrong, []string{"kill", "-url", a.url, "p1"}, "invalid token"},
		{"exec without token", "", []string{"exec", "-url", a.url, "--", "true"}, "missing token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := porthole(t, a, []string{"PORTHOLE_TOKEN=" + tc.token}, "", tc.args...)
			if r.code == 0 {
				t.Errorf("exit 0 with a bad token")
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q, want it to mention %q", r.stderr, tc.want)
			}
			for _, secret := range []string{wrong, a.token} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("output contains a token: stdout %q stderr %q", r.stdout, r.stderr)
				}
			}
		})
	}
}

// psRow finds the `porthole ps` row of the process named name.
func psRow(t *testing.T, a *agentProc, name string) (fields []string, ok bool) {
	t.Helper()
	r := porthole(t, a, nil, "", "ps", "-url", a.url)
	if r.code != 0 {
		t.Fatalf("porthole ps: exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "ID ") {
		t.Fatalf("porthole ps: no header in %q", r.stdout)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) > 1 && strings.Contains(l, " "+name+" ") {
			return f, true
		}
	}
	return nil, false
}

// TestPSAndKill: ps lists a process started with exec; kill -s TERM makes
// that exec exit 143.
func TestPSAndKill(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	name := "e2e-sleep-" + randHex(4)
	cmd := exec.Command(bin, "exec", "-url", a.url, "-name", name, "--", "sleep", "600")
	cmd.Env = append(baseEnv(), "PORTHOLE_TOKEN="+a.token)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})

	var row []string
	if !waitUntil(waitTimeout, func() bool {
		var ok bool
		row, ok = psRow(t, a, name)
		return ok
	}) {
		t.Fatalf("porthole ps never listed %s", name)
	}
	// ID PID TTY STATE ...
	id := row[0]
	if row[3] != protocol.StateRunning {
		t.Errorf("ps row %q: state %q, want %q", row, row[3], protocol.StateRunning)
	}
	if pid, err := strconv.Atoi(row[1]); err != nil || pid <= 0 {
		t.Errorf("ps row %q: bad pid", row)
	}
	if !strings.Contains(strings.Join(row, " "), `"sleep" "600"`) {
		t.Errorf("ps row %q: want the command [sleep 600]", row)
	}

	// The form: flags may follow the id.
	if r := porthole(t, a, nil, "", "kill", "-url", a.url, id, "-s", "TERM"); r.code != 0 {
		t.Fatalf("porthole kill %s -s TERM: exit %d, stderr %q", id, r.code, r.stderr)
	}
	select {
	case <-done:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.ExitCode() != 143 {
			t.Fatalf("exec of the killed sleep: %v, want exit status 143 (stderr %q)", waitErr, &stderr)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("exec did not exit within %s of kill -s TERM", waitTimeout)
	}
	if row, ok := psRow(t, a, name); !ok || row[3] != protocol.StateExited || !strings.Contains(strings.Join(row, " "), "SIGTERM") {
		t.Errorf("ps after kill: row %q, want it exited by SIGTERM", row)
	}
	if r := porthole(t, a, nil, "", "kill", "-url", a.url, "no-such-id"); r.code == 0 {
		t.Errorf("porthole kill no-such-id: exit 0, want a failure")
	}
}

// ---------------------------------------------------------------------------
// The CLI in a real terminal: a tmux pane.

// requireTmux fails (never skips) when tmux is missing: CI installs it.
func requireTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux not installed: apt-get install tmux")
	}
}

type tmux struct {
	t      *testing.T
	socket string
	env    []string
}

const pane = "e2e" // the session, and so its only pane

func (s *tmux) run(args ...string) string {
	s.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-L", s.socket}, args...)...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// newTmux starts a private tmux server whose only pane runs script (with
// /bin/sh) in a 100x30 window, and kills the server at cleanup.
func newTmux(t *testing.T, script string) *tmux {
	t.Helper()
	requireTmux(t)
	s := &tmux{t: t, socket: fmt.Sprintf("porthole-e2e-%d-%s", os.Getpid(), randHex(4))}
	s.env = append(baseEnv(), "SHELL=/bin/sh")
	if os.Getenv("TERM") == "" || os.Getenv("TERM") == "dumb" {
		s.env = append(s.env, "TERM=xterm-256color")
	}
	s.run("-f", os.DevNull, "new-session", "-d", "-s", pane, "-x", "100", "-y", "30", script)
	socketPath := s.display("#{socket_path}")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pane at the end:\n%s", s.capture())
		}
		cmd := exec.Command("tmux", "-L", s.socket, "kill-server")
		cmd.Env = s.env
		cmd.Run()
		if strings.Contains(socketPath, s.socket) {
			os.Remove(socketPath) // tmux leaves it behind
		}
	})
	return s
}

func (s *tmux) capture() string {
	cmd := exec.Command("tmux", "-L", s.socket, "capture-pane", "-p", "-J", "-t", pane)
	cmd.Env = s.env
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// typeLine types text and Enter into the pane.
func (s *tmux) typeLine(text string) {
	s.t.Helper()
	s.run("send-keys", "-t", pane, "-l", text)
	s.run("send-keys", "-t", pane, "Enter")
}

// waitFor waits until the pane shows re and returns the first match.
func (s *tmux) waitFor(re string, d time.Duration) []string {
	s.t.Helper()
	if m := s.tryWaitFor(re, d); m != nil {
		return m
	}
	s.t.Fatalf("pane did not show %q within %s:\n%s", re, d, s.capture())
	return nil
}

func (s *tmux) tryWaitFor(re string, d time.Duration) []string {
	rx := regexp.MustCompile(re)
	var m []string
	waitUntil(d, func() bool {
		m = rx.FindStringSubmatch(s.capture())
		return m != nil
	})
	return m
}

func (s *tmux) display(format string) string {
	s.t.Helper()
	return strings.TrimSpace(s.run("display-message", "-p", "-t", pane, format))
}

// localLflag returns the local mode flags of the pane's terminal.
func (s *tmux) localLflag() uint32 {
	s.t.Helper()
	path := s.display("#{pane_tty}")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		s.t.Fatalf("open pane tty: %v", err)
	}
	defer unix.Close(fd)
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		s.t.Fatalf("TCGETS %s: %v", path, err)
	}
	return tio.Lflag
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// paneScript runs `porthole exec -url URL ARGS...` in the pane and,
// once it exits, prints its exit status, whether the terminal settings are
// exactly those from before (raw mode restored), and the icanon flag; then
// keeps the pane open.
func paneScript(a *agentProc, args ...string) string {
	cli := []string{"PORTHOLE_TOKEN=" + a.token, shQuote(bin), "exec", "-url", shQuote(a.url)}
	for _, arg := range args {
		cli = append(cli, shQuote(arg))
	}
	return strings.Join([]string{
		"before=$(stty -g)",
		strings.Join(cli, " "),
		"code=$?",
		"after=$(stty -g)",
		"echo CLI-EXIT=$code",
		`if [ "$before" = "$after" ]; then echo TTY-RESTORED; else echo TTY-CHANGED; fi`,
		"echo TTY-MODE=$(stty -a | grep -Eo -- '-?icanon')",
		"sleep 3600",
	}, "; ")
}

// checkRestored waits up to d for the pane's report that the CLI exited,
// and checks the status is want (-1: any failure) and the terminal is as
// it was before the CLI started.
func (s *tmux) checkRestored(want int, d time.Duration) {
	s.t.Helper()
	m := s.waitFor(`CLI-EXIT=(\d+)\s+(TTY-\w+)\s+TTY-MODE=(\S+)`, d)
	if code, _ := strconv.Atoi(m[1]); want >= 0 && code != want || want < 0 && code == 0 {
		s.t.Errorf("CLI exit status %s, want %d", m[1], want)
	}
	if m[2] != "TTY-RESTORED" || m[3] != "icanon" {
		s.t.Errorf("terminal after the CLI exited: %s, %s; want TTY-RESTORED and icanon", m[2], m[3])
	}
	if fl := s.localLflag(); fl&unix.ICANON == 0 || fl&unix.ECHO == 0 {
		s.t.Errorf("pane terminal lflag %#x after exit: want ICANON and ECHO back", fl)
	}
}

// findProc polls /proc for a process whose argv satisfies match.
func findProc(t *testing.T, what string, match func(argv []string) bool) int {
	t.Helper()
	pid := 0
	if !waitUntil(waitTimeout, func() bool {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			n, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || len(b) == 0 {
				continue
			}
			if match(strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")) {
				pid = n
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no process %s within %s", what, waitTimeout)
	}
	return pid
}

func procGone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err != nil
}

// uniqueSleep is a sleep command line no other process has.
func uniqueSleep() []string {
	return []string{"sleep", strconv.Itoa(1_000_000 + mrand.IntN(1_000_000))}
}

func isArgv(want []string) func([]string) bool {
	return func(argv []string) bool { return strings.Join(argv, "\x00") == strings.Join(want, "\x00") }
}

// TestTerminalSession: `porthole exec -it` of a remote shell in a tmux pane:
// raw mode while attached, typing, Ctrl-C reaching the remote process, the
// window size at start and after a resize, and `exit 7` becoming the CLI's
// exit status with the terminal restored.
func TestTerminalSession(t *testing.T) {
	t.Parallel()
	requireTmux(t)
	a := startAgent(t)
	s := newTmux(t, paneScript(a, "-it", "-e", "PS1=rsh> ", "--", "/bin/sh"))
	s.waitFor(`rsh> `, waitTimeout)

	if fl := s.localLflag(); fl&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("pane terminal lflag %#x while attached: want raw (no ICANON, ECHO, ISIG)", fl)
	}

	s.typeLine("stty size")
	s.waitFor(`(?m)^30 100\s*$`, waitTimeout)

	s.typeLine("echo hel''lo-$((6*7))")
	s.waitFor(`(?m)^hello-42\s*$`, waitTimeout)

	// Ctrl-C is a byte for the remote terminal, not a signal for the CLI.
	sleep := uniqueSleep()
	s.typeLine(strings.Join(sleep, " "))
	pid := findProc(t, fmt.Sprintf("%q", sleep), isArgv(sleep))
	s.run("send-keys", "-t", pane, "C-c")
	if !waitUntil(waitTimeout, func() bool { return procGone(pid) }) {
		t.Fatalf("remote %q still runs after Ctrl-C", sleep)
	}
	s.typeLine("echo intr''-ok")
	s.waitFor(`(?m)^intr-ok\s*$`, waitTimeout)

	// Resize the window: SIGWINCH makes the CLI resize the remote terminal.
	// A detached session has no client to resize (refresh-client -C), so
	// this needs resize-window, new in tmux 2.9.
	if v := s.run("-V"); tmuxBefore(v, 2, 9) {
		t.Fatalf("%s is too old: resize-window needs tmux >= 2.9", strings.TrimSpace(v))
	}
	s.run("resize-window", "-t", pane, "-x", "120", "-y", "40")
	if got := s.display("#{pane_width}x#{pane_height}"); got != "120x40" {
		t.Fatalf("pane is %s after the resize, want 120x40", got)
	}
	// The resize request and the typed keys travel independently; type
	// again when the shell answered before the resize arrived.
	if !waitUntil(waitTimeout, func() bool {
		s.run("send-keys", "-t", pane, "-l", "stty size")
		s.run("send-keys", "-t", pane, "Enter")
		return s.tryWaitFor(`(?m)^40 120\s*$`, time.Second) != nil
	}) {
		t.Fatalf("remote terminal never became 40 120:\n%s", s.capture())
	}

	s.typeLine("exit 7")
	s.checkRestored(7, waitTimeout)
}

// tmuxBefore reports whether `tmux -V` output v is older than major.minor.
func tmuxBefore(v string, major, minor int) bool {
	m := regexp.MustCompile(`(\d+)\.(\d+)`).FindStringSubmatch(v)
	if m == nil {
		return false // "tmux master", "tmux next-3.4": new
	}
	maj, _ := strconv.Atoi(m[1])
	mnr, _ := strconv.Atoi(m[2])
	return maj < major || maj == major && mnr < minor
}

// TestTerminalExitPaths: however the session ends, the CLI reports the
// remote status (128+signal when killed) and restores the terminal.
func TestTerminalExitPaths(t *testing.T) {
	t.Parallel()
	requireTmux(t)
	sleep := uniqueSleep()
	for _, tc := range []struct {
		name   string
		args   []string
		action func(t *testing.T, a *agentProc, s *tmux)
		want   int    // -1: any failure
		pane   string // what the pane shows, a regexp
		wait   time.Duration
	}{
		{
			name: "remote kills itself with SIGTERM",
			args: []string{"--", "/bin/sh", "-c", "kill -TERM $$"},
			want: 143,
		},
		{
			name: "remote exits after output",
			args: []string{"--", "/bin/sh", "-c", "echo bye''bye; exit 3"},
			want: 3,
			pane: `(?m)^byebye\s+CLI-EXIT=3`,
		},
		{
			name: "SIGTERM to the CLI is forwarded",
			args: append([]string{"--"}, sleep...),
			action: func(t *testing.T, a *agentProc, s *tmux) {
				findProc(t, "remote sleep", isArgv(sleep))
				// Attached: the CLI has put the terminal in raw mode.
				if !waitUntil(waitTimeout, func() bool { return s.localLflag()&unix.ICANON == 0 }) {
					t.Fatal("the CLI never put the pane's terminal in raw mode")
				}
				cli := findProc(t, "porthole exec", func(argv []string) bool {
					return len(argv) > 3 && argv[0] == bin && argv[1] == "exec" && argv[3] == a.url
				})
				if err := syscall.Kill(cli, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			},
			want: 143,
		},
		{
			name: "agent shuts down",
			args: []string{"-e", "PS1=rsh> ", "--", "/bin/sh"},
			action: func(t *testing.T, a *agentProc, s *tmux) {
				s.waitFor(`rsh> `, waitTimeout)
				a.stop(t)
			},
			// Close code 1001: no pointless reattach, a clear message.
			want: 1,
			pane: `the agent is shutting down; process`,
			wait: 20 * time.Second,
		},
		{
			name: "Ctrl-D ends the remote shell",
			args: []string{"-e", "PS1=rsh> ", "--", "/bin/sh"},
			action: func(t *testing.T, a *agentProc, s *tmux) {
				s.waitFor(`rsh> `, waitTimeout)
				s.run("send-keys", "-t", pane, "C-d")
			},
			want: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := startAgent(t)
			s := newTmux(t, paneScript(a, append([]string{"-i", "-t"}, tc.args...)...))
			if tc.action != nil {
				tc.action(t, a, s)
			}
			if tc.wait == 0 {
				tc.wait = waitTimeout
			}
			s.checkRestored(tc.want, tc.wait)
			if tc.pane != "" {
				s.waitFor(tc.pane, 0)
			}
		})
	}
}
