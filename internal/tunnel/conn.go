package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/clock"
)

// chunkSize is the largest piece of a message the reader hands over at
// once; buffers of this size are pooled.
const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// errTextMessage ends a Conn whose peer sent a text message.
var errTextMessage = errors.New("tunnel: text message on a binary stream")

// conn is the net.Conn over a WebSocket that NewConn returns.
type conn struct {
	ws *websocket.Conn

	// wmu serializes writes: gorilla allows one writer at a time.
	wmu       sync.Mutex
	dlMu      sync.Mutex
	writeDL   time.Time // guarded by dlMu
	readDL    deadline
	closed    chan struct{}
	closeOnce sync.Once

	// The reader goroutine (pump) reads messages and hands their bytes to
	// Read in chunks; it ends when the socket fails or is closed.
	chunks   chan chunk
	pumpDone chan struct{}
	pumpErr  error // set before pumpDone is closed

	// rmu serializes Read; it guards the fields below.
	rmu     sync.Mutex
	pending []byte  // unread rest of the current chunk
	buf     *[]byte // the pooled buffer pending points into
}

// chunk is n bytes of a message in a pooled buffer.
type chunk struct {
	buf *[]byte
	n   int
}

// NewConn adapts a WebSocket to a net.Conn carrying a byte stream. Write
// sends b as one binary message; Read returns the bytes of the binary
// messages in order, with message boundaries irrelevant. A text message
// from the peer is a protocol error that ends the Conn. Write and Read are
// each safe to call from several goroutines.
//
// Deadlines follow net.Conn: an expired deadline makes the blocked or next
// call fail with an error wrapping os.ErrDeadlineExceeded. A read deadline
// can be extended after it expired and reading goes on; an expired write
// deadline may have cut a message short, so, as with crypto/tls, the Conn
// is broken after a Write timed out. Close sends a close frame (1000) when
// it can and closes the socket.
//
// NewConn starts one goroutine that reads the socket (so pings are
// answered even while nothing calls Read); Close waits for it. The caller
// must not use ws any more, except for its Subprotocol and addresses.
func NewConn(ws *websocket.Conn) net.Conn { return newConn(ws, nil) }

// newConn is NewConn with read deadlines measured by clk (nil: the real
// clock). Write deadlines are the socket's, in real time.
func newConn(ws *websocket.Conn, clk clock.Clock) *conn {
	c := &conn{
		ws:       ws,
		closed:   make(chan struct{}),
		chunks:   make(chan chunk),
		pumpDone: make(chan struct{}),
	}
	c.readDL.cancel = make(chan struct{})
	c.readDL.clock = clock.Or(clk)
	go c.pump()
	return c
}

// pump reads messages until the socket fails, blocking while Read has not
// taken the previous chunk.
func (c *conn) pump() {
	defer close(c.pumpDone)
	for {
		typ, r, err := c.ws.NextReader()
		if err != nil {
			c.pumpErr = readError(err)
			return
		}
		if typ != websocket.BinaryMessage {
			c.pumpErr = errTextMessage
			c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseUnsupportedData, errTextMessage.Error()), time.Now().Add(time.Second))
			return
		}
		for {
			bp := chunkPool.Get().(*[]byte)
			n, err := r.Read(*bp)
			if n > 0 {
				select {
				case c.chunks <- chunk{bp, n}:
				case <-c.closed:
					chunkPool.Put(bp)
					c.pumpErr = net.ErrClosed
					return
				}
			} else {
				chunkPool.Put(bp)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				c.pumpErr = readError(err)
				return
			}
		}
	}
}

// readError maps a normal close to io.EOF.
func readError(err error) error {
	if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
		return io.EOF
	}
	return fmt.Errorf("tunnel: read: %w", err)
}

func (c *conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(b) == 0 {
		return 0, nil
	}
	if len(c.pending) == 0 {
		if c.buf != nil {
			chunkPool.Put(c.buf)
			c.buf, c.pending = nil, nil
		}
		switch {
		case isClosed(c.closed):
			return 0, net.ErrClosed
		case isClosed(c.readDL.wait()):
			return 0, os.ErrDeadlineExceeded
		}
		select {
		case ch := <-c.chunks:
			c.buf, c.pending = ch.buf, (*ch.buf)[:ch.n]
		case <-c.pumpDone:
			return 0, c.pumpErr
		case <-c.closed:
			return 0, net.ErrClosed
		case <-c.readDL.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if isClosed(c.closed) {
		return 0, net.ErrClosed
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.dlMu.Lock()
	dl := c.writeDL
	c.dlMu.Unlock()
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, os.ErrDeadlineExceeded
	}
	c.ws.SetWriteDeadline(dl) // read by gorilla's writes, which wmu serializes
	if err := c.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, fmt.Errorf("tunnel: write: %w", os.ErrDeadlineExceeded)
		}
		if isClosed(c.closed) {
			return 0, net.ErrClosed
		}
		return 0, fmt.Errorf("tunnel: write: %w", err)
	}
	return len(b), nil
}

func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		// Concurrent with a Write in progress: gorilla allows WriteControl
		// beside other writes and gives up at its deadline.
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(500*time.Millisecond))
		err = c.ws.Close()
		<-c.pumpDone
		c.readDL.stop()
	})
	return err
}

func (c *conn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return net.ErrClosed
	}
	c.readDL.set(t)
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return net.ErrClosed
	}
	c.dlMu.Lock()
	c.writeDL = t
	c.dlMu.Unlock()
	// A Write in progress is held by the socket's own deadline.
	return c.ws.NetConn().SetWriteDeadline(t)
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// deadline is a settable timer whose wait channel is closed once the
// deadline passes (net.Pipe's pipeDeadline).
type deadline struct {
	clock     clock.Clock
	mu        sync.Mutex
	stopTimer func() bool   // stops the armed timer, if any
	cancel    chan struct{} // closed when the deadline passes
}

// set sets the deadline; the zero time clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopTimer != nil && !d.stopTimer() {
		<-d.cancel // the timer's func has closed it; wait to be sure
	}
	d.stopTimer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := t.Sub(d.clock.Now()); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.stopTimer = d.clock.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopTimer != nil {
		d.stopTimer()
	}
}
