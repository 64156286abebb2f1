package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/wsconn"
	"github.com/porthole-dev/porthole/protocol"
)

// forwardDialTimeout bounds the agent's connect to a forwarded port.
const forwardDialTimeout = 10 * time.Second

// serveForward carries one TCP connection to 127.0.0.1:PORT (or [::1]:PORT
// when nothing listens on 127.0.0.1) over a WebSocket (docs/protocol.md
// §19). The agent connects before the upgrade, so a port nobody listens on
// is a plain 502 naming it.
func (a *Agent) serveForward(w http.ResponseWriter, r *http.Request, s *session) {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		err = fmt.Errorf("port %q: want a TCP port 1-65535", r.PathValue("port"))
		s.finish(err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tc, err := dialLoopback(s.ctx, port)
	if err != nil {
		s.finish(err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	ws, err := a.upgradeStream(w, r, protocol.SubprotocolForward)
	if err != nil {
		tc.Close()
		s.finish(err)
		return
	}
	c := wsconn.New(ws, a.connOptions())
	log := s.log.With("port", port)
	log.Debug("forwarding")
	// Shutdown (or the session's end) closes both sides, which ends Join.
	stop := context.AfterFunc(s.ctx, func() {
		c.Close(protocol.CloseGoingAway, context.Cause(s.ctx).Error()) // first: its close frame wins
		tc.Close()
	})
	err = wsconn.Join(c, tc)
	stop()
	log.Debug("forward ended", "err", err)
	s.finish(err)
}

// streamWriteBuffers are the write buffers of byte-stream sockets, held
// only while a message is written: one frame of DefaultFrameBytes goes
// out in one write, not one per 64 KiB.
var streamWriteBuffers sync.Pool

// upgradeStream upgrades a byte-stream socket (port forwarding, file
// copy).
func (a *Agent) upgradeStream(w http.ResponseWriter, r *http.Request, subprotocol string) (*websocket.Conn, error) {
	u := a.upgrader
	u.WriteBufferSize = wsconn.DefaultFrameBytes + 16 // and the frame header
	u.WriteBufferPool = &streamWriteBuffers
	// The client's frames must fit the agent's message limit.
	h := http.Header{}
	h.Set(protocol.HeaderMaxMessage, strconv.Itoa(a.opts.MaxMessageBytes))
	return a.upgradeHeader(u, w, r, h, subprotocol)
}

// connOptions are the options of the agent's byte-stream sockets
// (port forwarding, file copy).
func (a *Agent) connOptions() wsconn.Options {
	return wsconn.Options{
		Limit:        int64(a.opts.MaxMessageBytes),
		FrameBytes:   min(wsconn.DefaultFrameBytes, a.opts.MaxMessageBytes),
		PingInterval: a.opts.PingInterval,
		WriteTimeout: a.opts.WriteTimeout,
	}
}

// dialLoopback connects to port on 127.0.0.1, or on [::1] when 127.0.0.1
// refuses (a server listening on IPv6 loopback only).
func dialLoopback(ctx context.Context, port int) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: forwardDialTimeout}
	p := strconv.Itoa(port)
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", p))
	if errors.Is(err, syscall.ECONNREFUSED) {
		if c6, err6 := d.DialContext(ctx, "tcp", net.JoinHostPort("::1", p)); err6 == nil {
			c, err = c6, nil
		}
	}
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return nil, fmt.Errorf("connect to port %d in the machine: %w", port, err)
	}
	return c.(*net.TCPConn), nil
}
