package wsrpc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// readerStacks returns the stack of every goroutine in the read loop.
func readerStacks() []string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	var out []string
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "wsrpc.(*Stream).readObject(") {
			out = append(out, g)
		}
	}
	return out
}

// An idle direct-read socket, after messages of every kind went through
// the frame decoder, waits in the read loop's own frame (frameReader.wait),
// not inside the decoder, and holds no read buffer: a reader parked in
// NextReader and nextFrame needs more than a goroutine's starting 2 KiB
// of stack, and every idle attached terminal has one such reader
// (docs/performance.md, "Lean session").
func TestReadDirectIdleParksShallow(t *testing.T) {
	got := make(chan string, 8)
	var stream atomic.Pointer[Stream]
	c := serve(t, func(ws *websocket.Conn) {
		s := New(ws, Options{ReadDirect: true, RawText: true, WriteTimeout: wait,
			OnBinary: func(b []byte) error { got <- string(b); return nil }})
		defer s.Close()
		stream.Store(s)
		s.ReadObject(nil)
	})
	// A message, a ping between the fragments of another, a large one.
	if err := c.WriteMessage(websocket.BinaryMessage, []byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NetConn().Write(append(append(data(websocket.TextMessage, false, "frag").bytes(),
		data(websocket.PingMessage, true, "p").bytes()...), data(0, true, "ment").bytes()...)); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 10000)
	if err := c.WriteMessage(websocket.BinaryMessage, []byte(big)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"k", "fragment", big} {
		if m := testutil.Recv(t, "a message", got); m != want {
			t.Fatalf("read %.20q; want %.20q", m, want)
		}
	}
	var last []string
	testutil.WaitFor(t, "the reader parked between messages", func() bool {
		last = readerStacks()
		return len(last) == 1 && strings.Contains(last[0], "wsrpc.(*frameReader).wait(") &&
			strings.Contains(last[0], "internal/poll.runtime_pollWait")
	})
	if strings.Contains(last[0], "NextReader") || strings.Contains(last[0], "nextFrame") {
		t.Fatalf("the idle reader parks inside the frame decoder:\n%s", last[0])
	}
	if stream.Load().fr == nil {
		t.Fatal("the stream reads through gorilla, not directly")
	}
	if n := directBuffersOut.Load(); n != 0 {
		t.Fatalf("the idle reader holds %d read buffers; want 0", n)
	}
}

// serveRaw serves one RawText direct stream parked in p between
// messages; the messages and the end of its reads come on the channels.
func serveRaw(t *testing.T, p *Poller, ping time.Duration) (*websocket.Conn, <-chan string, <-chan error, *atomic.Pointer[Stream]) {
	t.Helper()
	got := make(chan string, 64)
	ended := make(chan error, 1)
	var stream atomic.Pointer[Stream]
	c := serve(t, func(ws *websocket.Conn) {
		done := make(chan struct{})
		s := New(ws, Options{ReadDirect: true, RawText: true, Idle: p, WriteTimeout: wait, PingInterval: ping,
			OnBinary: func(b []byte) error { got <- string(b); return nil },
			OnReadEnd: func(err error) {
				ended <- err
				close(done)
			}})
		stream.Store(s)
		s.ServeRaw()
		<-done
		s.Close()
	})
	return c, got, ended, &stream
}

// A parked socket gets every message in order, whatever arrives while
// it is parked or being read (a message, a ping, a fragmented message, a
// frame in pieces), and is parked again after each: no goroutine reads
// it while it has nothing, and it holds no buffer then.
func TestServeRawParks(t *testing.T) {
	var p Poller
	defer p.Wait()
	// The pings make the reader park after each message; they go
	// unanswered (a pong written between the pieces of case 2's frame
	// would break it), and each message keeps the socket alive.
	c, got, ended, _ := serveRaw(t, &p, 20*time.Millisecond)
	parked := func() bool {
		return len(readerStacks()) == 0 && strings.Count(goroutines(), "wsrpc.(*Stream).serveRaw(") == 0 &&
			directBuffersOut.Load() == 0
	}
	nc := c.NetConn()
	for i := range 50 {
		testutil.WaitFor(t, "the socket parked", parked)
		want := fmt.Sprint("message ", i)
		var err error
		switch i % 4 {
		case 0:
			err = c.WriteMessage(websocket.BinaryMessage, []byte(want))
		case 1: // a ping first, then the message in two fragments
			_, err = nc.Write(append(append(data(websocket.PingMessage, true, "p").bytes(),
				data(websocket.BinaryMessage, false, want[:3]).bytes()...), data(0, true, want[3:]).bytes()...))
		case 2: // a frame in two pieces: the reader waits for the rest
			f := data(websocket.BinaryMessage, true, want).bytes()
			if _, err = nc.Write(f[:3]); err == nil {
				testutil.WaitFor(t, "the reader waiting inside the frame", func() bool {
					return strings.Contains(goroutines(), "wsrpc.(*frameReader).fill(")
				})
				_, err = nc.Write(f[3:])
			}
		case 3: // two messages in one write
			_, err = nc.Write(append(data(websocket.TextMessage, true, want).bytes(), data(websocket.BinaryMessage, true, want).bytes()...))
			if m := testutil.Recv(t, "a message", got); m != want {
				t.Fatalf("message %d: read %q", i, m)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if m := testutil.Recv(t, "a message", got); m != want {
			t.Fatalf("message %d: read %q", i, m)
		}
	}
	testutil.WaitFor(t, "the socket parked", parked)
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	if err := testutil.Recv(t, "the end of the reads", ended); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("reads ended with %v; want close 1000", err)
	}
}

// A reader that read a message waits for the next, without keepalive
// pings for good: typing starts no goroutine per keystroke. A control
// frame (a ping, a pong answering the keepalive) is no message: the
// socket parks again at once.
func TestServeRawLingers(t *testing.T) {
	var p Poller
	defer p.Wait()
	c, got, ended, _ := serveRaw(t, &p, 0)
	readers := func() int { return strings.Count(goroutines(), "wsrpc.(*Stream).serveRaw(") }
	testutil.WaitFor(t, "the socket parked", func() bool { return readers() == 0 })
	pongs := make(chan string, 1)
	c.SetPongHandler(func(d string) error { pongs <- d; return nil })
	go func() { // ends with the socket
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	if err := c.WriteControl(websocket.PingMessage, []byte("idle?"), time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	if d := testutil.Recv(t, "the pong", pongs); d != "idle?" {
		t.Fatalf("pong %q", d)
	}
	testutil.WaitFor(t, "the socket parked after a ping", func() bool { return readers() == 0 })
	if err := c.WriteMessage(websocket.BinaryMessage, []byte("a")); err != nil {
		t.Fatal(err)
	}
	testutil.Recv(t, "a message", got)
	testutil.WaitFor(t, "the reader waiting for more", func() bool {
		return strings.Contains(goroutines(), "wsrpc.(*Stream).linger(")
	})
	for i := range 20 {
		if err := c.WriteMessage(websocket.BinaryMessage, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		testutil.Recv(t, "a message", got)
		if n := readers(); n != 1 {
			t.Fatalf("%d readers while the client types; want 1", n)
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if err := testutil.Recv(t, "the end of the reads", ended); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("reads ended with %v; want close 1000", err)
	}
}

// Closing a parked stream ends its reads (OnReadEnd, once) and takes it
// out of the poller, whose goroutine ends once nothing is parked.
func TestServeRawCloseParked(t *testing.T) {
	var p Poller
	_, _, ended, stream := serveRaw(t, &p, 0)
	testutil.WaitFor(t, "the socket parked", func() bool {
		return stream.Load() != nil && strings.Contains(goroutines(), "wsrpc.(*Poller).run(") &&
			strings.Count(goroutines(), "wsrpc.(*Stream).serveRaw(") == 0
	})
	stream.Load().Close()
	if err := testutil.Recv(t, "the end of the reads", ended); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("reads ended with %v; want the closed socket's error", err)
	}
	p.Wait() // hangs if the poller's goroutine did not end
	select {
	case err := <-ended:
		t.Fatalf("the reads ended twice: %v", err)
	default:
	}
}

// Many sockets parked in one poller; each gets its own messages, and
// ends with its peer; the poller's goroutine ends after the last.
func TestServeRawMany(t *testing.T) {
	var p Poller
	const n = 20
	type sock struct {
		c     *websocket.Conn
		got   <-chan string
		ended <-chan error
	}
	var socks []sock
	for range n {
		c, got, ended, _ := serveRaw(t, &p, 0)
		socks = append(socks, sock{c, got, ended})
	}
	for round := range 3 {
		for i, s := range socks {
			if err := s.c.WriteMessage(websocket.BinaryMessage, []byte(fmt.Sprint(i, "/", round))); err != nil {
				t.Fatal(err)
			}
		}
		for i, s := range socks {
			if m := testutil.Recv(t, "a message", s.got); m != fmt.Sprint(i, "/", round) {
				t.Fatalf("socket %d, round %d: read %q", i, round, m)
			}
		}
	}
	for _, s := range socks {
		s.c.Close()
	}
	for _, s := range socks {
		testutil.Recv(t, "the end of the reads", s.ended)
	}
	p.Wait()
}

func goroutines() string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return b.String()
}
