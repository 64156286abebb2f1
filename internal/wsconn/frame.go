package wsconn

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ServerWriter wraps w, the ResponseWriter a byte-stream socket is
// upgraded on (websocket.Upgrader.Upgrade), so that the Conn made from
// that socket (New) writes its data and status messages itself, each one
// frame straight from the caller's bytes: no copy into gorilla's write
// buffer (gorilla's server WriteMessage copies up to its buffer's size
// first), header and body in one writev on TCP. gorilla still writes
// the control frames (pings, pongs, close frames), serialized with
// Conn's frames. Only for server sockets: a client must mask its frames
// (RFC 6455 §5.3), which gorilla does.
func ServerWriter(w http.ResponseWriter) http.ResponseWriter { return serverWriter{w} }

type serverWriter struct{ http.ResponseWriter }

func (s serverWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s serverWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &frameConn{Conn: c, lock: make(chan struct{}, 1)}, brw, nil
}

// frameConn is a hijacked server connection on which Conn writes data
// frames and gorilla writes control frames, one frame at a time (lock).
// gorilla writes a control frame in one Write after SetWriteDeadline;
// the deadline is kept for that Write (gdl), which waits for the lock no
// longer than it, so a control frame behind a data frame stuck on a
// reader that stopped gives up at its deadline as it does in gorilla.
type frameConn struct {
	net.Conn
	lock chan struct{} // a frame is being written

	mu sync.Mutex // guards the fields below
	// gdl is the deadline gorilla set for its next write.
	gdl time.Time
	// err makes writes fail for good: a close frame was sent
	// (websocket.ErrCloseSent), or a frame was cut short.
	err error
}

func (f *frameConn) SetWriteDeadline(t time.Time) error {
	f.mu.Lock()
	f.gdl = t
	f.mu.Unlock()
	return nil
}

func (f *frameConn) SetDeadline(t time.Time) error {
	f.SetWriteDeadline(t)
	return f.Conn.SetReadDeadline(t)
}

// Write writes one of gorilla's frames (the handshake's response, before
// any frame, also comes this way).
func (f *frameConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	dl := f.gdl
	f.mu.Unlock()
	if err := f.acquire(dl); err != nil {
		return 0, err
	}
	defer f.release()
	if err := f.failed(); err != nil {
		return 0, err
	}
	f.Conn.SetWriteDeadline(dl)
	n, err := f.Conn.Write(p)
	if len(p) > 0 && p[0] == 0x80|websocket.CloseMessage { // FIN, close (the handshake's "HTTP/1.1" is not)
		f.fail(websocket.ErrCloseSent)
	}
	return n, err
}

// acquire takes the lock, waiting until dl at most (zero: no limit).
func (f *frameConn) acquire(dl time.Time) error {
	select {
	case f.lock <- struct{}{}:
		return nil
	default:
	}
	if dl.IsZero() {
		f.lock <- struct{}{}
		return nil
	}
	t := time.NewTimer(time.Until(dl))
	defer t.Stop()
	select {
	case f.lock <- struct{}{}:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

func (f *frameConn) release() { <-f.lock }

// fail makes every later write fail with err (the first reason kept).
func (f *frameConn) fail(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *frameConn) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// maxHeaderBytes is the largest header of an unmasked frame.
const maxHeaderBytes = 10

// frameHeader puts the header of a final, unmasked frame of type op and
// n bytes into b and returns it.
func frameHeader(b *[maxHeaderBytes]byte, op int, n int) []byte {
	b[0] = 0x80 | byte(op) // FIN
	switch {
	case n <= 125:
		b[1] = byte(n)
		return b[:2]
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return b[:4]
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		return b[:10]
	}
}

// smallFrame is the largest body copied behind its header into one
// write on a connection that is not TCP (the agent's tunnel, where each
// write is a message of its own); a larger one is written after its
// header, not copied.
const smallFrame = 16 << 10

var smallFrames = sync.Pool{New: func() any { b := make([]byte, maxHeaderBytes+smallFrame); return &b }}

// writeFrame writes a final frame of type op carrying p, with the
// deadline timeout from now. The caller holds Conn.wmu.
func (f *frameConn) writeFrame(op int, p []byte, timeout time.Duration) error {
	var hb [maxHeaderBytes]byte
	hdr := frameHeader(&hb, op, len(p))
	if err := f.acquire(time.Time{}); err != nil {
		return err
	}
	defer f.release()
	if err := f.failed(); err != nil {
		return err
	}
	f.Conn.SetWriteDeadline(time.Now().Add(timeout))
	var err error
	switch _, tcp := f.Conn.(*net.TCPConn); {
	case tcp || len(p) > smallFrame:
		// One writev on TCP; two writes otherwise.
		bufs := net.Buffers{hdr, p}
		_, err = bufs.WriteTo(f.Conn)
	default:
		bp := smallFrames.Get().(*[]byte)
		_, err = f.Conn.Write(append(append((*bp)[:0], hdr...), p...))
		smallFrames.Put(bp)
	}
	if err != nil {
		// As gorilla: a failed write is the socket's end (and a frame
		// cut short could not be followed by another).
		f.fail(err)
		return err
	}
	return nil
}
