package entrypoint_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/entrypoint"
)

// TestWork runs the worker in this process: the chained command's exit
// code is the worker's, a command that cannot start is 127, and neither
// the agent's children nor the chained command see the secrets or the
// worker role.
func TestWork(t *testing.T) {
	t.Setenv("PORTHOLE_TOKEN", "secret")
	t.Setenv("PORTHOLE_MACHINE_TOKEN", "machine-secret")
	t.Setenv(entrypoint.EnvRole, entrypoint.RoleWorker)
	tests := []struct {
		name       string
		command    []string
		noAuth     bool // no token and not insecure: the agent refuses to start
		wantCode   int
		wantErr    error
		wantStderr string
	}{
		{name: "exit code", command: []string{"/bin/sh", "-c", "exit 3"}, wantCode: 3},
		{name: "killed by a signal", command: []string{"/bin/sh", "-c", "kill -TERM $$"}, wantCode: 128 + int(syscall.SIGTERM)},
		{name: "environment", command: []string{"/bin/sh", "-c", `test -z "$PORTHOLE_TOKEN$PORTHOLE_MACHINE_TOKEN$` + entrypoint.EnvRole + `"`}, wantCode: 0},
		{name: "not found", command: []string{"/nonexistent/cmd"}, wantCode: 127, wantStderr: "porthole entrypoint: "},
		{name: "no token", command: []string{"/bin/true"}, noAuth: true, wantCode: 1, wantErr: agent.ErrNoToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			stderr, err := os.CreateTemp(t.TempDir(), "stderr")
			if err != nil {
				t.Fatal(err)
			}
			defer stderr.Close()
			o := agent.RunOptions{Options: agent.Options{InsecureNoAuth: !tc.noAuth}}
			o.Listener, o.Grace = ln, time.Second
			code, err := entrypoint.Work(t.Context(), entrypoint.WorkerOptions{Agent: o, Command: tc.command, Stderr: stderr})
			if code != tc.wantCode || !errors.Is(err, tc.wantErr) {
				t.Errorf("Work = %d, %v; want %d, %v", code, err, tc.wantCode, tc.wantErr)
			}
			b, _ := os.ReadFile(stderr.Name())
			if !strings.HasPrefix(string(b), tc.wantStderr) || (tc.wantStderr == "" && len(b) > 0) {
				t.Errorf("stderr %q; want it to start with %q", b, tc.wantStderr)
			}
			if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
				c.Close()
				t.Error("the listener is still open after Work")
			}
		})
	}
}

// TestWorkServesUntilSignal: without a command the worker serves until a
// forwarded signal, then shuts down with exit code 0.
func TestWorkServesUntilSignal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := &logWatch{want: "entrypoint agent started", seen: make(chan struct{})}
	o := agent.RunOptions{Options: agent.Options{InsecureNoAuth: true, Logger: slog.New(slog.NewTextHandler(started, nil))}}
	o.Listener = ln
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := entrypoint.Work(context.Background(), entrypoint.WorkerOptions{Agent: o})
		done <- result{code, err}
	}()
	select {
	case <-started.seen: // logged once the worker forwards signals
	case r := <-done:
		t.Fatalf("Work returned before a signal: %d, %v", r.code, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not start")
	}
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case r := <-done:
		if r.code != 0 || r.err != nil {
			t.Errorf("Work = %d, %v; want 0, nil", r.code, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not stop on SIGUSR1")
	}
	if !strings.Contains(started.String(), "signal=") {
		t.Errorf("the stop was not logged:\n%s", started.String())
	}
}

// logWatch is a log sink that closes seen once a line holds want.
type logWatch struct {
	want string
	seen chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !bytes.Contains(w.buf.Bytes(), []byte(w.want)) && bytes.Contains(p, []byte(w.want)) {
		defer close(w.seen)
	}
	return w.buf.Write(p)
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
