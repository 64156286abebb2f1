package tunnel

import (
	"net"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/clock"
)

// NewConnClock is NewConn with read deadlines measured by clk.
func NewConnClock(ws *websocket.Conn, clk clock.Clock) net.Conn { return newConn(ws, clk) }

// CopyBuffersInUse is how many proxy copy buffers are taken.
func CopyBuffersInUse() int64 { return copyBuffersOut.Load() }

// SetShrinkAfter sets how long a proxied session waits, quiet after a
// burst, before shrinking its stream, until the test ends.
func SetShrinkAfter(t interface{ Cleanup(func()) }, d time.Duration) {
	old := shrinkAfter
	shrinkAfter = d
	t.Cleanup(func() { shrinkAfter = old })
}

// Shrinks is how many times proxied sessions have shrunk their stream.
func Shrinks() int64 { return shrinks.Load() }

// DropDataConns closes s's open data connections, as a network that
// drops them would (the session goes on).
func DropDataConns(s *Session) {
	s.dial.mu.Lock()
	conns := make([]*dataConn, 0, len(s.dial.conns))
	for c := range s.dial.conns {
		conns = append(conns, c)
	}
	s.dial.mu.Unlock()
	for _, c := range conns {
		c.Conn.Close() // the socket only: the proxy notices and closes c
	}
}

// Settled reports whether s has no data connection pending or being
// dialled ahead.
func Settled(s *Session) bool {
	s.dial.mu.Lock()
	defer s.dial.mu.Unlock()
	return len(s.dial.pending) == 0 && s.dial.refilling == 0
}

// ExpiredID returns an id s stopped waiting for, or "".
func ExpiredID(s *Session) string {
	s.dial.mu.Lock()
	defer s.dial.mu.Unlock()
	for id, why := range s.dial.gone {
		if strings.HasPrefix(why, "expired") {
			return id
		}
	}
	return ""
}
