package tunnel

// Data connections (dial-back): a protocol switch the master proxies (an
// attach socket, a port forward) is carried by a TCP (or TLS) connection
// of its own that the agent dials back to the master when asked through
// the tunnel, instead of by a stream of the tunnel. On the agent it is an ordinary accepted kernel
// socket (its fast path and direct reader apply); on the master it is
// copied to the client's connection with pooled buffers. The tunnel stays
// the control channel, and the fallback: an agent that does not announce
// data connections, or whose dial-back fails, is served through a stream
// as before. A session keeps maxSpares dialled ahead, so that a socket
// opens without the dial-back's round trips. docs/protocol.md §4.4, "Data
// connections".
//
//	master                                    agent
//	  ── POST /.porthole/tunnel/dial (stream) ──▶  (X-Porthole-Dial-Id: ID)
//	  ◀── GET <tunnel URL>, Upgrade: porthole-data, machine token, ID ──
//	  ── 101 Switching Protocols ──▶
//	  ◀── 200 (stream: the data connection is up) ──
//	  ── the proxied request, then bytes both ways (data connection) ──▶

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The names of the data connection's protocol.
const (
	// DialPath is the control request with which the master asks the
	// agent, through the tunnel, to dial a data connection. Serve answers
	// it on the tunnel only, never on the agent's own listener.
	DialPath = "/.porthole/tunnel/dial"
	// HeaderDialID carries a data connection's id: in the control request
	// and in the agent's data handshake.
	HeaderDialID = "X-Porthole-Dial-Id"
	// HeaderFeatures lists, in an agent's tunnel handshake, what its
	// tunnel supports beyond streams: FeatureData. A master does not ask
	// an agent that does not announce it (an agent older than data
	// connections).
	HeaderFeatures = "X-Porthole-Tunnel-Features"
	// FeatureData: the agent dials data connections back when asked.
	FeatureData = "data"
	// UpgradeData is the Upgrade token of a data handshake.
	UpgradeData = "porthole-data"
)

// Limits of data connections.
const (
	// MaxPendingDials bounds the data connections one session has asked
	// for and not yet received; beyond, a proxied request goes through a
	// stream of the tunnel.
	MaxPendingDials = 64
	// DefaultDialTimeout is how long the master waits for a data
	// connection before it falls back to a stream (AcceptOptions).
	DefaultDialTimeout = 5 * time.Second
	// dialFailuresOff is how many dial-backs in a row may fail before a
	// session stops asking (a master behind a balancer the agent's data
	// connections reach another instance of, a proxy that refuses them).
	dialFailuresOff = 3
	// maxSpares is how many data connections a session keeps dialled
	// ahead, idle (as frp's work connections): a proxied socket takes one
	// and asks for another, so that opening it costs no dial-back round
	// trips unless several open at once. An idle spare holds a socket at
	// both ends and, on the agent, a goroutine waiting for its request.
	maxSpares = 2
	// goneIDs is how many ids a session remembers after their use or
	// expiry, to name why a data handshake with one is refused.
	goneIDs = 64
	// maxDialID bounds an id's length (the master's are 26 characters).
	maxDialID = 64
)

// errNoDial is dialBack's error when the session does not use data
// connections: not enabled, not announced, or given up.
var errNoDial = errors.New("data connections are not used with this agent")

// errTooManyDials is dialBack's error when MaxPendingDials are pending:
// the request goes through a stream, and it is no failure of the agent.
var errTooManyDials = fmt.Errorf("%d data connections already asked for and not received (the limit)", MaxPendingDials)

// DataError is a refused data handshake: the status to answer and why.
type DataError struct {
	Status int
	Reason string
}

func (e *DataError) Error() string { return e.Reason }

// dialState is the master's side of a session's data connections.
type dialState struct {
	timeout time.Duration // 0: not used
	onPath  func(data bool)
	log     *slog.Logger

	off      atomic.Bool  // not used any more (404, failures in a row)
	failures atomic.Int32 // dial-backs failed in a row
	warned   atomic.Bool  // a failure has been logged at warn level

	ctx    context.Context // ends with the session: spare dials end
	cancel context.CancelFunc
	wg     sync.WaitGroup // spare dials in flight

	mu        sync.Mutex
	closed    bool
	pending   map[string]chan *dataConn // asked for, not yet received
	gone      map[string]string         // recent ids no longer pending: why
	goneQ     []string                  // gone's ids, oldest first
	conns     map[*dataConn]struct{}    // open data connections, spares included
	spares    []*dataConn               // dialled ahead, idle
	refilling int                       // spare dials in flight
}

// forgetLocked moves id from pending to gone, saying why; it reports
// whether id was pending.
func (d *dialState) forgetLocked(id, why string) bool {
	if _, ok := d.pending[id]; !ok {
		return false
	}
	delete(d.pending, id)
	if len(d.goneQ) >= goneIDs {
		delete(d.gone, d.goneQ[0])
		d.goneQ = d.goneQ[1:]
	}
	d.gone[id] = why
	d.goneQ = append(d.goneQ, id)
	return true
}

// Pending is how many data connections the session waits for (for
// tests: it never exceeds MaxPendingDials, and is 0 when none is asked).
func (s *Session) Pending() int {
	s.dial.mu.Lock()
	defer s.dial.mu.Unlock()
	return len(s.dial.pending)
}

// DataConns is how many data connections of the session carry a socket
// (spares, and ones being dialled, not counted).
func (s *Session) DataConns() int {
	s.dial.mu.Lock()
	defer s.dial.mu.Unlock()
	n := 0
	for c := range s.dial.conns {
		if c.used {
			n++
		}
	}
	return n
}

// DataRetries is how many requests were sent again over a stream because
// their data connection failed, or stayed silent for the dial-back
// timeout, before the agent answered.
func (s *Session) DataRetries() int64 { return s.dataRetries.Load() }

// Spares is how many idle data connections the session keeps dialled.
func (s *Session) Spares() int {
	s.dial.mu.Lock()
	defer s.dial.mu.Unlock()
	return len(s.dial.spares)
}

// dialBack returns a data connection: a spare one if the session has one
// alive, otherwise one it asks the agent for now, waiting until the agent
// refused, failed, or did not dial back within the session's dial
// timeout (or ctx ended). Either way it asks for spares to replace the
// ones taken.
func (s *Session) dialBack(ctx context.Context) (net.Conn, error) {
	d := &s.dial
	if d.timeout <= 0 || d.off.Load() {
		return nil, errNoDial
	}
	defer s.refill()
	c := s.takeSpare()
	if c == nil {
		var err error
		if c, err = s.dialNow(ctx); err != nil {
			return nil, err
		}
	}
	d.mu.Lock()
	c.used = true
	d.mu.Unlock()
	return c, nil
}

// takeSpare returns a spare data connection that is still open and
// silent, or nil; the dead ones it finds on the way are closed.
func (s *Session) takeSpare() *dataConn {
	d := &s.dial
	for {
		d.mu.Lock()
		n := len(d.spares)
		if n == 0 {
			d.mu.Unlock()
			return nil
		}
		c := d.spares[n-1]
		d.spares = d.spares[:n-1]
		d.mu.Unlock()
		if idleOpen(c.Conn) {
			return c
		}
		c.Close()
	}
}

// refill asks for as many spare data connections as are missing, on
// goroutines that closeData waits for.
func (s *Session) refill() {
	d := &s.dial
	d.mu.Lock()
	n := maxSpares - len(d.spares) - d.refilling
	if d.closed || d.off.Load() || n <= 0 {
		d.mu.Unlock()
		return
	}
	d.refilling += n
	d.wg.Add(n)
	d.mu.Unlock()
	for range n {
		go func() {
			defer d.wg.Done()
			c, err := s.dialNow(d.ctx)
			d.mu.Lock()
			d.refilling--
			keep := err == nil && !d.closed
			if keep {
				d.spares = append(d.spares, c)
			}
			d.mu.Unlock()
			if err == nil && !keep {
				c.Close()
			}
		}()
	}
}

// dialNow asks the agent for a data connection and waits for it.
func (s *Session) dialNow(ctx context.Context) (*dataConn, error) {
	d := &s.dial
	id := rand.Text()
	ch := make(chan *dataConn, 1)
	d.mu.Lock()
	switch {
	case d.closed:
		d.mu.Unlock()
		return nil, ErrClosed
	case len(d.pending) >= MaxPendingDials:
		d.mu.Unlock()
		return nil, errTooManyDials
	}
	d.pending[id] = ch
	d.mu.Unlock()

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	err := s.askDial(ctx, id)
	received := false
	if err == nil {
		select {
		case c := <-ch:
			if c != nil {
				d.failures.Store(0)
				return c, nil
			}
			received = true
			err = errors.New("the data connection failed while switching protocols")
		case <-ctx.Done():
			err = fmt.Errorf("the data connection did not arrive: %w", context.Cause(ctx))
		}
	}
	d.mu.Lock()
	pending := d.forgetLocked(id, "expired: the master stopped waiting for it")
	d.mu.Unlock()
	if !pending && !received { // the handshake took it: its outcome comes at once
		if c := <-ch; c != nil {
			c.Close()
		}
	}
	// A client that went away is no failure of the dial-back.
	if parent.Err() == nil && !errors.Is(err, errNoDial) && d.failures.Add(1) >= dialFailuresOff && !d.off.Swap(true) {
		d.log.Warn("data connections given up for this tunnel after failures in a row; proxying through the tunnel", "failures", dialFailuresOff, "err", err)
	}
	return nil, err
}

// askDial sends the control request for data connection id and waits
// for the agent's answer, which comes once the connection is up.
func (s *Session) askDial(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent.tunnel"+DialPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set(HeaderDialID, id)
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("asking the agent to dial back: %w", s.closedError(err))
	}
	msg := readBody(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		// An agent that announced data connections yet does not serve
		// them: not asked again.
		s.dial.off.Store(true)
		return fmt.Errorf("%w (the agent answered %d to %s)", errNoDial, resp.StatusCode, DialPath)
	}
	return fmt.Errorf("the agent could not dial back: %d %s", resp.StatusCode, msg)
}

// noteDial records how a connection to the agent went: over a data
// connection, or over a stream because of err.
func (s *Session) noteDial(data bool, err error) {
	if s.dial.onPath != nil {
		s.dial.onPath(data)
	}
	switch {
	case data, s.dial.timeout <= 0:
	case errors.Is(err, errNoDial), !s.dial.warned.CompareAndSwap(false, true):
		s.dial.log.Debug("proxying through the tunnel", "err", err)
	default:
		s.dial.log.Warn("data connection failed; proxying through the tunnel (later failures are logged at debug level)", "err", err)
	}
}

// AcceptData takes r, an agent's data handshake (Upgrade: porthole-data)
// that the caller has authenticated as this session's machine, when its
// id (HeaderDialID) is one the session asked for and still waits for:
// the id is used up, the connection hijacked and answered 101, and handed
// to the waiting request. Otherwise it returns a *DataError saying why,
// and the caller answers it. With a context carrying WithDetach, the
// connection counts as the caller's until it is closed.
func (s *Session) AcceptData(w http.ResponseWriter, r *http.Request) error {
	d := &s.dial
	if !strings.EqualFold(upgradeType(r.Header), UpgradeData) {
		return &DataError{http.StatusBadRequest, "a data connection switches to " + UpgradeData + " (Connection: Upgrade, Upgrade: " + UpgradeData + ")"}
	}
	id := r.Header.Get(HeaderDialID)
	if id == "" || len(id) > maxDialID {
		return &DataError{http.StatusBadRequest, "a data connection needs its id in " + HeaderDialID + " (at most 64 characters)"}
	}
	d.mu.Lock()
	ch, ok := d.pending[id]
	if ok {
		d.forgetLocked(id, "already used: an id carries one data connection")
	}
	why, closed := d.gone[id], d.closed
	d.mu.Unlock()
	switch {
	case closed:
		if ok {
			ch <- nil // its waiter learns at once
		}
		return &DataError{http.StatusConflict, "data connection " + id + ": the tunnel it was asked on has ended"}
	case !ok && why != "":
		return &DataError{http.StatusGone, "data connection " + id + " refused: " + why}
	case !ok:
		return &DataError{http.StatusForbidden, "data connection " + id + " refused: this machine's tunnel did not ask for it (unknown id)"}
	}
	conn, err := s.switchData(w)
	if err != nil {
		ch <- nil
		return err
	}
	dc := &dataConn{Conn: conn, s: s}
	if detach := DetachFrom(r.Context()); detach != nil {
		dc.ended = detach()
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		dc.Close()
		ch <- nil
		return nil // hijacked: nothing more to answer
	}
	d.conns[dc] = struct{}{}
	d.mu.Unlock()
	ch <- dc
	return nil
}

// switchData hijacks a data handshake's connection and answers 101.
func (s *Session) switchData(w http.ResponseWriter) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, &DataError{http.StatusInternalServerError, "cannot switch protocols on this connection: " + err.Error()}
	}
	if brw.Reader.Buffered() > 0 { // the agent speaks only once answered
		conn.Close()
		return nil, errors.New("the agent sent bytes behind its data handshake")
	}
	conn.SetWriteDeadline(time.Now().Add(s.dial.timeout))
	_, err = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+UpgradeData+"\r\n\r\n")
	conn.SetWriteDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// closeData ends the session's data connections, refuses any more, and
// waits for the spare dials in flight, which end at once.
func (s *Session) closeData() {
	d := &s.dial
	d.mu.Lock()
	d.closed = true
	d.spares = nil
	conns := make([]*dataConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	d.cancel()
	for _, c := range conns {
		c.Close()
	}
	d.wg.Wait()
}

// dataConn is a data connection on the master: closing it forgets it.
type dataConn struct {
	net.Conn
	s     *Session
	once  sync.Once
	ended func() // the handshake's caller's (WithDetach), or nil
	used  bool   // carries a socket (not a spare); guarded by s.dial.mu
}

func (c *dataConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		err = c.Conn.Close()
		c.s.dial.mu.Lock()
		delete(c.s.dial.conns, c)
		c.s.dial.mu.Unlock()
		if c.ended != nil {
			c.ended()
		}
	})
	return err
}

// SyscallConn is the kernel socket's, for the proxy's poll copy; a TLS
// connection has none.
func (c *dataConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
