// Package testutil holds what the tests of several packages share: free
// loopback ports, waiting with a deadline, contexts bounded by the test,
// locked buffers for a process's output, a clean environment for child
// processes, config files, and the test binary standing in for porthole's
// programs (see Programs).
//
// Deadlines here are generous upper bounds (Wait): they only matter when
// something is broken, so a busy machine never turns a slow pass into a
// failure. Nothing here sleeps for a fixed time to let something happen.
package testutil

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Wait bounds anything a test awaits: an event, a process, a condition.
const Wait = 30 * time.Second

// pollEvery is how often WaitFor checks its condition.
const pollEvery = 10 * time.Millisecond

// FreePort returns a loopback TCP port nobody listened on a moment ago.
// Another process may take it before the caller binds it; callers that
// can listen themselves should listen on 127.0.0.1:0 instead.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreeAddr is FreePort as "127.0.0.1:PORT".
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
}

// Ctx returns a context cancelled when tb ends or after two Waits,
// whichever comes first: a bound for a whole test's calls.
func Ctx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), 2*Wait)
	tb.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond until it holds, failing tb after Wait. It is for
// state with no event to wait on (another process's, /proc, a pane of
// tmux); where there is a channel, use Recv.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	if !Eventually(Wait, cond) {
		tb.Fatalf("timed out after %s waiting for %s", Wait, what)
	}
}

// Eventually polls cond until it holds (true) or d has passed (false).
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
	return true
}

// Recv receives from ch, failing tb when nothing arrives within Wait or
// ch is closed without a value. Closing a chan struct{} counts as
// receiving.
func Recv[T any](tb testing.TB, what string, ch <-chan T) T {
	tb.Helper()
	timer := time.NewTimer(Wait)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		tb.Fatalf("timed out after %s waiting for %s", Wait, what)
		panic("unreachable")
	}
}

// SyncBuffer is a bytes.Buffer safe for writers (a process's stdout and
// stderr) and a test reading it meanwhile.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CleanEnv returns this process's environment without what changes how
// porthole's programs behave (CHE_*, PORTHOLE_*, proxies), tmux's
// (TMUX, TMUX_PANE) or a shell's start (ENV, BASH_ENV), then applies
// changes in order: "K=V" sets K, a bare "K" removes it.
func CleanEnv(changes ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "CHE_"), strings.HasPrefix(k, "PORTHOLE_"), strings.Contains(strings.ToLower(k), "proxy"):
		case k == "TMUX", k == "TMUX_PANE", k == "ENV", k == "BASH_ENV":
		default:
			env = append(env, kv)
		}
	}
	for _, c := range changes {
		k, _, set := strings.Cut(c, "=")
		env = removeKey(env, k)
		if set {
			env = append(env, c)
		}
	}
	return env
}

func removeKey(env []string, k string) []string {
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, k+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Config writes content to config.json in a temporary directory of tb
// and returns its path.
func Config(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatalf("write config: %v", err)
	}
	return path
}

// ServeTCP serves loopback TCP until tb ends, calling handle for each
// connection on its own goroutine (the connection is closed after it);
// it returns the port.
func ServeTCP(tb testing.TB, handle func(net.Conn)) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}
