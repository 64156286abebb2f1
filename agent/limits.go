package agent

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of the listener's connection limits (ServeOptions). Only
// connections served on the agent's own listener count: those through the
// master's tunnel are the master's to bound.
const (
	// DefaultHeaderTimeout bounds how long a connection may take to send
	// a request's headers, its first or the next.
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds how long a request's headers and body may
	// take (a body is at most MaxMessageBytes). WebSockets, once upgraded,
	// are not bound by it.
	DefaultReadTimeout = 30 * time.Second
	// DefaultIdleTimeout closes a kept-alive connection that sends no new
	// request for this long.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxPendingConns bounds the connections that are not in a
	// request (new, or idle between requests): those nobody has
	// authenticated on yet, or no longer uses.
	DefaultMaxPendingConns = 256
	// DefaultGCPercent is the agent's Go GC target (GOGC) unless $GOGC
	// is set: the heap may grow by half its live size between
	// collections instead of doubling, which keeps less garbage resident
	// per idle session (docs/performance.md, §5). The agent allocates
	// little while it streams (pooled buffers), so the extra collections
	// cost little CPU.
	DefaultGCPercent = 50
)

// pendingLimit bounds the connections that are not in a request (http
// ConnState StateNew or StateIdle): when one more arrives than max, the
// oldest of them is closed. So idle sockets, however many, cannot take
// the descriptors that real clients need; a real client sends its request
// at once and leaves the pending set. The header and idle timeouts close
// the rest.
type pendingLimit struct {
	max int
	log *slog.Logger

	mu      sync.Mutex
	seq     uint64
	pending map[net.Conn]uint64 // connection -> arrival order
	evicted int
}

// effectiveMaxPending is max, but at most a quarter of the descriptors
// this process may open (RLIMIT_NOFILE), so that pending connections
// alone never exhaust them.
func effectiveMaxPending(limit int) int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/4 < uint64(limit) {
		return max(1, int(rl.Cur/4))
	}
	return limit
}

func newPendingLimit(max int, log *slog.Logger) *pendingLimit {
	return &pendingLimit{max: max, log: log, pending: map[net.Conn]uint64{}}
}

// connState is the http.Server's ConnState hook.
func (l *pendingLimit) connState(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateNew, http.StateIdle:
		l.seq++
		l.pending[c] = l.seq
		if len(l.pending) <= l.max {
			return
		}
		var oldest net.Conn
		var first uint64
		for pc, n := range l.pending {
			if oldest == nil || n < first {
				oldest, first = pc, n
			}
		}
		delete(l.pending, oldest)
		oldest.Close()
		l.evicted++
		if l.evicted == 1 || l.evicted%1000 == 0 {
			l.log.Warn("too many connections without a request: closing the oldest", "limit", l.max, "closed", l.evicted)
		}
	default:
		delete(l.pending, c)
	}
}
