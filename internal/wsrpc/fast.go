package wsrpc

import (
	"net"
	"syscall"
	"time"
)

// The fast path of a live viewer (agent/output.go): a binary message
// written by the goroutine that has the data, without waiting, straight
// to the kernel socket in one sendmsg, gorilla's writer bypassed (a
// server's frames are unmasked and this stream negotiates no
// compression, so a frame is a header and the payload). It needs a kernel
// socket: over TLS or a tunnel stream TryWriteBinary always declines and
// the caller writes as usual.

// rawConn returns the kernel socket under c, or nil when c is not one.
func rawConn(c net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// CanTryWrite reports whether TryWriteBinary can ever send: the stream is
// on a kernel socket.
func (s *Stream) CanTryWrite() bool { return s.raw != nil }

// maxFastHead bounds TryWriteBinary's head.
const maxFastHead = 16

// TryWriteBinary sends one binary message, head then body, if it can do
// so without waiting. It never blocks: it declines (sent false, nothing
// written) when the stream has no kernel socket, another write holds the
// stream, a close frame was sent, or the socket's buffer takes nothing.
// When the buffer takes only part of the frame, the rest is kept and
// sent before anything else: sent is true, whole false, and the caller
// must call Flush soon (the client sees the message only then).
func (s *Stream) TryWriteBinary(head, body []byte) (sent, whole bool) {
	if s.raw == nil || len(head) > maxFastHead {
		return false, false
	}
	select {
	case s.wl <- struct{}{}:
	default:
		return false, false
	}
	defer s.unlock()
	if s.pending != nil || s.closeSent {
		return false, false
	}
	var hb [10 + maxFastHead]byte
	h := frameHeader(hb[:0], len(head)+len(body))
	h = append(h, head...)
	var n int
	var serr error
	if err := s.raw.Write(func(fd uintptr) bool {
		n, serr = sendNow(fd, h, body)
		return true // never wait
	}); err != nil || serr != nil || n <= 0 {
		return false, false
	}
	total := len(h) + len(body)
	if n == total {
		return true, true
	}
	rest := make([]byte, 0, total-n)
	if n < len(h) {
		rest = append(append(rest, h[n:]...), body...)
	} else {
		rest = append(rest, body[n-len(h):]...)
	}
	s.pending = rest
	return true, false
}

// frameHeader appends the header of an unmasked, final binary frame of
// n payload bytes (RFC 6455 5.2).
func frameHeader(b []byte, n int) []byte {
	const finBinary = 0x80 | 0x2
	switch {
	case n < 126:
		return append(b, finBinary, byte(n))
	case n <= 0xffff:
		return append(b, finBinary, 126, byte(n>>8), byte(n))
	default:
		b = append(b, finBinary, 127)
		for i := 7; i >= 0; i-- {
			b = append(b, byte(uint64(n)>>(8*i)))
		}
		return b
	}
}

// Flush finishes a frame TryWriteBinary began, waiting up to the write
// timeout. Without one it does nothing.
func (s *Stream) Flush() error {
	s.wl <- struct{}{}
	defer s.unlock()
	if err := s.flushLocked(time.Now().Add(s.opts.WriteTimeout)); err != nil {
		s.ws.Close()
		return err
	}
	return nil
}

func (s *Stream) flushLocked(deadline time.Time) error {
	if s.pending == nil {
		return nil
	}
	nc := s.ws.NetConn()
	nc.SetWriteDeadline(deadline)
	_, err := nc.Write(s.pending)
	s.pending = nil
	return err
}
