package agent_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// A start with hold keeps every byte for its held attach, however much
// the process printed before it came (a 4 KiB ring, 1 MB of output): the
// attach reads all of it, in order, and the start's holders go with it
// (else the process could never finish).
func TestStartHoldKeepsOutputForAttach(t *testing.T) {
	ta := startAgent(t, agent.Options{RingBytes: 4096})
	c := ta.dial(t)
	ctx := ctxT(t)
	const size = 1_000_000
	p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"head", "-c", "1000000", "/dev/zero"}, Hold: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got, err := io.ReadAll(p.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(got) != size || !bytes.Equal(got, make([]byte, size)) || len(p.Gaps()) != 0 {
		t.Fatalf("%d bytes, gaps %v; want %d zeros, no gap", len(got), p.Gaps(), size)
	}
}

// A start with hold whose attach never comes holds the output for
// StartHoldTimeout on the agent's clock, then lets it drain.
func TestStartHoldTimesOut(t *testing.T) {
	clk := clocktest.New()
	ta := startAgent(t, agent.Options{RingBytes: 4096, Clock: clk})
	c := ta.dial(t)
	ctx := ctxT(t)
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"head", "-c", "1000000", "/dev/zero"}, Hold: true}, &info); err != nil {
		t.Fatal(err)
	}
	get := func() protocol.ProcessInfo {
		got, err := c.Get(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Held: the ring fills and nothing is evicted.
	if !testutil.Eventually(10*time.Second, func() bool { return get().Stdout.End == 4096 }) {
		t.Fatalf("the held ring: %+v; want 4096 bytes kept from 0", get().Stdout)
	}
	if g := get(); g.Stdout.Start != 0 || g.State != protocol.StateRunning {
		t.Fatalf("held: %+v, state %s; want nothing evicted, running", g.Stdout, g.State)
	}
	clk.WaitDue(t, agent.StartHoldTimeout, 1)
	clk.Advance(agent.StartHoldTimeout)
	var done protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodWait, protocol.IDParams{ID: info.ID}, &done); err != nil {
		t.Fatal(err)
	}
	if done.Stdout.End != 1_000_000 || done.Stdout.Start == 0 || done.ExitCode == nil || *done.ExitCode != 0 {
		t.Fatalf("after the hold timed out: %+v exit %v; want all 1000000 bytes through the ring, exit 0", done.Stdout, done.ExitCode)
	}
}
