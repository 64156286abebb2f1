package backoff_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/internal/backoff"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// top is a random source that always returns the top of the range, so
// each wait is its bound less 1ns; bounds records each range asked.
type top struct{ bounds []time.Duration }

func (r *top) rand(n int64) int64 {
	r.bounds = append(r.bounds, time.Duration(n))
	return n - 1
}

// The bound of each wait doubles from First up to Max and starts over
// only after progress: Progress, or a connection that lived Stable.
func TestNext(t *testing.T) {
	const ms = time.Millisecond
	type step struct {
		op    string        // next, progress, up (Connected), advance, period, initial
		d     time.Duration // advance: how far
		bound time.Duration // next, period, initial: the range asked of Rand (0: none)
	}
	cases := []struct {
		name  string
		o     backoff.Options
		steps []step
	}{
		{"doubles to the period", backoff.Options{First: 100 * ms, Max: 1000 * ms}, []step{
			{op: "next", bound: 100 * ms}, {op: "next", bound: 200 * ms}, {op: "next", bound: 400 * ms},
			{op: "next", bound: 800 * ms}, {op: "next", bound: 1000 * ms}, {op: "next", bound: 1000 * ms},
		}},
		{"defaults", backoff.Options{}, []step{
			{op: "next", bound: 500 * ms}, {op: "next", bound: time.Second}, {op: "next", bound: 2 * time.Second},
			{op: "next", bound: 4 * time.Second}, {op: "next", bound: 8 * time.Second}, {op: "next", bound: 16 * time.Second},
			{op: "next", bound: 30 * time.Second}, {op: "next", bound: 30 * time.Second},
		}},
		{"max below first", backoff.Options{First: time.Second, Max: ms}, []step{
			{op: "next", bound: time.Second}, {op: "next", bound: time.Second},
		}},
		{"progress starts over", backoff.Options{First: 100 * ms, Max: time.Second}, []step{
			{op: "next", bound: 100 * ms}, {op: "next", bound: 200 * ms},
			{op: "progress"}, {op: "next", bound: 100 * ms}, {op: "next", bound: 200 * ms},
		}},
		{"a short connection is a failure", backoff.Options{First: 100 * ms, Max: time.Second, Stable: 5 * time.Second}, []step{
			{op: "next", bound: 100 * ms},
			{op: "up"}, {op: "advance", d: 5*time.Second - 1}, {op: "next", bound: 200 * ms},
			{op: "up"}, {op: "next", bound: 400 * ms},
		}},
		{"a stable connection is progress", backoff.Options{First: 100 * ms, Max: time.Second, Stable: 5 * time.Second}, []step{
			{op: "next", bound: 100 * ms}, {op: "next", bound: 200 * ms},
			{op: "up"}, {op: "advance", d: 5 * time.Second}, {op: "next", bound: 100 * ms},
			// time without a connection is not a connection's life
			{op: "advance", d: time.Hour}, {op: "next", bound: 200 * ms},
		}},
		{"no Stable: only Progress", backoff.Options{First: 100 * ms, Max: time.Second}, []step{
			{op: "next", bound: 100 * ms}, {op: "up"}, {op: "advance", d: time.Hour}, {op: "next", bound: 200 * ms},
		}},
		{"period", backoff.Options{First: 100 * ms, Max: time.Second}, []step{
			{op: "period", bound: 500 * ms}, {op: "next", bound: 200 * ms},
		}},
		{"initial without spread", backoff.Options{}, []step{{op: "initial"}, {op: "next", bound: 500 * ms}}},
		{"initial with spread", backoff.Options{Spread: 10 * time.Second}, []step{{op: "initial", bound: 10 * time.Second}, {op: "next", bound: 500 * ms}}},
		{"huge failure counts", backoff.Options{First: time.Hour, Max: 1 << 62}, func() []step {
			var s []step
			for n := range 70 {
				b := time.Duration(1 << 62)
				if n < 21 { // 1h·2^20 < 2^62ns < 1h·2^21
					b = time.Hour << n
				}
				s = append(s, step{op: "next", bound: b})
			}
			return s
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New()
			r := &top{}
			o := tc.o
			o.Clock, o.Rand = clk, r.rand
			b := backoff.New(o)
			for i, s := range tc.steps {
				r.bounds = nil
				var got time.Duration
				switch s.op {
				case "next":
					got = b.Next()
				case "period":
					got = b.Period()
				case "initial":
					got = b.Initial()
				case "progress":
					b.Progress()
				case "up":
					b.Connected()
				case "advance":
					clk.Advance(s.d)
				}
				switch s.op {
				case "next", "initial":
					want := max(s.bound-1, 0)
					if got != want || (s.bound > 0 && (len(r.bounds) != 1 || r.bounds[0] != s.bound)) {
						t.Fatalf("step %d (%s): wait %s, asked Rand %v; want %s from [0, %s)", i, s.op, got, r.bounds, want, s.bound)
					}
				case "period":
					if len(r.bounds) != 1 || r.bounds[0] != s.bound || got != o.Max-1 {
						t.Fatalf("step %d (period): wait %s, asked Rand %v; want %s from Max/2 + [0, %s)", i, got, r.bounds, o.Max-1, s.bound)
					}
				}
			}
		})
	}
}

// A zero draw waits nothing: full jitter reaches down to 0.
func TestFullJitterReachesZero(t *testing.T) {
	b := backoff.New(backoff.Options{Rand: func(int64) int64 { return 0 }})
	for range 10 {
		if d := b.Next(); d != 0 {
			t.Fatalf("Next = %s with a zero draw; want 0", d)
		}
	}
	if b.Failures() != 10 {
		t.Fatalf("Failures = %d; want 10", b.Failures())
	}
}

// Wait returns once its time has passed on the clock, or with ctx's
// cause, stopping its timer.
func TestWait(t *testing.T) {
	clk := clocktest.New()
	b := backoff.New(backoff.Options{Clock: clk})
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background(), time.Second) }()
	clk.WaitPending(t, 1)
	clk.Advance(time.Second - 1)
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v before its time", err)
	default:
	}
	clk.Advance(1)
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v; want nil", err)
	}

	cause := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() { done <- b.Wait(ctx, time.Hour) }()
	clk.WaitPending(t, 1)
	cancel(cause)
	if err := <-done; !errors.Is(err, cause) {
		t.Fatalf("Wait after cancel = %v; want %v", err, cause)
	}
	if n := clk.Pending(); n != 0 {
		t.Fatalf("%d timers left after a cancelled Wait; want 0", n)
	}
	go func() { done <- b.Wait(context.Background(), 0) }()
	clk.WaitPending(t, 1) // a zero wait is a timer too
	clk.Advance(0)
	if err := <-done; err != nil {
		t.Fatalf("Wait(0) = %v; want nil", err)
	}
	if err := b.Wait(ctx, 0); !errors.Is(err, cause) {
		t.Fatalf("Wait(0) on an ended ctx = %v; want %v", err, cause)
	}
}
