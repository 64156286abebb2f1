package cli_test

// The harness of the end-to-end tests: porthole is the test binary
// re-executed (testutil.Programs); agents run as processes on free
// loopback ports; the CLI runs to completion with a bound.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/cli"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master/mastercli"
)

// The test binary stands in for porthole.
var programs = testutil.Programs{
	"porthole":        func(argv []string) int { return cli.Main(argv[1:], os.Environ()) },
	"porthole-master": func(argv []string) int { return mastercli.Main(argv[1:], os.Stdout, os.Stderr) },
}

// bin runs porthole: a link to the test binary.
var bin string

// waitTimeout bounds anything awaited: generous, it only matters when
// something is broken.
const waitTimeout = testutil.Wait

const pollEvery = 20 * time.Millisecond // how often an agent's health is polled

func TestMain(m *testing.M) {
	bin = filepath.Join(programs.Setup(), "porthole")
	goleak.VerifyTestMain(m, goleak.Cleanup(testutil.Exit))
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// baseEnv is this process's environment without anything that would leak
// into or confuse the processes the tests start.
var baseEnv = testutil.CleanEnv

// agentProc is a running `porthole agent`.
type agentProc struct {
	addr, url, token string
	cmd              *exec.Cmd
	logPath          string
	exited           chan struct{} // closed when the process has exited
	waitErr          error         // set before exited is closed
}

// startAgent starts an agent with a random token (and the flags extra),
// waits until it is healthy and stops it with SIGTERM at cleanup,
// expecting exit status 0.
func startAgent(t *testing.T, extra ...string) *agentProc {
	t.Helper()
	return startAgentWith(t, nil, extra...)
}

// startAgentWith is startAgent with the command line run through wrapper
// (e.g. prlimit ARGS --) and extra flags.
func startAgentWith(t *testing.T, wrapper []string, flags ...string) *agentProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		a, err := tryStartAgent(t, wrapper, flags)
		if err == nil {
			return a
		}
		// Another process may have taken the port between FreeAddr
		// closing it and the agent binding it: try another one.
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		t.Fatal(err)
	}
}

func tryStartAgent(t *testing.T, wrapper, flags []string) (*agentProc, error) {
	a := &agentProc{addr: testutil.FreeAddr(t), token: randHex(16), exited: make(chan struct{})}
	a.url = "ws://" + a.addr
	logf, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a.logPath = logf.Name()
	argv := append(append(slices.Clip(wrapper), bin, "agent", "-listen", a.addr, "-grace", "2s"), flags...)
	a.cmd = exec.Command(argv[0], argv[1:]...)
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
	case <-time.After(waitTimeout):
		a.cmd.Process.Kill()
		<-a.exited
		t.Errorf("agent did not exit within %s of SIGTERM", waitTimeout)
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

// waitUntil polls cond until it holds (true) or d passes (false).
var waitUntil = testutil.Eventually

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
