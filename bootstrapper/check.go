package bootstrapper

import (
	"maps"
	"net"
	"slices"
	"time"
)

// dialTimeout bounds one check (a loopback connect is answered at once,
// unless the listener's backlog is full).
const dialTimeout = time.Second

// server is one server to check.
type server struct {
	inst int
	ref  string
	port string
	ep   Endpoint
	up   bool // last seen state (liveness after DONE)
}

func serversOf(inst int, in Installer) []*server {
	var out []*server
	for _, ref := range slices.Sorted(maps.Keys(in.Servers)) {
		ep, _ := ParsePort(in.Servers[ref].Port) // checked by ParseConfig
		out = append(out, &server{inst: inst, ref: ref, port: in.Servers[ref].Port, ep: ep, up: true})
	}
	return out
}

// isUp reports whether the server accepts a connection, as Che checks it:
// a TCP connect (or a UDP "connect", which succeeds whenever the address
// is valid) to 127.0.0.1:PORT, closed at once.
func (s *server) isUp() bool {
	c, err := net.DialTimeout(s.ep.Network, s.ep.Addr, dialTimeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func allUp(ss []*server) bool {
	for _, s := range ss {
		if !s.isUp() {
			return false
		}
	}
	return true
}

// checkSchedule says when to check an installer's servers. Che checks
// every period, the first time one period after the start. porthole
// checks at once, then waits a hundredth of the time already spent (at
// least 1 ms), up to the period: a server is seen at most 1% of its
// start-up time (or 1 ms) after its port opens, at the cost of about 500
// loopback connects in the first 5 seconds, 700 in the first 30.
type checkSchedule struct {
	period time.Duration
	fixed  bool // Che's behaviour
}

func (c checkSchedule) first() time.Duration {
	if c.fixed {
		return c.period
	}
	return 0
}

func (c checkSchedule) next(elapsed time.Duration) time.Duration {
	if c.fixed {
		return c.period
	}
	return min(c.period, max(time.Millisecond, elapsed/100))
}
