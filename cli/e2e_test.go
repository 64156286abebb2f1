package cli_test

// End-to-end tests of the porthole program (the test binary re-executed,
// see harness_test.go): every test starts its own agent process on a free
// loopback port, and the terminal tests drive `porthole exec -it` inside
// a real terminal, a tmux pane on a private tmux server (tmux_test.go):
// typing, resizing the window and reading the pane back.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	r := porthole(t, nil, nil, "", "version")
	if r.code != 0 {
		t.Fatalf("porthole version: exit %d, stderr %q", r.code, r.stderr)
	}
	if want := "(protocol 1.2)"; protocol.Version != "1.2" || !strings.Contains(r.stdout, want) {
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
		{"unknown flag", []string{"exec", "-no-such-flag", "--", "true"}, "flag provided but not defined: -no-such-flag"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"kill without id", []string{"kill"}, "kill needs one process id"},
		{"kill with bad signal", []string{"kill", "-s", "NOPE", "p1"}, "-s"},
		{"attach without id", []string{"attach"}, "attach needs one process id"},
		{"no listener without master", []string{"agent", "-listen", "none"}, "-listen"},
		{"runtime id without master", []string{"agent", "-runtime-id", "w:e:o"}, "-runtime-id needs -master"},
		{"che shell without che", []string{"agent", "-che-shell", "/bin/sh"}, "-che-shell needs -che"},
		{"che log bound not positive", []string{"agent", "-che", "-che-log-bytes", "0"}, "-che-log-bytes 0: must be positive"},
		{"GC percent not positive", []string{"agent", "-gc-percent", "-1"}, "-gc-percent -1: must be positive"},
		{"bad port scope", []string{"agent", "-ports", "mine"}, `-ports "mine": want all or own`},
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
			if n := strings.Count(r.stderr, tc.want); n != 1 {
				t.Errorf("porthole %q: stderr %q, want it to say %q once (%d times)", tc.args, r.stderr, tc.want, n)
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

	// -o json: the agent's process infos, with RSS sampled.
	r := porthole(t, a, nil, "", "ps", "-url", a.url, "-o", "json")
	var infos []protocol.ProcessInfo
	if err := json.Unmarshal([]byte(r.stdout), &infos); err != nil || r.code != 0 {
		t.Fatalf("ps -o json: exit %d, %v: %q", r.code, err, r.stdout)
	}
	if i := slices.IndexFunc(infos, func(p protocol.ProcessInfo) bool { return p.ID == id }); i < 0 || infos[i].RSSBytes == 0 || infos[i].Name != name {
		t.Errorf("ps -o json: no running %s with its RSS in %+v", id, infos)
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

	// Typed ahead of the prompt, a line is echoed by the remote terminal
	// before the shell prints its prompt, so the output can follow "rsh> "
	// on the same line: the patterns allow it.
	s.typeLine("stty size")
	s.waitFor(`(?m)^(?:rsh> )*30 100\s*$`, waitTimeout)

	s.typeLine("echo hel''lo-$((6*7))")
	s.waitFor(`(?m)^(?:rsh> )*hello-42\s*$`, waitTimeout)

	// Ctrl-C is a byte for the remote terminal, not a signal for the CLI.
	sleep := uniqueSleep()
	s.typeLine(strings.Join(sleep, " "))
	pid := findProc(t, fmt.Sprintf("%q", sleep), isArgv(sleep))
	s.run("send-keys", "-t", pane, "C-c")
	if !waitUntil(waitTimeout, func() bool { return procGone(pid) }) {
		t.Fatalf("remote %q still runs after Ctrl-C", sleep)
	}
	s.typeLine("echo intr''-ok")
	s.waitFor(`(?m)^(?:rsh> )*intr-ok\s*$`, waitTimeout)

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
		return s.tryWaitFor(`(?m)^(?:rsh> )*40 120\s*$`, time.Second) != nil
	}) {
		t.Fatalf("remote terminal never became 40 120:\n%s", s.capture())
	}

	s.typeLine("exit 7")
	s.checkRestored(7, waitTimeout)
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
			s.checkRestored(tc.want, waitTimeout)
			if tc.pane != "" {
				s.waitFor(tc.pane, 0)
			}
		})
	}
}

// -log-format json: every line the agent logs is one JSON object, with
// the fields a log pipeline indexes (time, level, msg, and the process's).
func TestAgentJSONLogs(t *testing.T) {
	a := startAgent(t, "-log-format", "json")
	if r := porthole(t, a, nil, "", "exec", "-url", a.url, "--", "sh", "-c", "exit 4"); r.code != 4 {
		t.Fatalf("exec: exit %d; stderr %s", r.code, r.stderr)
	}
	a.stop(t)
	var started, exited bool
	for line := range strings.Lines(a.log()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", line, err)
		}
		if rec["time"] == nil || rec["level"] == nil {
			t.Fatalf("no time or level: %q", line)
		}
		switch rec["msg"] {
		case "process started":
			started = rec["argv0"] == "sh" && rec["id"] != nil
		case "process exited":
			exited = rec["status"] != nil
		}
	}
	if !started || !exited {
		t.Fatalf("process started/exited lines with their fields: %v/%v; log:\n%s", started, exited, a.log())
	}
}

// -metrics-listen serves the agent's Prometheus metrics on their own
// address (not the agent's, which keeps its token check): processes by
// state, started, output bytes sent.
func TestAgentMetrics(t *testing.T) {
	maddr := testutil.FreeAddr(t)
	a := startAgent(t, "-metrics-listen", maddr)
	if r := porthole(t, a, nil, "", "exec", "-url", a.url, "--", "echo", "metrics"); r.code != 0 || r.stdout != "metrics\n" {
		t.Fatalf("exec: %+v", r)
	}
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	get := func(name, state string) float64 {
		f := fams[name]
		if f == nil {
			t.Fatalf("no %s", name)
		}
		for _, m := range f.Metric {
			if state != "" && (len(m.Label) == 0 || m.Label[0].GetValue() != state) {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
		t.Fatalf("no %s{state=%q}", name, state)
		return 0
	}
	if n := get("porthole_agent_processes_started_total", ""); n != 1 {
		t.Errorf("processes started %v; want 1", n)
	}
	if n := get("porthole_agent_output_bytes_total", ""); n != float64(len("metrics\n")) {
		t.Errorf("output bytes %v; want %d", n, len("metrics\n"))
	}
	if n := get("porthole_agent_processes", "exited"); n != 1 {
		t.Errorf("exited processes %v; want 1", n)
	}
	if resp, err := http.Get("http://" + a.addr + "/metrics"); err != nil || resp.StatusCode == 200 {
		t.Errorf("/metrics on the agent's own address: %v %v; want it not served there", resp, err)
	} else {
		resp.Body.Close()
	}
}

// dialAgent connects the client library to a, for the test's life.
func dialAgent(t *testing.T, a *agentProc) (context.Context, *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	c, err := client.Dial(ctx, client.Options{URL: a.url, Token: a.token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ctx, c
}

// stallsSeen reports whether the agent serving metrics on maddr demoted a
// viewer for stalling.
func stallsSeen(maddr string) bool {
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "porthole_agent_stalls_total "); ok && v != "0" {
			return true
		}
	}
	return false
}

// A pipe session is never demoted: its reader stalls for 20 times
// -stall-timeout once the agent's ring is full, yet no viewer is demoted,
// and every byte arrives, exit 0.
func TestExecPipeHeldWhole(t *testing.T) {
	const size = 64000000 // beyond loopback's socket buffers
	const stall = 50 * time.Millisecond
	maddr := testutil.FreeAddr(t)
	a := startAgent(t, "-ring", "4096", "-stall-timeout", stall.String(), "-metrics-listen", maddr)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command(bin, "exec", "-url", a.url, "--", "head", "-c", strconv.Itoa(size), "/dev/zero")
	cmd.Env = append(baseEnv(), "PORTHOLE_TOKEN="+a.token)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = pw, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()

	ctx, c := dialAgent(t, a)
	// The client asked to be held, and the ring is full: from here on the
	// process waits for this reader, which reads nothing.
	if !waitUntil(waitTimeout, func() bool {
		ps, err := c.List(ctx)
		return err == nil && len(ps) == 1 && ps[0].Stdout.End > 4096 &&
			strings.Contains(a.log(), "action=attach raw=false hold=true")
	}) {
		t.Fatalf("no held attach with a full ring; log:\n%s", a.log())
	}
	// The stall itself (20 bounds long): what is tested, not a wait for
	// an event. A reader that is not held is demoted within one bound.
	<-time.After(20 * stall)
	if stallsSeen(maddr) {
		t.Fatal("a viewer was demoted: the pipe's reader was not held")
	}
	n, _ := io.Copy(io.Discard, pr)
	if err := cmd.Wait(); err != nil || n != size {
		t.Fatalf("exec: %v, %d of %d bytes; stderr: %s", err, n, size, &stderr)
	}
}

// A pipe session that got a gap anyway (here `porthole attach` of a
// process whose output overflowed the ring before anyone attached) does
// not end as if its stream had been whole: it names the lost bytes and
// exits 1.
func TestAttachLostOutputFails(t *testing.T) {
	a := startAgent(t, "-ring", "4096")
	ctx, c := dialAgent(t, a)
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"head", "-c", "65536", "/dev/zero"}}, &info); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(waitTimeout, func() bool {
		got, err := c.Get(ctx, info.ID)
		return err == nil && got.ExitCode != nil
	}) {
		t.Fatal("the process never exited")
	}
	r := porthole(t, a, nil, "", "attach", "-url", a.url, info.ID)
	if r.code != 1 || len(r.stdout) != 4096 || !strings.Contains(r.stderr, "61440 bytes of its output were lost") {
		t.Fatalf("attach after an overflow: exit %d, %d bytes out, stderr %q; want 1, the 4096 kept, the 61440 lost named", r.code, len(r.stdout), r.stderr)
	}
}
