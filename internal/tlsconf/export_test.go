package tlsconf

import "time"

// SetClock replaces r's clock (tests step it past CheckEvery).
func SetClock(r *Reloader, now func() time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = now
}
