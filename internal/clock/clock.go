// Package clock is the time in which porthole measures its stall bounds,
// keepalives and deadlines: the system clock, or in tests a fake one
// (package clocktest) that moves only when the test says so.
package clock

import "time"

// Clock tells the time and runs functions later.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f on its own goroutine once d has passed, unless
	// stop is called first; stop reports whether it prevented the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// Real is the system clock.
var Real Clock = real{}

// Or returns c, or Real when c is nil: for options whose zero value
// means real time.
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

type real struct{}

func (real) Now() time.Time { return time.Now() }

func (real) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
