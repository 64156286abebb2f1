package master

import (
	"sync"
	"time"

	"github.com/porthole-dev/porthole/master/store"
)

// rateLimiter is a token bucket per machine: bytes of events a machine's
// bootstrapper may push (Options.MachineRate, MachineBurst), over all its
// connections together.
type rateLimiter struct {
	rate, burst float64
	now         func() time.Time

	mu sync.Mutex
	by map[store.Key]*bucket
}

type bucket struct {
	tokens float64 // may go negative: bytes taken ahead of the rate
	at     time.Time
}

func newRateLimiter(rate, burst int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: float64(rate), burst: float64(burst), now: now, by: map[store.Key]*bucket{}}
}

// take takes n bytes from k's bucket and returns how long the caller
// must wait before going on (0: at once).
func (l *rateLimiter) take(k store.Key, n int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.by[k]
	if b == nil {
		b = &bucket{tokens: l.burst, at: now}
		l.by[k] = b
	}
	if dt := now.Sub(b.at); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt.Seconds()*l.rate)
		b.at = now
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / l.rate * float64(time.Second))
}
