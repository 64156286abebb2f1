// Package wsconn carries one byte stream over a gorilla WebSocket, in both
// directions, with half-close: porthole's port-forward and file-copy
// sockets (docs/protocol.md §19, §20).
//
// Bytes travel in binary messages. An empty binary message ends the
// sender's direction (as a TCP FIN: the other direction stays open). A
// text message carries one JSON status object (file copy uses it for the
// result). A close frame with a code other than 1000 is an error, its
// reason the error's text.
package wsconn

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// DefaultFrameBytes is the largest binary message Write sends.
const DefaultFrameBytes = 256 << 10

// Options configure a Conn. Zero values mean the documented defaults.
type Options struct {
	// Limit is the largest message read. Default 1 MiB.
	Limit int64
	// FrameBytes is the largest binary message written. Default
	// DefaultFrameBytes; never more than Limit of the peer (the agent's
	// MaxMessageBytes, 1 MiB by default).
	FrameBytes int
	// PingInterval > 0 sends a ping that often; a peer silent for two
	// intervals and a second (no message, no pong) is disconnected.
	PingInterval time.Duration
	// WriteTimeout bounds each write: a peer that reads nothing for that
	// long is disconnected. Default 30s.
	WriteTimeout time.Duration
}

// Conn is a byte stream over a WebSocket. One goroutine may read
// (Read, ReadStatus) while another writes (Write, CloseWrite, WriteStatus);
// Close may be called from any goroutine.
type Conn struct {
	ws   *websocket.Conn
	opts Options

	r    io.Reader // the current message
	rGot bool      // r gave bytes
	rEOF bool

	wmu       sync.Mutex
	wEOF      bool
	closeOnce sync.Once
	ping      *time.Timer
}

// ErrStatus is returned by Read when a text (status) message arrives
// where bytes were expected; ReadStatus reads it.
var ErrStatus = errors.New("wsconn: status message where data was expected")

// New wraps ws; the caller must Close the Conn.
func New(ws *websocket.Conn, o Options) *Conn {
	if o.Limit <= 0 {
		o.Limit = 1 << 20
	}
	if o.FrameBytes <= 0 {
		o.FrameBytes = DefaultFrameBytes
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	c := &Conn{ws: ws, opts: o}
	ws.SetReadLimit(o.Limit)
	if o.PingInterval > 0 {
		c.alive()
		ws.SetPongHandler(func(string) error { c.alive(); return nil })
		c.wmu.Lock()
		c.ping = time.AfterFunc(o.PingInterval, c.sendPing)
		c.wmu.Unlock()
	}
	return c
}

func (c *Conn) alive() {
	if c.opts.PingInterval > 0 {
		c.ws.SetReadDeadline(time.Now().Add(2*c.opts.PingInterval + time.Second))
	}
}

func (c *Conn) sendPing() {
	if c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.opts.WriteTimeout)) != nil {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ping != nil {
		c.ping.Reset(c.opts.PingInterval)
	}
}

// Read reads the peer's bytes; io.EOF once the peer ended its direction.
// A close frame other than 1000 is returned as a *CloseError.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if c.rEOF {
			return 0, io.EOF
		}
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, closeError(err)
			}
			c.alive()
			c.r, c.rGot = r, false
			if typ == websocket.TextMessage {
				return 0, ErrStatus
			}
		}
		n, err := c.r.Read(p)
		if n > 0 {
			c.rGot = true
		}
		if err == io.EOF {
			if !c.rGot { // an empty message: the end of the direction
				c.rEOF = true
			}
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, closeError(err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// ReadStatus reads the next message as a JSON status into v: after Read
// returned ErrStatus, or after io.EOF.
func (c *Conn) ReadStatus(v any) error {
	r := c.r
	if r == nil {
		typ, nr, err := c.ws.NextReader()
		if err != nil {
			return closeError(err)
		}
		if typ != websocket.TextMessage {
			return errors.New("wsconn: data where a status message was expected")
		}
		r = nr
	}
	c.r = nil
	return json.NewDecoder(r).Decode(v)
}

// Write sends p in binary messages of at most FrameBytes.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wEOF {
		return 0, errors.New("wsconn: write after CloseWrite")
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), c.opts.FrameBytes)
		c.ws.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
		if err := c.ws.WriteMessage(websocket.BinaryMessage, p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// ReadFrom sends r's bytes until EOF, a message per read, without an
// extra copy (io.Copy uses it).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	b := getBuffer(c.opts.FrameBytes)
	defer putBuffer(b)
	buf := *b
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// CloseWrite ends this side's direction: an empty binary message. The
// peer's direction stays open.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wEOF {
		return nil
	}
	c.wEOF = true
	c.ws.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	return c.ws.WriteMessage(websocket.BinaryMessage, nil)
}

// WriteStatus sends v as a JSON text message.
func (c *Conn) WriteStatus(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// Close sends a close frame with code and reason (shortened to fit) and
// closes the connection. Only the first call counts.
func (c *Conn) Close(code int, reason string) error {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		if c.ping != nil {
			c.ping.Stop()
			c.ping = nil
		}
		c.wmu.Unlock()
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, Shorten(reason)), time.Now().Add(time.Second))
		c.ws.Close()
	})
	return nil
}

// Shorten cuts s to 120 bytes (a close reason may hold 123), on a rune
// boundary, as the agent's other sockets do.
func Shorten(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	s = s[:max-3]
	for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xC0 {
		s = s[:len(s)-1]
	}
	return s + "..."
}

// CloseError is the peer's close frame with a code other than 1000, or a
// connection that broke without one.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("connection closed (%d)", e.Code)
	}
	return e.Reason
}

func closeError(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		if ce.Code == websocket.CloseNormalClosure {
			return io.ErrUnexpectedEOF
		}
		return &CloseError{Code: ce.Code, Reason: ce.Text}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("peer silent for too long: %w", err)
	}
	return err
}

// closeWait bounds how long Finish waits for the peer's close frame.
const closeWait = 5 * time.Second

// Finish ends a stream whose reads are over (Read returned io.EOF, no
// goroutine reads any more): it sends a 1000 close frame and waits, at
// most 5s, for the peer's, so that closing the connection cannot reset
// it while the peer still reads what was sent.
func (c *Conn) Finish() {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		if c.ping != nil {
			c.ping.Stop()
			c.ping = nil
		}
		c.wmu.Unlock()
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.ws.SetReadDeadline(time.Now().Add(closeWait))
		for {
			if _, _, err := c.ws.NextReader(); err != nil {
				break
			}
		}
		c.ws.Close()
	})
}

// HalfConn is a connection whose write side can be closed alone, as a
// *net.TCPConn.
type HalfConn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Join copies tc's bytes to c and c's bytes to tc until both directions
// ended, passing each end on (CloseWrite), and then closes both: cleanly
// (Finish) when both directions ended without error; otherwise c with
// 1011 and the error as reason and tc with a reset when it is a TCP
// connection. It returns the first error, naming its side: "local" for
// tc, "remote" for c.
func Join(c *Conn, tc HalfConn) error {
	errc := make(chan error, 2)
	var once sync.Once
	abort := func(err error) {
		once.Do(func() {
			if t, ok := tc.(*net.TCPConn); ok {
				t.SetLinger(0)
			}
			tc.Close()
			c.Close(websocket.CloseInternalServerErr, err.Error())
		})
	}
	// Each error is tagged with its side where it happens.
	copyDir := func(dst io.Writer, src io.Reader, end func() error, endSide string) {
		buf := getBuffer(c.opts.FrameBytes)
		_, err := io.CopyBuffer(dst, src, *buf)
		putBuffer(buf)
		if err == nil {
			if err = end(); err != nil {
				err = &SideError{endSide, err}
			}
		}
		if err != nil {
			abort(err)
		}
		errc <- err
	}
	go copyDir(sideWriter{c, "remote"}, sideReader{tc, "local"}, c.CloseWrite, "remote")
	go copyDir(sideWriter{tc, "local"}, sideReader{c, "remote"}, tc.CloseWrite, "local")
	err1, err2 := <-errc, <-errc
	if err := errors.Join(err1, err2); err != nil {
		if err1 != nil {
			return err1 // the first; the other follows from the abort
		}
		return err2
	}
	tc.Close()
	c.Finish()
	return nil
}

// SideError is an error of one side of Join.
type SideError struct {
	Side string // "local" or "remote"
	Err  error
}

func (e *SideError) Error() string { return e.Err.Error() }
func (e *SideError) Unwrap() error { return e.Err }

type sideReader struct {
	r    io.Reader
	side string
}

func (s sideReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &SideError{s.side, err}
	}
	return n, err
}

type sideWriter struct {
	w    io.Writer
	side string
}

func (s sideWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = &SideError{s.side, err}
	}
	return n, err
}

// bufPool holds Join's copy buffers of DefaultFrameBytes: a connection
// costs no allocation of them, and memory follows the connections being
// copied, not all those ever made.
var bufPool = sync.Pool{New: func() any { b := make([]byte, DefaultFrameBytes); return &b }}

func getBuffer(n int) *[]byte {
	if n == DefaultFrameBytes {
		return bufPool.Get().(*[]byte)
	}
	b := make([]byte, n)
	return &b
}

func putBuffer(b *[]byte) {
	if len(*b) == DefaultFrameBytes {
		bufPool.Put(b)
	}
}

// NetConn is c as a net.Conn, for code that wants one (an
// http.Transport's connection): Close closes with 1000 at once (no
// half-close); deadlines are accepted and ignored (the keepalive and the
// write timeout bound the waits).
func (c *Conn) NetConn() net.Conn { return netConn{c} }

type netConn struct{ c *Conn }

func (n netConn) Read(p []byte) (int, error)         { return n.c.Read(p) }
func (n netConn) Write(p []byte) (int, error)        { return n.c.Write(p) }
func (n netConn) Close() error                       { return n.c.Close(websocket.CloseNormalClosure, "") }
func (n netConn) LocalAddr() net.Addr                { return n.c.ws.LocalAddr() }
func (n netConn) RemoteAddr() net.Addr               { return n.c.ws.RemoteAddr() }
func (n netConn) SetDeadline(t time.Time) error      { return nil }
func (n netConn) SetReadDeadline(t time.Time) error  { return nil }
func (n netConn) SetWriteDeadline(t time.Time) error { return nil }
