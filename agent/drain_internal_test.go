package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// A viewer that holds the ring full when the process exits does not cost
// the end of its output. With the drain and the stall bounds both on the
// fake clock, the drain's bound passes while the pump waits in a ring
// write for that viewer; the read deadline it sets used to end the
// stream at the pump's next read, with the rest of what the process had
// written still in the pipe (40,960 of 65,536 bytes here). Now the pump
// reads what the pipe holds before it stops.
func TestExitDrainNotCutByStalledViewer(t *testing.T) {
	clk := clocktest.New()
	o := Options{RingBytes: 4096, StallTimeout: 2 * time.Second, ExitDrain: time.Second, Clock: clk,
		MaxProcesses: 4, Logger: slog.New(slog.DiscardHandler)}
	o.setDefaults()
	m := newManager(&o)
	defer m.shutdown(testutil.Ctx(t), time.Second)
	const n = 65536
	// The output starts once the viewer is there (a line on stdin): were
	// it written before, the pump could drain it all into the ring with
	// no viewer to wait for.
	p, err := m.start(protocol.StartParams{Argv: []string{"sh", "-c", "read go && exec head -c 65536 /dev/zero"}})
	if err != nil {
		t.Fatal(err)
	}
	stalled, err := p.out[protocol.Stdout].NewReader(0) // paced, never reads
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if err := p.WriteStdin([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	// The process exits while the pump waits for the stalled viewer: the
	// drain bound and the stall bound are both pending.
	testutil.WaitFor(t, "the process's exit", p.hasExited)
	clk.WaitPending(t, 2)
	clk.Advance(time.Second) // the drain bound passes while the pump waits
	clk.Advance(time.Second) // the stall bound: the viewer is demoted, the pump goes on
	for {
		select {
		case <-p.done:
			if _, end := p.out[protocol.Stdout].Bounds(); end != n {
				t.Fatalf("the stream ended at %d bytes; the process wrote %d", end, n)
			}
			return
		case <-clk.Armed(): // a stall bound again: another ring's worth
			clk.Advance(2 * time.Second)
		case <-time.After(testutil.Wait):
			t.Fatal("the process's output did not end")
		}
	}
}
