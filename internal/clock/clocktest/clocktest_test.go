package clocktest

import (
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Timers fire in deadline order from the Advance that reaches them, never
// before; a stopped timer never fires.
func TestFake(t *testing.T) {
	c := New()
	start := c.Now()
	var fired []string
	arm := func(name string, d time.Duration) func() bool {
		return c.AfterFunc(d, func() { fired = append(fired, name) })
	}
	arm("b", 2*time.Second)
	arm("a", time.Second)
	stopC := arm("c", 3*time.Second)
	arm("d", 10*time.Second)
	if n := c.Due(2 * time.Second); n != 2 {
		t.Fatalf("Due(2s) = %d; want 2", n)
	}
	if !stopC() {
		t.Fatal("stop of an armed timer = false; want true")
	}
	if stopC() {
		t.Fatal("second stop = true; want false")
	}
	steps := []struct {
		advance time.Duration
		want    []string
		pending int
	}{
		{999 * time.Millisecond, nil, 3},
		{time.Millisecond, []string{"a"}, 2},
		{5 * time.Second, []string{"a", "b"}, 1},
		{4 * time.Second, []string{"a", "b", "d"}, 0},
	}
	for i, st := range steps {
		c.Advance(st.advance)
		if !slices.Equal(fired, st.want) || c.Pending() != st.pending {
			t.Fatalf("step %d: fired %v, %d pending; want %v, %d", i, fired, c.Pending(), st.want, st.pending)
		}
	}
	if got := c.Now().Sub(start); got != 10*time.Second {
		t.Fatalf("Now moved by %s; want 10s", got)
	}
	c.WaitPending(t, 0)
}
