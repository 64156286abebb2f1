package client_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/protocol"
)

// Attaching to a process that has exited already is an attach: the agent
// sends started, exited and its close at once, and Attach must not report
// the exit as its own error (`porthole exec -- sh -c 'exit 3'` then exited
// 1). Wait reports the exit. The race shows when the machine is busy (this
// test failed in 5 of 5 runs under two CPU hogs before the fix; make
// stress runs it that way).
func TestAttachToExitedProcess(t *testing.T) {
	const token = "attach-test-token"
	_, addr := agenttest.Start(t, agent.Options{Token: token})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: "ws://" + addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", "exit 3"}}, &info); err != nil {
		t.Fatal(err)
	}
	first, err := c.Attach(ctx, info.ID, client.Offsets{})
	if err != nil {
		t.Fatalf("first attach: %v", err)
	}
	first.Wait() // the process has exited: every later attach gets it all at once
	first.Close()
	for i := range 50 {
		p, err := c.Attach(ctx, info.ID, client.Offsets{})
		if err != nil {
			t.Fatalf("attach %d to the exited process: %v; want the process, its exit from Wait", i, err)
		}
		go io.Copy(io.Discard, p.Stderr)
		io.Copy(io.Discard, p.Stdout)
		var xe *client.ExitError
		if err := p.Wait(); !errors.As(err, &xe) || xe.Code != 3 {
			t.Fatalf("attach %d: Wait = %v; want exit code 3", i, err)
		}
		p.Close()
	}
}
