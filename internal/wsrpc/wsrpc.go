// Package wsrpc adapts a gorilla WebSocket to sourcegraph/jsonrpc2 for
// porthole's sockets: JSON-RPC 2.0 objects travel in text frames, stream
// data in binary frames handed to a callback, writes are serialized, size
// limits are enforced with JSON-RPC errors instead of dropped connections,
// and keepalive pings keep idle sessions alive through proxies.
package wsrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/protocol"
)

// keepBuffer is the largest read buffer a stream keeps between messages.
const keepBuffer = 64 << 10

// HardLimitFactor: a message larger than Limit gets a JSON-RPC error; one
// larger than HardLimitFactor*Limit closes the socket with 1009, since even
// discarding it would let a peer occupy the agent indefinitely.
const HardLimitFactor = 16

// Options configure a Stream.
type Options struct {
	// Limit is the largest message accepted, in bytes.
	Limit int64
	// OnBinary receives every binary message, in order, on the reading
	// goroutine. The slice is valid only during the call (the stream reuses
	// its buffer). An error closes the socket with a protocol-error close
	// frame carrying the error text.
	OnBinary func([]byte) error
	// OnReadEnd, when set, is called once, on the reading goroutine, when
	// reading ends (the peer closed, the connection broke, or Close).
	OnReadEnd func(error)
	// RawText hands text messages to OnBinary too: a raw byte socket with
	// no JSON-RPC at all (ReadObject then returns only when the socket ends).
	RawText bool
	// PingInterval > 0 sends a ping that often; a peer silent for two
	// intervals (no frame, no pong) is disconnected.
	PingInterval time.Duration
	// WriteTimeout bounds each write; a peer that does not read for that
	// long is disconnected.
	WriteTimeout time.Duration
	// Clock paces the pings; nil is the real clock. The socket's read and
	// write deadlines are always in real time.
	Clock clock.Clock
	// HardLimit, when > 0, replaces HardLimitFactor*Limit (errors.go).
	HardLimit int64
	// Decode, when set, replaces Decode for text messages (errors.go).
	Decode func(data []byte, v any) error
	// OnTooLarge, when set, is told of every text message larger than
	// Limit (and not than the hard limit), on the reading goroutine,
	// before the error response: size is the message's, in bytes.
	OnTooLarge func(size int64)
	// ReadDirect, on a server's socket over a kernel socket (Linux),
	// reads the client's frames straight from it with non-blocking raw
	// reads instead of through gorilla (read.go): the same frames are
	// accepted and refused, without waking the runtime's monitor thread
	// on every message. Elsewhere (TLS, a tunnel stream) it is ignored.
	ReadDirect bool
	// Idle, on a RawText stream with the direct reader, holds the socket
	// while it has nothing to read, instead of a goroutine (ServeRaw).
	// After a message the reader keeps waiting until a keepalive ping
	// finds no message read since the previous one (without
	// PingInterval, for good).
	Idle *Poller
}

// Stream is a jsonrpc2.ObjectStream over a WebSocket.
type Stream struct {
	ws   *websocket.Conn
	opts Options

	// wl is the write lock (a channel, so that control frames can give up
	// waiting for it at their deadline, as gorilla's own lock does). Every
	// frame the stream sends takes it: data, pings, pongs, close frames,
	// and TryWriteBinary's frames written past gorilla (fast.go).
	wl chan struct{}
	// Guarded by wl.
	pending   []byte // the rest of a frame TryWriteBinary began
	closeSent bool   // no data frame may follow

	raw syscall.RawConn // the kernel socket, for TryWriteBinary; nil if none

	fr  *frameReader // Options.ReadDirect's reader; nil: gorilla reads
	ack func() error // AckPings's, for fr

	closeOnce sync.Once

	// ServeRaw's (idle.go).
	idle     *Poller // nil: a goroutine reads
	idleMu   sync.Mutex
	parked   bool // the socket is in idle, and no goroutine reads it
	parkedFD int
	closing  bool // Close began: never parked again
	// readDeadline is the socket's read deadline (zero: none), kept by
	// setReadDeadline for the reading goroutine.
	readDeadline time.Time
	active       atomic.Bool // a message was read since the last ping
	lingering    atomic.Bool // the reader waits for more after a message

	errMu   sync.Mutex
	readErr error // why the reads ended

	// The keepalive is a self-rearming timer, not a goroutine: an idle
	// connection costs no stack.
	pingMu   sync.Mutex
	stopPing func() bool // stops the armed timer
	stopped  bool
}

// New wraps ws. The caller must eventually Close the stream.
func New(ws *websocket.Conn, opts Options) *Stream {
	if opts.Limit <= 0 {
		opts.Limit = 1 << 20
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	opts.Clock = clock.Or(opts.Clock)
	s := &Stream{ws: ws, opts: opts, wl: make(chan struct{}, 1), raw: rawConn(ws.NetConn())}
	ws.SetReadLimit(opts.hardLimit())
	if opts.ReadDirect && canReadDirect && s.raw != nil {
		s.fr = newFrameReader(s, s.raw)
		if opts.RawText {
			s.idle = opts.Idle
		}
	}
	// gorilla's own answers to pings and close frames, through the write
	// lock (the defaults write past it).
	ws.SetPingHandler(func(data string) error {
		return ignoreClosing(s.control(websocket.PongMessage, []byte(data), time.Now().Add(controlWait)))
	})
	ws.SetCloseHandler(func(code int, _ string) error {
		s.control(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(controlWait))
		return nil
	})
	if opts.PingInterval > 0 {
		deadline := func() time.Time { return time.Now().Add(2*opts.PingInterval + time.Second) }
		s.setReadDeadline(deadline())
		ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(deadline()) })
		s.pingMu.Lock()
		s.stopPing = opts.Clock.AfterFunc(opts.PingInterval, s.ping)
		s.pingMu.Unlock()
	}
	return s
}

// ping runs on the timer's goroutine, sends one ping and rearms.
func (s *Stream) ping() {
	s.pingMu.Lock()
	defer s.pingMu.Unlock()
	if s.stopped {
		return
	}
	if err := s.control(websocket.PingMessage, nil, time.Now().Add(s.opts.WriteTimeout)); err != nil {
		return
	}
	if s.idle != nil {
		s.idleCheck()
	}
	s.stopPing = s.opts.Clock.AfterFunc(s.opts.PingInterval, s.ping)
}

// ReadObject implements jsonrpc2.ObjectStream. Binary messages go to
// OnBinary; malformed or oversized JSON-RPC messages are answered with an
// error response here and skipped, so a bad message never ends the session.
func (s *Stream) ReadObject(v any) error {
	err := s.readObject(v)
	if err != nil {
		s.readEnded(err)
	}
	return err
}

// readEnded records why the reads ended, and tells OnReadEnd the first time.
func (s *Stream) readEnded(err error) {
	s.errMu.Lock()
	first := s.readErr == nil
	if first {
		s.readErr = err
	}
	s.errMu.Unlock()
	if first && s.opts.OnReadEnd != nil {
		s.opts.OnReadEnd(err)
	}
}

// Err returns why reading ended (a *websocket.CloseError carries the
// peer's close code and reason), or nil while the stream is open.
func (s *Stream) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.readErr
}

func (s *Stream) readObject(v any) error {
	for {
		if s.fr != nil {
			// An idle socket waits here, in a shallow frame, not in the
			// frame decoder: its goroutine then keeps the smallest stack
			// (read.go, frameReader.wait).
			if err := s.fr.wait(); err != nil {
				return err
			}
		}
		if err := s.readMessage(v); err != errNext {
			return err
		}
	}
}

// readMessage reads and handles one message: errNext when it was handled
// and the reads go on.
func (s *Stream) readMessage(v any) error {
	typ, r, err := s.nextReader()
	if err != nil {
		return err
	}
	if s.opts.PingInterval > 0 {
		s.setReadDeadline(time.Now().Add(2*s.opts.PingInterval + time.Second))
	}
	// The message's buffer is the stream's only while it is handled:
	// an idle stream holds none.
	buf := readBuffers.Get().(*bytes.Buffer)
	err = s.handle(typ, r, buf, v)
	if buf.Cap() <= keepBuffer { // a large message's buffer is not kept
		buf.Reset()
		readBuffers.Put(buf)
	}
	return err
}

func (s *Stream) nextReader() (int, io.Reader, error) {
	if s.fr != nil {
		return s.fr.NextReader()
	}
	return s.ws.NextReader()
}

// readBuffers hold messages being read, shared by every stream.
var readBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// errNext: the message was handled; read the next one.
var errNext = errors.New("next message")

// handle reads one message from r into buf and handles it: binary data
// to OnBinary, a JSON-RPC message into v (then it returns nil).
func (s *Stream) handle(typ int, r io.Reader, buf *bytes.Buffer, v any) error {
	{
		if _, err := buf.ReadFrom(io.LimitReader(r, s.opts.Limit+1)); err != nil {
			return err
		}
		data := buf.Bytes()
		if int64(len(data)) > s.opts.Limit {
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				return err
			}
			total := int64(len(data)) + n
			if typ == websocket.BinaryMessage || s.opts.RawText {
				return s.fail(protocol.CloseTooBig, fmt.Sprintf("binary message of %d bytes exceeds the limit of %d bytes", total, s.opts.Limit))
			}
			if s.opts.OnTooLarge != nil {
				s.opts.OnTooLarge(total)
			}
			s.replyError(nil, protocol.CodeTooLarge, fmt.Sprintf("message of %d bytes exceeds the limit of %d bytes", total, s.opts.Limit))
			return errNext
		}
		if typ == websocket.BinaryMessage || s.opts.RawText {
			if s.opts.OnBinary == nil {
				return s.fail(protocol.CloseProtocolError, "binary messages are not accepted on this socket")
			}
			if err := s.opts.OnBinary(data); err != nil {
				return s.fail(protocol.CloseProtocolError, err.Error())
			}
			return errNext
		}
		if err := s.decode(data, v); err != nil {
			var re *Error
			if errors.As(err, &re) {
				s.replyError(re.ID, re.Code, re.Message)
				return errNext
			}
			return err
		}
		return nil
	}
}

// Error is a message that cannot be handled as a JSON-RPC request; it is
// answered with an error response carrying Code and, when known, the
// request's ID.
type Error struct {
	ID      *json.RawMessage
	Code    int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Decode checks one JSON-RPC message and unmarshals it into v (jsonrpc2's
// message or request type). Failures are *Error.
func Decode(data []byte, v any) error {
	if !json.Valid(data) {
		var x any
		err := json.Unmarshal(data, &x)
		return &Error{Code: protocol.CodeParseError, Message: fmt.Sprintf("parse error: %v", err)}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return &Error{Code: protocol.CodeInvalidRequest, Message: "batch requests are not supported: send one JSON-RPC object per text frame"}
	}
	var head struct {
		JSONRPC *string          `json:"jsonrpc"`
		ID      *json.RawMessage `json:"id"`
		Method  *string          `json:"method"`
	}
	if err := json.Unmarshal(trimmed, &head); err != nil {
		return &Error{Code: protocol.CodeInvalidRequest, Message: "invalid request: want a JSON object"}
	}
	if head.JSONRPC != nil && *head.JSONRPC != "2.0" {
		return &Error{ID: head.ID, Code: protocol.CodeInvalidRequest, Message: fmt.Sprintf("invalid request: jsonrpc is %q; want \"2.0\"", *head.JSONRPC)}
	}
	if head.Method != nil && *head.Method == "" {
		return &Error{ID: head.ID, Code: protocol.CodeInvalidRequest, Message: "invalid request: method is empty"}
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		return &Error{ID: head.ID, Code: protocol.CodeInvalidRequest, Message: fmt.Sprintf("invalid request: %v", err)}
	}
	return nil
}

func (s *Stream) replyError(id *json.RawMessage, code int, msg string) { s.WriteError(id, code, msg) }

// fail sends a close frame with code and reason and returns an error that
// ends the read loop.
func (s *Stream) fail(code int, reason string) error {
	s.CloseWith(code, reason)
	return fmt.Errorf("websocket closed: %d %s", code, reason)
}

// WriteObject implements jsonrpc2.ObjectStream: one text frame.
func (s *Stream) WriteObject(obj any) error {
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return s.write(websocket.TextMessage, b)
}

// WriteText sends msg, one complete JSON-RPC message, as one text frame
// without marshalling it again (WriteObject of a json.RawMessage would
// re-validate and copy it): for writers that render messages themselves.
func (s *Stream) WriteText(msg []byte) error { return s.write(websocket.TextMessage, msg) }

// WriteBinary sends one binary frame.
func (s *Stream) WriteBinary(b []byte) error { return s.write(websocket.BinaryMessage, b) }

func (s *Stream) write(typ int, b []byte) error {
	s.wl <- struct{}{}
	defer s.unlock()
	deadline := time.Now().Add(s.opts.WriteTimeout)
	err := s.flushLocked(deadline)
	if err == nil {
		s.ws.SetWriteDeadline(deadline)
		err = s.ws.WriteMessage(typ, b)
	}
	if err != nil {
		s.ws.Close() // a failed write leaves the stream unusable: end the reads too
	}
	return err
}

func (s *Stream) unlock() { <-s.wl }

// controlWait bounds gorilla's answers to pings and close frames (its own
// default).
const controlWait = time.Second

// control sends a control frame, waiting for the write lock at most until
// deadline.
func (s *Stream) control(typ int, data []byte, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	select {
	case s.wl <- struct{}{}:
		t.Stop()
	case <-t.C:
		return timeoutError{}
	}
	defer s.unlock()
	if err := s.flushLocked(deadline); err != nil {
		s.ws.Close()
		return err
	}
	if typ == websocket.CloseMessage {
		s.closeSent = true
	}
	return s.ws.WriteControl(typ, data, deadline)
}

// timeoutError: the write lock was not free by the deadline.
type timeoutError struct{}

func (timeoutError) Error() string   { return "websocket: write lock not free before the deadline" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// ignoreClosing is gorilla's rule for a pong: one that cannot be sent
// because the socket is closing, or timed out, is not a read error.
func ignoreClosing(err error) error {
	var ne net.Error
	if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
		return nil
	}
	return err
}

// CloseWith sends a close frame (best effort, bounded) then closes.
func (s *Stream) CloseWith(code int, reason string) error {
	s.SendClose(code, reason)
	return s.Close()
}

// SendClose sends a close frame (bounded) and leaves the socket open, so
// that the peer's answering close frame can be read before Close: closing
// a TCP connection with the peer's last frames unread resets it, and the
// reset can reach the peer before it has read what was sent last.
func (s *Stream) SendClose(code int, reason string) error {
	if len(reason) > 120 { // a close frame's payload is at most 125 bytes
		reason = reason[:120]
	}
	msg := websocket.FormatCloseMessage(code, reason)
	return s.control(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// Close implements jsonrpc2.ObjectStream; it also stops the keepalive.
func (s *Stream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		restart := s.idle != nil && s.unpark(true) // before the descriptor is closed
		err = s.ws.Close()
		if restart { // a reader ends the reads with the closed socket's error
			go s.serveRaw()
		}
		// Taking pingMu waits for a ping in progress; none starts after.
		s.pingMu.Lock()
		s.stopped = true
		if s.stopPing != nil {
			s.stopPing()
		}
		s.pingMu.Unlock()
	})
	return err
}

// decode reads one text message into v: Options.Decode when set (a reader
// that decodes its messages in one pass, into its own types), else
// Decode. A *Error is answered with an error response and the message
// skipped; any other error ends the reads.
func (s *Stream) decode(data []byte, v any) error {
	if s.opts.Decode != nil {
		return s.opts.Decode(data, v)
	}
	return Decode(data, v)
}
