package wsrpc

import (
	"errors"
	"net"
	"time"
)

// An idle raw socket holds no goroutine (ServeRaw): its reader reads
// while the peer sends and, once the socket holds nothing, leaves it to
// a Poller, one goroutine for every idle socket, which starts a reader
// again when the peer sends. A goroutine costs its stack (2 KiB at
// least) and its descriptor whether it runs or waits; an idle attached
// terminal would keep one for its socket (docs/performance.md, "Lean
// session").

// ServeRaw reads a RawText stream on goroutines of its own until the
// reads end (Options.OnReadEnd tells), as a goroutine looping on
// ReadObject would. While the socket holds nothing to read, no goroutine
// waits for it: Options.Idle does. Without it, or without the direct
// reader (Options.ReadDirect), one goroutine reads with ReadObject.
func (s *Stream) ServeRaw() {
	if s.idle == nil {
		go s.ReadObject(nil)
		return
	}
	go s.serveRaw()
}

// serveRaw reads until the socket holds nothing, waits for more if it
// read a message (until a keepalive ping finds it has read none since
// the previous one: typing then starts no goroutine per keystroke, whose
// start through the poller would cost context switches and CPU on the
// keystroke's path), then parks the socket in the poller and returns.
// The end of the reads goes to OnReadEnd.
func (s *Stream) serveRaw() {
	for {
		n, err := s.readUntilIdle()
		if err == nil && n > 0 {
			s.active.Store(true)
			var more bool
			if more, err = s.linger(); more {
				continue
			}
		}
		if err == nil {
			var parked bool
			if parked, err = s.park(); parked {
				return
			}
			if err == nil { // the poller cannot take it: wait here
				if err = s.fr.wait(); err == nil {
					continue
				}
			}
		}
		s.fr.fail(err)
		s.readEnded(err)
		return
	}
}

// linger waits for the socket to become readable: true when it did,
// false when a keepalive ping woke it to park (idleCheck).
func (s *Stream) linger() (bool, error) {
	s.lingering.Store(true)
	ok, err := s.fr.read(true)
	s.lingering.Store(false)
	if err != nil && s.woken(err) {
		return false, nil
	}
	return ok, err
}

// idleCheck runs at each keepalive ping. A parked socket has no reader
// waiting under its read deadline: one reads now, and ends the reads if
// it passed. A reader that waits for more after a message, and has read
// none since the previous ping, is woken to park the socket: its read
// deadline is set in the past, which the reader tells from its real one
// (woken).
func (s *Stream) idleCheck() {
	if s.unpark(false) {
		go s.serveRaw()
		return
	}
	if !s.active.Swap(false) && s.lingering.Load() {
		s.ws.SetReadDeadline(time.Unix(1, 0))
	}
}

// woken reports whether err is a timeout of a read on a ServeRaw stream
// whose read deadline has not passed: idleCheck's wake-up, not the
// peer's silence. The deadline is then set back.
func (s *Stream) woken(err error) bool {
	var ne net.Error
	if s.idle == nil || !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	if d := s.readDeadline; !d.IsZero() && !time.Now().Before(d) {
		return false
	}
	s.ws.SetReadDeadline(s.readDeadline)
	return true
}

// errNoMessage: a RawText stream's message was taken as a JSON-RPC one
// (cannot happen).
var errNoMessage = errors.New("wsrpc: ServeRaw on a stream that decodes JSON-RPC")

// readUntilIdle handles messages until the socket holds nothing (nil)
// or the reads end (the error); n is how many messages it handled.
func (s *Stream) readUntilIdle() (n int, err error) {
	for {
		if s.fr.err != nil {
			return n, s.fr.err
		}
		if s.fr.bp == nil || s.fr.r == s.fr.w {
			if n > 0 {
				return n, nil // linger's read looks first, without a read more here
			}
			ok, err := s.fr.fillNow()
			if err != nil || !ok {
				return n, err
			}
		}
		switch err := s.readMessage(nil); err {
		case errNext:
			n++
		case errIdle: // control frames only
			return n, nil
		case nil:
			return n, errNoMessage
		default:
			return n, err
		}
	}
}

// park leaves the socket to the poller, unless the stream is closing
// (net.ErrClosed): true when the poller took it. The registration is
// made while the descriptor cannot be closed (RawConn.Control), and Close
// takes it back (unpark) before it closes the socket.
func (s *Stream) park() (bool, error) {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if s.closing {
		return false, net.ErrClosed
	}
	var ok bool
	err := s.raw.Control(func(fd uintptr) {
		if ok = s.idle.add(int(fd), s.unparked); ok {
			s.parkedFD = int(fd)
		}
	})
	if err != nil {
		return false, err
	}
	s.parked = ok
	return ok, nil
}

// unparked runs on a goroutine of its own once the parked socket is
// readable (or hung up): it reads again.
func (s *Stream) unparked() {
	s.idleMu.Lock()
	s.parked = false
	s.idleMu.Unlock()
	s.serveRaw()
}

// unpark takes the socket back from the poller: true when it was parked
// and the caller must now start serveRaw. closing marks the stream
// closing first (Close), so that it is never parked again.
func (s *Stream) unpark(closing bool) bool {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if closing {
		s.closing = true
	}
	if !s.parked || !s.idle.remove(s.parkedFD) {
		return false // not parked, or the poller has just started a reader
	}
	s.parked = false
	return true
}
