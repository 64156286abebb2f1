package wsrpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// clientFrame is one frame as a client sends it: masked (unless
// unmasked), with the length in the shortest form, or in the 64-bit form
// when long64.
type clientFrame struct {
	op       byte
	fin      bool
	payload  []byte
	rsv      byte // RSV bits, already shifted (0x40, 0x20, 0x10)
	unmasked bool
	long64   bool
	size     int64 // > 0: the length announced, not len(payload)
}

func (f clientFrame) bytes() []byte {
	b0 := f.op | f.rsv
	if f.fin {
		b0 |= 0x80
	}
	var mask byte = 0x80
	if f.unmasked {
		mask = 0
	}
	n := int64(len(f.payload))
	if f.size > 0 {
		n = f.size
	}
	out := []byte{b0}
	switch {
	case f.long64 || n > 0xffff:
		out = append(out, mask|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	case n >= 126:
		out = append(out, mask|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mask|byte(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	if f.unmasked {
		return append(out, f.payload...)
	}
	out = append(out, key[:]...)
	for i, c := range f.payload {
		out = append(out, c^key[i&3])
	}
	return out
}

func data(op byte, fin bool, s string) clientFrame {
	return clientFrame{op: op, fin: fin, payload: []byte(s)}
}

func closeFrame(code int, text string) clientFrame {
	return clientFrame{op: websocket.CloseMessage, fin: true, payload: websocket.FormatCloseMessage(code, text)}
}

// outcome is what a server's reads produced and what its peer saw.
type outcome struct {
	messages []string // handed to OnBinary, in order
	pongs    []string // the pongs the peer received
	closed   string   // the close frame the peer received ("" none): "code reason"
	err      string   // why the reads ended
}

// runReader serves one socket with opts (RawText: every message to
// OnBinary), sends frames to it as raw bytes (byte by byte when
// oneByte), then reads what the server answers until it closes. The
// socket is on loopback TCP, so ReadDirect reads from the kernel socket.
func runReader(t *testing.T, opts Options, frames []clientFrame, oneByte bool) outcome {
	t.Helper()
	var all []byte
	for _, f := range frames {
		all = append(all, f.bytes()...)
	}
	return runRaw(t, opts, all, oneByte, false)
}

// runRaw is runReader for bytes as they are; with end, the client then
// closes its side for writing (the server reads EOF).
func runRaw(t *testing.T, opts Options, all []byte, oneByte, end bool) outcome {
	t.Helper()
	var o outcome
	msgs := make(chan string, 64)
	ended := make(chan error, 1)
	direct := make(chan bool, 1)
	c := serve(t, func(ws *websocket.Conn) {
		opts.RawText = true
		opts.OnBinary = func(b []byte) error {
			if string(b) == "fail" {
				return errors.New("refused by the handler")
			}
			msgs <- string(b)
			return nil
		}
		s := New(ws, opts)
		direct <- s.fr != nil
		defer s.Close()
		ended <- s.ReadObject(nil)
	})
	if got := testutil.Recv(t, "the stream", direct); got != opts.ReadDirect {
		t.Fatalf("reading directly = %v; want %v", got, opts.ReadDirect)
	}
	pongs := make(chan string, 16)
	c.SetPongHandler(func(s string) error { pongs <- s; return nil })
	nc := c.NetConn()
	go func() { // ends with the connection (the test's cleanup closes it)
		if !oneByte {
			nc.Write(all)
			if end {
				nc.(*net.TCPConn).CloseWrite()
			}
			return
		}
		for i := range all {
			if _, err := nc.Write(all[i : i+1]); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(wait))
	for {
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			o.closed = fmt.Sprintf("%d %s", ce.Code, ce.Text)
		}
		if err != nil {
			break
		}
	}
	o.err = fmt.Sprint(testutil.Recv(t, "the end of the reads", ended))
	close(msgs)
	for m := range msgs {
		o.messages = append(o.messages, m)
	}
	close(pongs)
	for p := range pongs {
		o.pongs = append(o.pongs, p)
	}
	return o
}

// The direct reader accepts and refuses what gorilla does, with the same
// close frames: each case runs against both, byte by byte and whole.
func TestReadDirect(t *testing.T) {
	long := strings.Repeat("x", 300)    // a 16-bit length
	bigger := strings.Repeat("y", 5000) // more than the reader's buffer
	cases := []struct {
		name   string
		limit  int64
		hard   int64
		frames []clientFrame
		want   outcome // err: a substring
	}{
		{
			name: "fragmented with pings between the fragments",
			frames: []clientFrame{
				data(websocket.TextMessage, false, "he"),
				{op: websocket.PingMessage, fin: true, payload: []byte("p1")},
				data(0, false, "ll"),
				{op: websocket.PingMessage, fin: true, payload: []byte("p2")},
				data(0, true, "o"),
				data(websocket.BinaryMessage, true, "next"),
				closeFrame(websocket.CloseNormalClosure, "bye"),
			},
			want: outcome{messages: []string{"hello", "next"}, pongs: []string{"p1", "p2"}, closed: "1000 ", err: "close 1000 (normal): bye"},
		},
		{
			name: "lengths: empty, 7-bit, 16-bit, 64-bit, larger than a read",
			frames: []clientFrame{
				data(websocket.BinaryMessage, true, ""),
				data(websocket.BinaryMessage, true, "k"),
				data(websocket.BinaryMessage, true, long),
				{op: websocket.BinaryMessage, fin: true, payload: []byte("sixty-four"), long64: true},
				data(websocket.TextMessage, true, bigger),
				{op: websocket.PongMessage, fin: true, payload: []byte("unasked")},
				closeFrame(websocket.CloseGoingAway, ""),
			},
			want: outcome{messages: []string{"", "k", long, "sixty-four", bigger}, closed: "1001 ", err: "close 1001 (going away)"},
		},
		{
			name:   "close without a status",
			frames: []clientFrame{{op: websocket.CloseMessage, fin: true}},
			want:   outcome{closed: "1005 ", err: "close 1005 (no status)"},
		},
		{
			name:   "over the hard limit, announced in 64 bits: refused before its payload",
			limit:  10,
			hard:   100,
			frames: []clientFrame{{op: websocket.BinaryMessage, fin: true, payload: []byte("x"), size: 1 << 40}},
			want:   outcome{closed: "1009 ", err: websocket.ErrReadLimit.Error()},
		},
		{
			name:  "over the hard limit across fragments",
			limit: 10,
			hard:  100,
			frames: []clientFrame{
				data(websocket.BinaryMessage, false, strings.Repeat("a", 60)),
				data(0, true, strings.Repeat("b", 60)),
			},
			want: outcome{closed: "1009 ", err: websocket.ErrReadLimit.Error()},
		},
		{
			name:   "over the limit, under the hard limit",
			limit:  10,
			hard:   100,
			frames: []clientFrame{data(websocket.BinaryMessage, true, "ok"), data(websocket.BinaryMessage, true, strings.Repeat("z", 50))},
			want:   outcome{messages: []string{"ok"}, closed: "1009 binary message of 50 bytes exceeds the limit of 10 bytes", err: "1009"},
		},
		{
			name:   "the handler refuses",
			frames: []clientFrame{data(websocket.BinaryMessage, true, "fail")},
			want:   outcome{closed: "1002 refused by the handler", err: "1002"},
		},
		{
			name:   "unmasked",
			frames: []clientFrame{{op: websocket.BinaryMessage, fin: true, payload: []byte("x"), unmasked: true}},
			want:   outcome{closed: "1002 bad MASK", err: "websocket: bad MASK"},
		},
		{
			name:   "RSV bits",
			frames: []clientFrame{{op: websocket.BinaryMessage, fin: true, payload: []byte("x"), rsv: 0x70}},
			want:   outcome{closed: "1002 RSV1 set, RSV2 set, RSV3 set", err: "RSV1 set"},
		},
		{
			name:   "bad opcode",
			frames: []clientFrame{data(3, true, "x")},
			want:   outcome{closed: "1002 bad opcode 3", err: "bad opcode 3"},
		},
		{
			name:   "continuation without a start",
			frames: []clientFrame{data(0, true, "x")},
			want:   outcome{closed: "1002 continuation after FIN", err: "continuation after FIN"},
		},
		{
			name:   "a new message inside a fragmented one",
			frames: []clientFrame{data(websocket.BinaryMessage, false, "a"), data(websocket.BinaryMessage, true, "b")},
			want:   outcome{closed: "1002 data before FIN", err: "data before FIN"},
		},
		{
			name:   "fragmented ping",
			frames: []clientFrame{{op: websocket.PingMessage, payload: []byte("p")}},
			want:   outcome{closed: "1002 FIN not set on control", err: "FIN not set on control"},
		},
		{
			name:   "control frame over 125 bytes",
			frames: []clientFrame{{op: websocket.PingMessage, fin: true, payload: []byte(strings.Repeat("p", 126))}},
			want:   outcome{closed: "1002 len > 125 for control", err: "len > 125 for control"},
		},
		{
			name:   "bad close code",
			frames: []clientFrame{{op: websocket.CloseMessage, fin: true, payload: []byte{0x03, 0xec}}}, // 1004, reserved
			want:   outcome{closed: "1002 bad close code 1004", err: "bad close code 1004"},
		},
		{
			name:   "close reason not UTF-8",
			frames: []clientFrame{closeFrame(1000, "\xff")},
			want:   outcome{closed: "1002 invalid utf8 payload in close frame", err: "invalid utf8"},
		},
	}
	for _, tc := range cases {
		for _, direct := range []bool{true, false} {
			for _, oneByte := range []bool{false, true} {
				name := fmt.Sprintf("%s/direct=%v/bytewise=%v", tc.name, direct, oneByte)
				t.Run(name, func(t *testing.T) {
					opts := Options{ReadDirect: direct, Limit: tc.limit, HardLimit: tc.hard, WriteTimeout: wait}
					got := runReader(t, opts, tc.frames, oneByte)
					if !slicesEqual(got.messages, tc.want.messages) || !slicesEqual(got.pongs, tc.want.pongs) || got.closed != tc.want.closed || !strings.Contains(got.err, tc.want.err) {
						t.Fatalf("got  %+q\nwant %+q (err a substring)", got, tc.want)
					}
				})
			}
		}
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A connection that ends inside a frame ends the reads with gorilla's
// abnormal closure (1006), for both readers.
func TestReadDirectTruncated(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprint(direct), func(t *testing.T) {
			ended := make(chan error, 1)
			c := serve(t, func(ws *websocket.Conn) {
				s := New(ws, Options{ReadDirect: direct, RawText: true, OnBinary: func([]byte) error { return nil }})
				defer s.Close()
				ended <- s.ReadObject(nil)
			})
			f := data(websocket.BinaryMessage, true, "truncated").bytes()
			nc := c.NetConn()
			nc.Write(f[:len(f)-3])
			nc.(*net.TCPConn).CloseWrite()
			err := testutil.Recv(t, "the end of the reads", ended)
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("reads ended with %v; want a close error 1006", err)
			}
		})
	}
}

// A peer silent past the keepalive's deadline is disconnected: the
// direct reader waits on the poller under the socket's read deadline; a
// socket parked in a Poller (ServeRaw) has no reader waiting, and each
// ping looks.
func TestReadDirectDeadline(t *testing.T) {
	for _, parked := range []bool{false, true} {
		t.Run(fmt.Sprint("parked=", parked), func(t *testing.T) {
			var p Poller
			defer p.Wait()
			ended := make(chan error, 1)
			c := serve(t, func(ws *websocket.Conn) {
				opts := Options{ReadDirect: true, RawText: true, PingInterval: 10 * time.Millisecond, OnBinary: func([]byte) error { return nil }}
				if !parked {
					s := New(ws, opts)
					defer s.Close()
					ended <- s.ReadObject(nil)
					return
				}
				done := make(chan struct{})
				opts.Idle = &p
				opts.OnReadEnd = func(err error) {
					ended <- err
					close(done)
				}
				s := New(ws, opts)
				defer s.Close()
				s.ServeRaw()
				<-done
			})
			c.SetPingHandler(func(string) error { return nil }) // never answer
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
			err := testutil.Recv(t, "the end of the reads", ended)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("reads ended with %v; want a timeout", err)
			}
		})
	}
}

// A JSON-RPC socket (not RawText) over the direct reader: a request is
// decoded, an oversized one is answered with an error and skipped.
func TestReadDirectJSON(t *testing.T) {
	type res struct {
		method string
		err    error
	}
	got := make(chan res, 4)
	c := serve(t, func(ws *websocket.Conn) {
		s := New(ws, Options{ReadDirect: true, Limit: 100, WriteTimeout: wait})
		defer s.Close()
		for {
			var req struct{ Method string }
			err := s.ReadObject(&req)
			got <- res{req.Method, err}
			if err != nil {
				return
			}
		}
	})
	c.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"`+strings.Repeat("m", 200)+`"}`))
	c.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":2,"method":"agent.info"}`))
	if r := testutil.Recv(t, "a request", got); r.err != nil || r.method != "agent.info" {
		t.Fatalf("read %+v; want agent.info", r)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	_, msg, err := c.ReadMessage()
	if err != nil || !bytes.Contains(msg, []byte(fmt.Sprint(protocol.CodeTooLarge))) {
		t.Fatalf("answer to the oversized request: %s, %v", msg, err)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if r := testutil.Recv(t, "the end", got); !websocket.IsCloseError(r.err, websocket.CloseNormalClosure) {
		t.Fatalf("reads ended with %v; want close 1000", r.err)
	}
}

// maskBytes agrees with a byte-at-a-time mask at every start position
// and length.
func TestMaskBytes(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for pos := range 4 {
		for n := range 40 {
			b := make([]byte, n)
			want := make([]byte, n)
			for i := range b {
				b[i] = byte(i * 7)
				want[i] = b[i] ^ key[(pos+i)&3]
			}
			if end := maskBytes(key, pos, b); end != pos+n || !bytes.Equal(b, want) {
				t.Fatalf("pos %d n %d: %x, end %d; want %x", pos, n, b, end, want)
			}
		}
	}
}

// FuzzReadDirect: whatever bytes a client sends, the direct reader hands
// the handler the same messages as gorilla's reader, and ends.
func FuzzReadDirect(f *testing.F) {
	for _, fr := range [][]clientFrame{
		{data(websocket.BinaryMessage, true, "hello")},
		{data(websocket.TextMessage, false, "he"), {op: websocket.PingMessage, fin: true, payload: []byte("p")}, data(0, true, "llo")},
		{closeFrame(1000, "bye")},
		{{op: websocket.BinaryMessage, fin: true, payload: []byte("x"), unmasked: true}},
		{{op: websocket.BinaryMessage, fin: true, size: 1 << 40, long64: true}},
	} {
		var b []byte
		for _, x := range fr {
			b = append(b, x.bytes()...)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		opts := Options{Limit: 1 << 10}
		want := runRaw(t, opts, raw, false, true)
		opts.ReadDirect = true
		got := runRaw(t, opts, raw, false, true)
		if fmt.Sprint(got.messages) != fmt.Sprint(want.messages) {
			t.Fatalf("messages: direct %q, gorilla %q", got.messages, want.messages)
		}
	})
}
