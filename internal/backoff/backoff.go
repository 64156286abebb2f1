// Package backoff is the one reconnection discipline of every porthole
// program that reconnects: after a connection that ended before it made
// progress, the wait before the next attempt grows exponentially from a
// small first delay up to a maximum (the period), with full jitter; it
// starts over only once a connection made progress (the caller says so,
// or the connection lived a given time). A clock and a random source are
// injected, so its tests are exact.
package backoff

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/clock"
)

// Options configure a Backoff. Zero values mean the documented defaults.
type Options struct {
	// First bounds the first wait after a failure: the n-th consecutive
	// failure (from 0) waits uniformly in [0, min(Max, First·2^n)).
	// Default 500ms.
	First time.Duration
	// Max is the period: no wait is longer. Default 30s; raised to First
	// if below it.
	Max time.Duration
	// Stable is how long a connection must have lived (from Connected to
	// Next) to count as progress by itself; 0: only Progress counts.
	Stable time.Duration
	// Spread bounds the wait before the very first attempt (Initial):
	// uniform in [0, Spread), so that machines started together do not
	// connect together. 0: the first attempt is at once.
	Spread time.Duration
	// Clock measures Stable and runs Wait; nil means the system clock.
	Clock clock.Clock
	// Rand returns a uniform int64 in [0, n) for n > 0; nil means
	// math/rand/v2's Int64N.
	Rand func(n int64) int64
}

// Backoff counts the consecutive failures of one connection's attempts.
// Its methods are safe for concurrent use.
type Backoff struct {
	o Options

	mu       sync.Mutex
	failures int       // consecutive attempts without progress
	since    time.Time // when the current connection came up; zero: none
}

// New returns a Backoff with no failures.
func New(o Options) *Backoff {
	if o.First <= 0 {
		o.First = 500 * time.Millisecond
	}
	if o.Max <= 0 {
		o.Max = 30 * time.Second
	}
	o.Max = max(o.Max, o.First)
	o.Clock = clock.Or(o.Clock)
	if o.Rand == nil {
		o.Rand = rand.Int64N
	}
	return &Backoff{o: o}
}

// Initial returns the wait before the first attempt: uniform in
// [0, Spread), or 0 without a Spread.
func (b *Backoff) Initial() time.Duration { return b.uniform(b.o.Spread) }

// Connected records that an attempt connected, which starts the Stable
// measure of its connection.
func (b *Backoff) Connected() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.since = b.o.Clock.Now()
}

// Progress records that the current connection made progress (e.g. an
// acknowledgement advanced): the next wait starts over from First.
func (b *Backoff) Progress() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = 0
}

// Next is called once an attempt failed or its connection ended. It
// returns the wait before the next attempt: uniform in
// [0, min(Max, First·2^n)), n the failures since the last progress
// (a connection that lived Stable is progress), and counts this one.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	if !b.since.IsZero() && b.o.Stable > 0 && b.o.Clock.Now().Sub(b.since) >= b.o.Stable {
		b.failures = 0
	}
	b.since = time.Time{}
	n := b.failures
	b.failures++
	b.mu.Unlock()
	return b.uniform(b.step(n))
}

// Period returns a wait of about one period, uniform in [Max/2, Max),
// for a failure that retrying soon will not fix (a refused token). It
// counts as a failure.
func (b *Backoff) Period() time.Duration {
	b.mu.Lock()
	b.since = time.Time{}
	b.failures++
	b.mu.Unlock()
	return b.o.Max - b.o.Max/2 + b.uniform(b.o.Max/2)
}

// Failures returns the consecutive failures since the last progress.
func (b *Backoff) Failures() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures
}

// Wait waits d on the Backoff's clock (a timer even for d <= 0, so a
// fake clock sees every wait). It returns nil once d has passed, or ctx's
// error (its cause) if ctx ends first.
func (b *Backoff) Wait(ctx context.Context, d time.Duration) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	done := make(chan struct{})
	stop := b.o.Clock.AfterFunc(d, func() { close(done) })
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		stop()
		return context.Cause(ctx)
	}
}

// step is min(Max, First·2^n).
func (b *Backoff) step(n int) time.Duration {
	if n >= 62 {
		return b.o.Max
	}
	s := b.o.First << n
	if s <= 0 || s>>n != b.o.First || s > b.o.Max {
		return b.o.Max
	}
	return s
}

// uniform returns a uniform duration in [0, d), 0 for d <= 0.
func (b *Backoff) uniform(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(b.o.Rand(int64(d)))
}
