package wsrpc

import (
	"errors"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// AckPings makes the pong to each of the peer's pings an acknowledgement:
// it is sent only once ack returns nil, and ack runs on the reading
// goroutine (inside ReadObject), after every message read before the ping
// was handled. porthole-master answers a bootstrapper's ping once what it
// read is committed (docs/bootstrapper.md 5.2). An error from ack ends the
// reads with it. Call it before reading.
func (s *Stream) AckPings(ack func() error) {
	s.ack = ack // for ReadDirect's reader (read.go)
	s.ws.SetPingHandler(func(data string) error {
		s.extendReadDeadline() // a ping is a sign of life
		if err := ack(); err != nil {
			return err
		}
		err := s.control(websocket.PongMessage, []byte(data), time.Now().Add(s.opts.WriteTimeout))
		// As gorilla's own ping handler: a pong that cannot be sent
		// because the socket is closing, or timed out, is not a read error.
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil
		}
		return err
	})
}

// extendReadDeadline gives the peer two more ping intervals (and a second)
// to send something, when the stream keeps alive.
func (s *Stream) extendReadDeadline() {
	if s.opts.PingInterval > 0 {
		s.setReadDeadline(time.Now().Add(2*s.opts.PingInterval + time.Second))
	}
}

// setReadDeadline sets the socket's read deadline, and remembers it for
// a reader that lingers (idle.go). Only the reading goroutine calls it,
// once the stream is made.
func (s *Stream) setReadDeadline(t time.Time) {
	s.readDeadline = t
	s.ws.SetReadDeadline(t)
}
