package bootstrapper

import (
	"testing"
	"time"
)

// The default flush lasts long enough for three reconnection attempts:
// the first at once, the next two a period apart, the last with a period
// to deliver. It used to be 10 s whatever the period: one retry.
func TestFlushTimeoutCoversThreeAttempts(t *testing.T) {
	for _, c := range []struct{ reconnect, want time.Duration }{
		{0, 10 * time.Second}, // no reconnection: as before
		{time.Second, 10 * time.Second},
		{10 * time.Second, 30 * time.Second}, // Che's default period
		{time.Minute, 3 * time.Minute},
	} {
		if got := FlushTimeout(c.reconnect); got != c.want {
			t.Errorf("FlushTimeout(%s) = %s; want %s", c.reconnect, got, c.want)
		}
		o := Options{ReconnectPeriod: c.reconnect}
		o.defaults()
		if o.FlushTimeout != c.want {
			t.Errorf("with a reconnect period of %s, the default flush is %s; want %s", c.reconnect, o.FlushTimeout, c.want)
		}
	}
}
