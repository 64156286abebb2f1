package agent_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/protocol"
)

func TestChildEnvironment(t *testing.T) {
	t.Setenv("PORTHOLE_TOKEN", token)
	t.Setenv("PORTHOLE_MACHINE_TOKEN", "machine-secret")
	t.Setenv("CHE_MACHINE_TOKEN", "che-secret")
	t.Setenv("PORTHOLE_TEST_INHERITED", "yes")
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	out, _, err := run(t, c, protocol.StartParams{Argv: []string{"env"}, Env: []string{"EXTRA=1", "PORTHOLE_TEST_INHERITED=overridden"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := string(out)
	for _, secret := range []string{token, "machine-secret", "che-secret"} {
		if strings.Contains(env, secret) {
			t.Fatalf("a token (%s) leaked into a child's environment", secret)
		}
	}
	for _, want := range []string{"EXTRA=1\n", "PORTHOLE_TEST_INHERITED=overridden\n"} {
		if !strings.Contains(env, want) {
			t.Fatalf("env lacks %q", want)
		}
	}
	out, _, _ = run(t, c, protocol.StartParams{Argv: []string{"sh", "-c", "echo $TERM"}, TTY: true}, nil)
	if strings.TrimSpace(string(out)) != "xterm-256color" {
		t.Fatalf("TERM in a terminal = %q", out)
	}
	out, _, _ = run(t, c, protocol.StartParams{Argv: []string{"pwd"}, Cwd: "/tmp"}, nil)
	if string(out) != "/tmp\n" {
		t.Fatalf("pwd = %q", out)
	}
}

func TestStartErrors(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	ctx := ctxT(t)
	cases := []struct {
		name    string
		spec    protocol.StartParams
		mention string
	}{
		{"no such command", protocol.StartParams{Argv: []string{"no-such-command-xyz"}}, "no-such-command-xyz"},
		{"bad cwd", protocol.StartParams{Argv: []string{"true"}, Cwd: "/no/such/dir"}, "/no/such/dir"},
		{"bad env", protocol.StartParams{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, "env[0]"},
		{"bad user", protocol.StartParams{Argv: []string{"true"}, User: "no-such-user-xyz"}, "no-such-user-xyz"},
		{"huge size", protocol.StartParams{Argv: []string{"true"}, TTY: true, Size: protocol.WindowSize{Rows: 20000, Cols: 80}}, "rows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Call(ctx, protocol.MethodStart, tc.spec, nil)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("start = %v; want an error naming %q", err, tc.mention)
			}
		})
	}
}

func TestRunAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root; CI runs as root")
	}
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	out, _, err := run(t, c, protocol.StartParams{Argv: []string{"id", "-u"}, User: "nobody"}, nil)
	if err != nil || strings.TrimSpace(string(out)) != "65534" {
		t.Fatalf("id -u as nobody = %q, %v", out, err)
	}
}

func TestInfoSamplesAndRetention(t *testing.T) {
	clk := clocktest.New()
	const retention = time.Hour
	ta := startAgent(t, agent.Options{Retention: retention, Clock: clk})
	c := ta.dial(t)
	ctx := ctxT(t)
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Name: "spin", Argv: []string{"sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; read x"}}, &info); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := c.Get(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != protocol.StateRunning || got.RSSBytes == 0 || got.Name != "spin" {
			t.Fatalf("get = %+v", got)
		}
		if got.CPUSeconds > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no CPU time sampled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Kill(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	var w protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodWait, protocol.IDParams{ID: info.ID}, &w); err != nil || w.Signal != "KILL" || w.ExitedAt == nil {
		t.Fatalf("wait = %+v, %v", w, err)
	}
	// Kept for the retention period, measured by the agent's clock, then
	// forgotten.
	clk.WaitDue(t, retention, 1)
	if _, err := c.Get(ctx, info.ID); err != nil {
		t.Fatalf("exited process gone before its retention: %v", err)
	}
	clk.Advance(retention)
	if _, err := c.Get(ctx, info.ID); err == nil || !strings.Contains(err.Error(), "no process") {
		t.Fatalf("get after the retention = %v; want no process", err)
	}
}

func TestRemoveAndList(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	ctx := ctxT(t)
	var running, done protocol.ProcessInfo
	c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sleep", "30"}}, &running)
	c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"true"}}, &done)
	c.Call(ctx, protocol.MethodWait, protocol.IDParams{ID: done.ID}, nil)
	if err := c.Call(ctx, protocol.MethodRemove, protocol.IDParams{ID: running.ID}, nil); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("remove running = %v", err)
	}
	if err := c.Call(ctx, protocol.MethodRemove, protocol.IDParams{ID: done.ID}, nil); err != nil {
		t.Fatal(err)
	}
	ps, err := c.List(ctx)
	if err != nil || len(ps) != 1 || ps[0].ID != running.ID {
		t.Fatalf("list = %+v, %v", ps, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c.Kill(sctx, running.ID)
}
