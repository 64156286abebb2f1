package wsrpc

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// The read side of Options.ReadDirect: a client's frames (RFC 6455 5.2,
// masked) read straight from the kernel socket with a raw, non-blocking
// read(2), waiting on the poller only when the socket holds nothing.
// gorilla reads through net.Conn, whose read is a syscall.Syscall: the
// first one after the process was idle wakes the runtime's monitor thread
// (sysmon) out of its deep sleep, more than one context switch per
// keystroke for nothing (docs/performance.md, "Agent fast path"). The
// rules are gorilla's, so that a peer sees the same socket: a client
// frame must be masked, carry no RSV bits (no extension is negotiated),
// control frames are final and at most 125 bytes and may come between a
// message's fragments, a message larger than the read limit ends the
// socket with 1009, any other breach with 1002 and the reason.

// directBuffer is the size of the pooled read buffer: a frame's header
// and, for a keystroke, its payload, in one read.
const directBuffer = 4 << 10

// directBuffers are shared by every direct reader; a reader holds one
// only while it holds bytes not yet consumed, so an idle socket holds none.
var directBuffers = sync.Pool{New: func() any { b := make([]byte, directBuffer); return &b }}

// directBuffersOut counts the direct readers' buffers taken and not given
// back: none while every socket is idle (tests).
var directBuffersOut atomic.Int64

// frameReader reads one stream's client frames. Only the reading
// goroutine uses it.
type frameReader struct {
	s  *Stream
	rc syscall.RawConn

	bp   *[]byte // pooled; nil while no unread byte is held
	r, w int     // the unread bytes are (*bp)[r:w]

	// The data frame being read.
	remaining int64 // its payload bytes not yet read
	final     bool  // it is the message's last
	key       [4]byte
	pos       int   // the mask's position
	length    int64 // the message's bytes so far (the read limit)
	inMessage bool  // a message was begun and has not ended
	err       error // sticky: reads ended
}

func newFrameReader(s *Stream, rc syscall.RawConn) *frameReader {
	return &frameReader{s: s, rc: rc, final: true}
}

// errUnexpectedEOF is gorilla's error for a connection that ends
// without a close frame.
var errUnexpectedEOF = &websocket.CloseError{Code: websocket.CloseAbnormalClosure, Text: io.ErrUnexpectedEOF.Error()}

// fill reads at least one more byte into the buffer, waiting on the
// poller (and its read deadline) while the socket holds nothing.
func (f *frameReader) fill() error {
	for {
		_, err := f.read(true)
		if err == nil || !f.s.woken(err) {
			return err
		}
	}
}

// fillNow is fill without the waiting: false when the socket holds
// nothing now (and no byte is held).
func (f *frameReader) fillNow() (bool, error) {
	for {
		ok, err := f.read(false)
		if err == nil || !f.s.woken(err) {
			return ok, err
		}
	}
}

func (f *frameReader) read(wait bool) (bool, error) {
	if f.bp != nil && f.r == f.w {
		f.r, f.w = 0, 0
	}
	if f.bp != nil && f.w == len(*f.bp) { // full: move the unread bytes down
		f.w = copy(*f.bp, (*f.bp)[f.r:f.w])
		f.r = 0
	}
	var n int
	var rerr error
	err := f.rc.Read(func(fd uintptr) bool {
		if f.bp == nil {
			f.bp = directBuffers.Get().(*[]byte)
			directBuffersOut.Add(1)
			f.r, f.w = 0, 0
		}
		n, rerr = readNow(fd, (*f.bp)[f.w:])
		for rerr == syscall.EINTR {
			n, rerr = readNow(fd, (*f.bp)[f.w:])
		}
		if rerr == syscall.EAGAIN {
			if f.r == f.w { // nothing held: wait without a buffer
				f.release()
			}
			return !wait
		}
		return true
	})
	if err != nil { // the deadline, or closed
		return false, err
	}
	if rerr == syscall.EAGAIN { // only when not waiting
		return false, nil
	}
	if rerr != nil {
		return false, &os.SyscallError{Syscall: "read", Err: rerr}
	}
	if n == 0 {
		return false, errUnexpectedEOF
	}
	f.w += n
	return true, nil
}

// wait waits until the socket holds a byte to read, unless some are
// buffered already, and reads what it holds. It is called between
// messages from the read loop's own frame: an idle socket's goroutine
// parks there, a few frames deep, instead of in NextReader and
// nextFrame, whose frames (their control-frame and skip buffers) would
// make it park beyond a goroutine's starting 2 KiB of stack; a goroutine
// whose stack grew keeps it while it lives (the runtime halves a stack
// only when a quarter of it is more than enough). An error ends the reads
// as it would have in NextReader.
func (f *frameReader) wait() error {
	if f.err != nil || (f.bp != nil && f.r < f.w) {
		return nil // NextReader returns the error, or decodes what is held
	}
	if err := f.fill(); err != nil {
		f.fail(err)
		return err
	}
	return nil
}

func (f *frameReader) release() {
	if f.bp != nil {
		directBuffers.Put(f.bp)
		directBuffersOut.Add(-1)
		f.bp = nil
	}
}

// need makes sure n (≤ 14) unread bytes are in the buffer.
func (f *frameReader) need(n int) ([]byte, error) {
	for f.bp == nil || f.w-f.r < n {
		if f.bp != nil && len(*f.bp)-f.r < n { // not enough room after r
			f.w = copy(*f.bp, (*f.bp)[f.r:f.w])
			f.r = 0
		}
		if err := f.fill(); err != nil {
			return nil, err
		}
	}
	b := (*f.bp)[f.r : f.r+n]
	f.r += n
	return b, nil
}

// readPayload reads n bytes of the current frame, unmasked, into p.
func (f *frameReader) readPayload(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if f.bp == nil || f.r == f.w {
		if err := f.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*f.bp)[f.r:f.w])
	f.r += n
	f.pos = maskBytes(f.key, f.pos, p[:n])
	if f.r == f.w {
		f.release()
	}
	return n, nil
}

// nextFrame reads the next frame's header. Control frames are handled
// here (their handling may end the reads); a data frame's type is
// returned (continuation: 0) with its payload left to read. With
// between, it returns errIdle instead of waiting for a frame after a
// control frame when the socket holds nothing more.
func (f *frameReader) nextFrame(between bool) (int, error) {
	for first := true; ; first = false {
		if between && !first && (f.bp == nil || f.r == f.w) {
			ok, err := f.fillNow()
			if err != nil {
				return 0, err
			}
			if !ok {
				return 0, errIdle
			}
		}
		h, err := f.need(2)
		if err != nil {
			return 0, err
		}
		b0, b1 := h[0], h[1]
		typ := int(b0 & 0xf)
		final := b0&0x80 != 0
		size := int64(b1 & 0x7f)
		var reasons []string
		if b0&0x40 != 0 {
			reasons = append(reasons, "RSV1 set")
		}
		if b0&0x20 != 0 {
			reasons = append(reasons, "RSV2 set")
		}
		if b0&0x10 != 0 {
			reasons = append(reasons, "RSV3 set")
		}
		switch typ {
		case websocket.CloseMessage, websocket.PingMessage, websocket.PongMessage:
			if size > 125 {
				reasons = append(reasons, "len > 125 for control")
			}
			if !final {
				reasons = append(reasons, "FIN not set on control")
			}
		case websocket.TextMessage, websocket.BinaryMessage:
			if f.inMessage {
				reasons = append(reasons, "data before FIN")
			}
		case 0:
			if !f.inMessage {
				reasons = append(reasons, "continuation after FIN")
			}
		default:
			reasons = append(reasons, "bad opcode "+strconv.Itoa(typ))
		}
		if b1&0x80 == 0 {
			reasons = append(reasons, "bad MASK")
		}
		if len(reasons) > 0 {
			return 0, f.protocolError(strings.Join(reasons, ", "))
		}
		switch size {
		case 126:
			p, err := f.need(2)
			if err != nil {
				return 0, err
			}
			size = int64(binary.BigEndian.Uint16(p))
		case 127:
			p, err := f.need(8)
			if err != nil {
				return 0, err
			}
			u := binary.BigEndian.Uint64(p)
			if u > 1<<62 {
				u = 1 << 62 // above any limit: refused below
			}
			size = int64(u)
		}
		k, err := f.need(4)
		if err != nil {
			return 0, err
		}
		copy(f.key[:], k)
		f.pos = 0
		if typ != websocket.CloseMessage && typ != websocket.PingMessage && typ != websocket.PongMessage {
			if typ != 0 {
				f.length = 0
			}
			f.length += size
			if f.length > f.s.opts.hardLimit() {
				f.s.control(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseMessageTooBig, ""), time.Now().Add(controlWait))
				return 0, websocket.ErrReadLimit
			}
			f.remaining = size
			f.final = final
			f.inMessage = !final
			return typ, nil
		}
		var buf [125]byte
		payload := buf[:size]
		for got := 0; got < len(payload); {
			n, err := f.readPayload(payload[got:])
			if err != nil {
				return 0, err
			}
			got += n
		}
		if err := f.control(typ, payload); err != nil {
			return 0, err
		}
	}
}

// control handles a ping, a pong or a close frame, as the stream's
// gorilla handlers do (wsrpc.go New, ping.go AckPings).
func (f *frameReader) control(typ int, payload []byte) error {
	s := f.s
	switch typ {
	case websocket.PongMessage:
		s.extendReadDeadline()
		return nil
	case websocket.PingMessage:
		if ack := s.ack; ack != nil {
			s.extendReadDeadline() // a ping is a sign of life
			if err := ack(); err != nil {
				return err
			}
			return ignoreClosing(s.control(websocket.PongMessage, payload, time.Now().Add(s.opts.WriteTimeout)))
		}
		return ignoreClosing(s.control(websocket.PongMessage, payload, time.Now().Add(controlWait)))
	}
	code, text := websocket.CloseNoStatusReceived, ""
	if len(payload) >= 2 {
		code = int(binary.BigEndian.Uint16(payload))
		if !validCloseCode(code) {
			return f.protocolError("bad close code " + strconv.Itoa(code))
		}
		text = string(payload[2:])
		if !utf8.ValidString(text) {
			return f.protocolError("invalid utf8 payload in close frame")
		}
	}
	s.control(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(controlWait))
	return &websocket.CloseError{Code: code, Text: text}
}

// validCloseCode is gorilla's rule for a close code received.
func validCloseCode(code int) bool {
	switch code {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013:
		return true
	}
	return code >= 3000 && code <= 4999
}

// protocolError closes with 1002 and the reason, as gorilla does.
func (f *frameReader) protocolError(msg string) error {
	data := websocket.FormatCloseMessage(websocket.CloseProtocolError, msg)
	if len(data) > 125 {
		data = data[:125]
	}
	f.s.control(websocket.CloseMessage, data, time.Now().Add(controlWait))
	return errors.New("websocket: " + msg)
}

// NextReader returns the next data message: its type and a reader of
// its payload, valid until the next call (which skips what is unread).
func (f *frameReader) NextReader() (int, io.Reader, error) {
	if f.err != nil {
		return 0, nil, f.err
	}
	// Skip the rest of the previous message.
	var skip [512]byte
	for f.inMessage || f.remaining > 0 {
		if _, err := f.Read(skip[:]); err != nil && err != io.EOF {
			f.err = err
			return 0, nil, err
		}
	}
	typ, err := f.nextFrame(f.s.idle != nil)
	if err == errIdle {
		return 0, nil, err
	}
	if err != nil {
		f.fail(err)
		return 0, nil, err
	}
	return typ, f, nil
}

// errIdle: between messages, the socket holds nothing more to read after
// the control frames handled (a stream served by ServeRaw).
var errIdle = errors.New("wsrpc: nothing to read")

func (f *frameReader) fail(err error) {
	f.err = err
	f.release()
}

// Read reads the current message's payload; io.EOF at its end.
func (f *frameReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	for f.remaining == 0 {
		if f.final {
			f.inMessage = false
			return 0, io.EOF
		}
		typ, err := f.nextFrame(false)
		if err != nil {
			f.fail(err)
			return 0, err
		}
		if typ != 0 { // cannot happen: nextFrame refuses data before FIN
			err := f.protocolError("data before FIN")
			f.fail(err)
			return 0, err
		}
	}
	if int64(len(p)) > f.remaining {
		p = p[:f.remaining]
	}
	n, err := f.readPayload(p)
	f.remaining -= int64(n)
	if err != nil {
		f.fail(err)
		return n, err
	}
	return n, nil
}

// maskBytes applies the mask key to b, which starts at the payload's
// position pos, eight bytes at a time; it returns the position after b.
func maskBytes(key [4]byte, pos int, b []byte) int {
	end := pos + len(b)
	i := 0
	for ; i < len(b) && (pos+i)&3 != 0; i++ {
		b[i] ^= key[(pos+i)&3]
	}
	// From here on (pos+i) is a multiple of 4.
	if len(b)-i >= 8 {
		k := uint64(binary.LittleEndian.Uint32(key[:]))
		k |= k << 32
		for ; len(b)-i >= 8; i += 8 {
			binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k)
		}
	}
	for ; i < len(b); i++ {
		b[i] ^= key[(pos+i)&3]
	}
	return end
}
