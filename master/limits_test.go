package master

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol/che"
)

// newLimitState is a state over a real store in a temp dir.
func newLimitState(t *testing.T, tailBytes, tailTotal int) (*state, *store.Bolt) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "porthole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := newState(st, slog.New(slog.DiscardHandler), tailBytes, tailTotal)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.close(ctx); err != nil {
			t.Error(err)
		}
		st.Close()
	})
	return s, st
}

// pushLines ingests n log lines of size bytes for machine name and waits
// until they are durable.
func pushLines(t *testing.T, s *state, name string, from, n, size int) {
	t.Helper()
	k := store.Key{Runtime: "ws:env:me", Machine: name}
	var gen uint64
	for i := range n {
		e := ev(func(e *che.Event) {
			e.MachineName, e.Stream, e.Seq, e.Text = name, che.StreamStdout, uint64(from+i), strings.Repeat("x", size)
		})
		g, _, err := s.ingest(k, "/api/websocket", "", che.MethodInstallerLog, e)
		if err != nil {
			t.Fatal(err)
		}
		gen = g
	}
	if err := s.waitCommitted(gen); err != nil {
		t.Fatal(err)
	}
}

// tailBytesOf sums the data of k's in-memory tail, as the old code kept it
// too (512 entries whatever their size).
func tailBytesOf(s *state, name string) (n, entries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.machines[store.Key{Runtime: "ws:env:me", Machine: name}]
	for _, t := range m.tail {
		n += len(t.data)
	}
	return n, len(m.tail)
}

// H1: a machine pushing long lines keeps at most TailBytes of them in
// memory, and all machines together at most TailTotalBytes; what left
// memory is still read, from the store.
func TestTailBoundedByBytes(t *testing.T) {
	const line, perMachine, total = 64 << 10, 256 << 10, 600 << 10
	s, _ := newLimitState(t, perMachine, total)
	pushLines(t, s, "a", 1, 40, line) // 2.5 MiB
	if n, entries := tailBytesOf(s, "a"); n > perMachine || entries == 0 {
		t.Errorf("machine a: %d bytes in %d entries in memory; want at most %d, and some", n, entries, perMachine)
	}
	// A line larger than the bound is not kept in memory.
	pushLines(t, s, "a", 41, 1, perMachine+1)
	if n, _ := tailBytesOf(s, "a"); n > 0 {
		t.Errorf("machine a: %d bytes in memory after a line over the bound; want 0", n)
	}
	for _, name := range []string{"b", "c", "d"} {
		pushLines(t, s, name, 1, 8, line)
	}
	sum := 0
	for _, name := range []string{"a", "b", "c", "d"} {
		n, _ := tailBytesOf(s, name)
		sum += n
	}
	if sum > total {
		t.Errorf("%d bytes in memory for all machines; want at most %d", sum, total)
	}
	s.mu.Lock()
	accounted := s.tailN
	s.mu.Unlock()
	if accounted != sum {
		t.Errorf("accounted %d bytes; the tails hold %d", accounted, sum)
	}
	// Every entry is still there, from memory or from the store.
	var seqs []uint64
	err := s.entries(context.Background(), store.Key{Runtime: "ws:env:me", Machine: "a"}, 0, 0, func(seq uint64, data []byte) bool {
		seqs = append(seqs, seq)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 41 || seqs[0] != 1 || seqs[40] != 41 {
		t.Errorf("machine a's entries: %d, from %v; want 41 from 1", len(seqs), seqs[:min(1, len(seqs))])
	}
}

// M1: a machine the store cannot hold (a name past bbolt's key limit, as
// a token minted before names were bounded may carry) does not block the
// others: their commits land; the old committer retried the whole batch
// forever.
func TestUnstorableMachineDoesNotBlockOthers(t *testing.T) {
	s, st := newLimitState(t, DefaultTailBytes, DefaultTailTotalBytes)
	bad := store.Key{Runtime: "ws:env:me", Machine: strings.Repeat("m", 33_000)}
	e := ev(func(e *che.Event) { e.MachineName, e.Stream, e.Seq = bad.Machine, che.StreamStdout, 1 })
	if _, _, err := s.ingest(bad, "/api/websocket", "", che.MethodInstallerLog, e); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pushLines(t, s, "good", 1, 3, 10)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the good machine's lines were not committed within 30 s")
	}
	last, err := st.LastSeq(store.Key{Runtime: "ws:env:me", Machine: "good"})
	if err != nil || last != 3 {
		t.Errorf("good machine's last seq = %d, %v; want 3", last, err)
	}
}

// The per-machine rate: a burst at once, then MachineRate bytes per
// second, per machine.
func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(1000, 4000, func() time.Time { return now })
	a, b := store.Key{Runtime: "w:e:o", Machine: "a"}, store.Key{Runtime: "w:e:o", Machine: "b"}
	if d := l.take(a, 4000); d != 0 {
		t.Errorf("the burst waits %v; want 0", d)
	}
	if d := l.take(a, 500); d != 500*time.Millisecond {
		t.Errorf("past the burst: wait %v; want 500ms", d)
	}
	if d := l.take(b, 4000); d != 0 {
		t.Errorf("another machine waits %v; want 0 (its own bucket)", d)
	}
	now = now.Add(time.Second) // 1000 back: 500 ahead
	if d := l.take(a, 1000); d != 500*time.Millisecond {
		t.Errorf("after 1 s: wait %v; want 500ms", d)
	}
	now = now.Add(time.Hour)
	if d := l.take(a, 4000); d != 0 {
		t.Errorf("after an hour: wait %v; want 0 (refilled to the burst, no more)", d)
	}
	if d := l.take(a, 1); d == 0 {
		t.Error("the bucket refilled past the burst")
	}
}
