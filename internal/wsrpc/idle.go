package wsrpc

import (
	"errors"
	"net"
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

// serveRaw reads until the socket holds nothing, then parks it in the
// poller and returns; the end of the reads goes to OnReadEnd.
func (s *Stream) serveRaw() {
	for {
		err := s.readUntilIdle()
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

// errNoMessage: a RawText stream's message was taken as a JSON-RPC one
// (cannot happen).
var errNoMessage = errors.New("wsrpc: ServeRaw on a stream that decodes JSON-RPC")

// readUntilIdle handles messages until the socket holds nothing (nil)
// or the reads end (the error).
func (s *Stream) readUntilIdle() error {
	for {
		if s.fr.err != nil {
			return s.fr.err
		}
		if s.fr.bp == nil || s.fr.r == s.fr.w {
			ok, err := s.fr.fillNow()
			if err != nil || !ok {
				return err
			}
		}
		switch err := s.readMessage(nil); err {
		case errNext:
		case nil:
			return errNoMessage
		default:
			return err
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
