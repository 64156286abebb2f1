package cheapi

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/clock"
)

// session is one request of Che's routes, registered with the agent: ctx
// ends at the agent's shutdown, end unregisters it.
type session struct {
	ctx context.Context
	end func(error)
	log *slog.Logger
}

// conn is a WebSocket of Che's routes with the agent's limits: the
// largest message (-max-message), keepalive pings (-ping; a peer silent
// for two periods is dropped), and a bound on each write.
type conn struct {
	ws    *websocket.Conn
	log   *slog.Logger
	clk   clock.Clock
	ping  time.Duration
	wtime time.Duration

	wmu sync.Mutex // one writer at a time (gorilla allows one)

	pmu      sync.Mutex
	stopPing func() bool
	stopped  bool

	closeOnce sync.Once
	// peerClosed is closed when the peer's close frame arrived.
	peerClosed chan struct{}
	peerOnce   sync.Once
}

// upgrade completes the handshake and wraps the socket.
func (s *server) upgrade(w http.ResponseWriter, r *http.Request, sess *session) (*conn, error) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return nil, err
	}
	o := s.a.Settings()
	c := &conn{ws: ws, log: sess.log, clk: clock.Or(o.Clock), ping: o.PingInterval, wtime: o.WriteTimeout, peerClosed: make(chan struct{})}
	ws.SetReadLimit(int64(o.MaxMessageBytes))
	// Che's agents answer a close frame with an empty one (the peer reads
	// 1005, "no status"); so does porthole on Che's routes.
	ws.SetCloseHandler(func(int, string) error {
		c.peerOnce.Do(func() { close(c.peerClosed) })
		ws.WriteControl(websocket.CloseMessage, []byte{}, time.Now().Add(time.Second))
		return nil
	})
	if c.ping > 0 {
		deadline := func() time.Time { return time.Now().Add(2*c.ping + time.Second) }
		ws.SetReadDeadline(deadline())
		ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(deadline()) })
		c.pmu.Lock()
		c.stopPing = c.clk.AfterFunc(c.ping, c.keepalive)
		c.pmu.Unlock()
	}
	return c, nil
}

func (c *conn) keepalive() {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.stopped {
		return
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.wtime)); err != nil {
		return
	}
	c.stopPing = c.clk.AfterFunc(c.ping, c.keepalive)
}

// read returns the next data message.
func (c *conn) read() (int, []byte, error) {
	typ, b, err := c.ws.ReadMessage()
	if err == nil && c.ping > 0 {
		c.ws.SetReadDeadline(time.Now().Add(2*c.ping + time.Second))
	}
	return typ, b, err
}

// write sends one message; it blocks while the peer does not read, at
// most the write timeout, after which the socket is closed.
func (c *conn) write(typ int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(c.wtime))
	err := c.ws.WriteMessage(typ, b)
	if err != nil {
		c.ws.Close()
	}
	return err
}

// closeWith sends a close frame with code and reason, bounded by a
// second. gorilla lets it run beside a write in progress, so a peer that
// does not read cannot hold it up.
func (c *conn) closeWith(code int, reason string) {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

// close ends the socket and its keepalive.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.ws.Close()
		c.pmu.Lock()
		c.stopped = true
		if c.stopPing != nil {
			c.stopPing()
		}
		c.pmu.Unlock()
	})
}

// closeWait bounds the wait for the peer's answer to our close frame.
const closeWait = 5 * time.Second

// awaitPeerClose waits, bounded, until the peer answered our close frame
// (or its reads ended): closing at once with frames unread resets the
// connection, and the reset can overtake the close frame.
func (c *conn) awaitPeerClose(readDone <-chan struct{}) {
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-readDone:
	case <-c.peerClosed:
	case <-t.C:
	}
}
