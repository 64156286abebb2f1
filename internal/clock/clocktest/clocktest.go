// Package clocktest is a fake clock for tests: time stands still until
// the test advances it, so a test that depends on a timeout cannot be
// outrun by a busy machine.
package clocktest

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

// Fake is a clock.Clock that moves only on Advance.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
	armed  chan struct{} // cap 1: a timer was armed
}

type timer struct {
	at time.Time
	f  func()
}

// New returns a fake clock set to an arbitrary fixed time.
func New() *Fake {
	return &Fake{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), armed: make(chan struct{}, 1)}
}

// Now returns the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arms a timer that calls f from the Advance that reaches
// now+d (d <= 0: from the next Advance, even of 0).
func (c *Fake) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	select {
	case c.armed <- struct{}{}:
	default:
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.timers, t)
		if i < 0 {
			return false // fired or stopped
		}
		c.timers = slices.Delete(c.timers, i, i+1)
		return true
	}
}

// Advance moves the time forward by d and calls the functions of the
// timers that are due, in deadline order, on the caller's goroutine.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*timer
	c.timers = slices.DeleteFunc(c.timers, func(t *timer) bool {
		if t.at.After(c.now) {
			return false
		}
		due = append(due, t)
		return true
	})
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *timer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
}

// Armed returns a channel that receives when a timer was armed since the
// last receive.
func (c *Fake) Armed() <-chan struct{} { return c.armed }

// Pending returns how many timers are armed and not yet due or stopped.
func (c *Fake) Pending() int { return c.Due(math.MaxInt64) }

// Due returns how many armed timers are due within d from now.
func (c *Fake) Due(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.at.Sub(c.now) <= d {
			n++
		}
	}
	return n
}

// WaitPending waits until at least n timers are armed, failing tb after
// 30 seconds.
func (c *Fake) WaitPending(tb testing.TB, n int) {
	tb.Helper()
	c.WaitDue(tb, math.MaxInt64, n)
}

// WaitDue waits until at least n armed timers are due within d, failing
// tb after 30 seconds.
func (c *Fake) WaitDue(tb testing.TB, d time.Duration, n int) {
	tb.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for c.Due(d) < n {
		select {
		case <-c.armed:
		case <-deadline.C:
			tb.Fatalf("clocktest: %d timers due within %s after 30s; want %d", c.Due(d), d, n)
		}
	}
}
