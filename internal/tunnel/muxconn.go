package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// muxConn is the byte stream yamux runs over, on both ends of a tunnel:
// a WebSocket read and written in the caller's goroutine. Unlike NewConn's
// conn it has no reader goroutine and no deadlines, since yamux needs
// neither: its receive loop always reads (so the peer's pings are
// answered) and it times its writes itself. That saves a goroutine
// hand-off per message on each end.
//
// Write sends a yamux data frame's 12-byte header and its body as one
// WebSocket message: yamux's send loop writes them in two calls, which
// would otherwise cost two messages and two syscalls per frame.
type muxConn struct {
	ws *websocket.Conn

	// rmu serializes Read (yamux has one reader); it guards r.
	rmu sync.Mutex
	r   io.Reader // the message being read, nil between messages

	// wmu serializes Write (yamux has one writer); it guards hdr.
	wmu sync.Mutex
	// hdr holds a data frame's header until its body comes; hdrLen is
	// the body's length, 0 when nothing is held.
	hdr    [yamuxHeaderSize]byte
	hdrLen int

	errMu   sync.Mutex
	readErr error // why reading stopped, once it has

	closeOnce sync.Once
}

// yamux's frame header (github.com/hashicorp/yamux const.go): version,
// type, flags (2 bytes), stream id (4), length (4), big-endian. A data
// frame's body of length bytes follows it.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

func newMuxConn(ws *websocket.Conn) *muxConn { return &muxConn{ws: ws} }

func (c *muxConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if c.r == nil {
			if err := c.err(); err != nil {
				return 0, err
			}
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, c.fail(readError(err))
			}
			if typ != websocket.BinaryMessage {
				c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseUnsupportedData, errTextMessage.Error()), time.Now().Add(time.Second))
				return 0, c.fail(errTextMessage)
			}
			c.r = r
		}
		n, err := c.r.Read(b)
		if err == io.EOF {
			c.r = nil
			err = nil
		}
		if err != nil {
			return n, c.fail(readError(err))
		}
		if n > 0 {
			return n, nil
		}
	}
}

// fail records why reading stopped (the first reason) and returns it.
func (c *muxConn) fail(err error) error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.readErr == nil {
		c.readErr = err
	}
	return c.readErr
}

// err reports why reading stopped, or nil while it goes on.
func (c *muxConn) err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.readErr
}

func (c *muxConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(b) == 0 {
		return 0, nil
	}
	if c.hdrLen > 0 {
		hdr, want := c.hdr[:], c.hdrLen
		c.hdrLen = 0
		if len(b) == want { // the body of the held header: one message
			return len(b), c.writeMessage(hdr, b)
		}
		// Not its body (yamux always sends it next; never seen): the
		// header goes alone, then b.
		if err := c.writeMessage(hdr, nil); err != nil {
			return 0, err
		}
	}
	if len(b) == yamuxHeaderSize && b[1] == yamuxTypeData {
		if n := binary.BigEndian.Uint32(b[8:12]); n > 0 {
			copy(c.hdr[:], b)
			c.hdrLen = int(n)
			return len(b), nil
		}
	}
	return len(b), c.writeMessage(b, nil)
}

// writeMessage writes a and b as one binary message.
func (c *muxConn) writeMessage(a, b []byte) error {
	w, err := c.ws.NextWriter(websocket.BinaryMessage)
	if err == nil {
		if _, err = w.Write(a); err == nil && len(b) > 0 {
			_, err = w.Write(b)
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		if errors.Is(err, websocket.ErrCloseSent) || errors.Is(err, net.ErrClosed) {
			return net.ErrClosed
		}
		return fmt.Errorf("tunnel: write: %w", err)
	}
	return nil
}

// Close sends a close frame (1000) when it can and closes the socket.
func (c *muxConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		// Beside a Write in progress: gorilla allows WriteControl next to
		// other writes and gives up at its deadline.
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(500*time.Millisecond))
		err = c.ws.Close()
	})
	return err
}

func (c *muxConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// writeBufferPool holds the tunnel sockets' write buffers while no
// message is being written (gorilla's WriteBufferPool): a tunnel holds
// none while idle, and a frame of the agent's largest (wsconn's 256 KiB
// plus headers) fits in one.
var writeBufferPool = &sync.Pool{}

// writeBufferSize is the size of writeBufferPool's buffers.
const writeBufferSize = 260 << 10
