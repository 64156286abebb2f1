package wsconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// notTCP hides a connection's type, as the agent's tunnel streams are
// not TCP: frames then go out in one or two plain writes.
type notTCP struct{ net.Conn }

type notTCPListener struct {
	net.Listener
	wrap func(net.Conn) net.Conn
}

func (l notTCPListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.wrap(c), nil
}

// serverPair is pair with the server side upgraded through ServerWriter
// (on a plain TCP connection, or on one that is not a *net.TCPConn) and
// wrapped by New with o.
func serverPair(t *testing.T, tcp bool, o Options) (client *websocket.Conn, server *Conn) {
	t.Helper()
	var wrap func(net.Conn) net.Conn
	if !tcp {
		wrap = func(c net.Conn) net.Conn { return notTCP{c} }
	}
	return wrappedPair(t, o, wrap)
}

// wrappedPair is serverPair with the server's connection wrapped by wrap
// (nil: plain TCP).
func wrappedPair(t *testing.T, o Options, wrap func(net.Conn) net.Conn) (client *websocket.Conn, server *Conn) {
	t.Helper()
	tcp := wrap == nil
	got := make(chan *websocket.Conn, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(ServerWriter(w), r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		got <- ws
	}))
	if !tcp {
		srv.Listener = notTCPListener{srv.Listener, wrap}
	}
	srv.Start()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := New(<-got, o)
	t.Cleanup(func() { c.Close(); s.Close(websocket.CloseNormalClosure, ""); srv.Close() })
	if s.fc == nil {
		t.Fatal("the server Conn does not write its own frames")
	}
	if _, isTCP := s.fc.Conn.(*net.TCPConn); isTCP != tcp {
		t.Fatalf("server connection %T, want TCP %v", s.fc.Conn, tcp)
	}
	return c, s
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// Conn's own frames read, with gorilla's client, as the messages written:
// every length encoding (7, 16 and 64 bits, at their edges), bodies small
// enough to be copied behind their header and larger ones, messages split
// at FrameBytes, the empty end of the direction and a status.
func TestServerWriterFrames(t *testing.T) {
	sizes := []int{1, 125, 126, 127, smallFrame, smallFrame + 1, 65535, 65536, 65537, 300 << 10}
	for _, tcp := range []bool{true, false} {
		name := "tcp"
		if !tcp {
			name = "not-tcp"
		}
		t.Run(name, func(t *testing.T) {
			const frame = 256 << 10
			cw, s := serverPair(t, tcp, Options{FrameBytes: frame})
			werr := make(chan error, 1)
			go func() {
				for _, n := range sizes {
					if _, err := s.Write(pattern(n)); err != nil {
						werr <- err
						return
					}
				}
				if err := s.CloseWrite(); err != nil {
					werr <- err
					return
				}
				werr <- s.WriteStatus(map[string]int{"files": 3})
			}()
			for _, n := range sizes {
				want := pattern(n)
				for len(want) > 0 { // a message of at most frame bytes each
					typ, b, err := cw.ReadMessage()
					if err != nil {
						t.Fatalf("size %d: %v", n, err)
					}
					k := min(len(want), frame)
					if typ != websocket.BinaryMessage || !bytes.Equal(b, want[:k]) {
						t.Fatalf("size %d: message type %d of %d bytes, want binary of %d (equal: %v)", n, typ, len(b), k, bytes.Equal(b, want[:k]))
					}
					want = want[k:]
				}
			}
			if typ, b, err := cw.ReadMessage(); err != nil || typ != websocket.BinaryMessage || len(b) != 0 {
				t.Fatalf("end of direction: type %d, %d bytes, %v; want an empty binary message", typ, len(b), err)
			}
			if typ, b, err := cw.ReadMessage(); err != nil || typ != websocket.TextMessage || string(b) != `{"files":3}` {
				t.Fatalf("status: type %d, %q, %v", typ, b, err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// gorilla's control frames (the server's pings, its pongs to the client's
// pings) go out whole between Conn's frames, never inside one: the client
// reads every byte in order while both kinds keep coming.
func TestServerWriterControlFramesBetweenFrames(t *testing.T) {
	for _, tcp := range []bool{true, false} {
		t.Run(map[bool]string{true: "tcp", false: "not-tcp"}[tcp], func(t *testing.T) {
			cw, s := serverPair(t, tcp, Options{PingInterval: time.Millisecond})
			var pings, pongs atomic.Int64
			cw.SetPingHandler(func(string) error { pings.Add(1); return nil })
			cw.SetPongHandler(func(string) error { pongs.Add(1); return nil })
			const total = 16 << 20
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Go(func() { // the server reads, so that its gorilla answers pings
				io.Copy(io.Discard, s)
			})
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
					if cw.WriteControl(websocket.PingMessage, []byte{byte(i)}, time.Now().Add(time.Second)) != nil {
						return
					}
				}
			})
			wg.Go(func() {
				data := pattern(total)
				for len(data) > 0 {
					k := min(len(data), 3000+len(data)%70000)
					if _, err := s.Write(data[:k]); err != nil {
						t.Error(err)
						return
					}
					data = data[k:]
				}
				s.CloseWrite()
			})
			// Reading until the end of the direction runs the handlers.
			got := &bytes.Buffer{}
			for {
				typ, r, err := cw.NextReader()
				if err != nil {
					t.Fatal(err)
				}
				if typ != websocket.BinaryMessage {
					t.Fatalf("message type %d", typ)
				}
				n, err := io.Copy(got, r)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			close(stop)
			if !bytes.Equal(got.Bytes(), pattern(total)) {
				t.Fatalf("read %d bytes, not the %d written", got.Len(), total)
			}
			// The pongs come to the client's reads: read until one has.
			deadline := time.Now().Add(10 * time.Second)
			for pongs.Load() == 0 && time.Now().Before(deadline) {
				cw.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
				cw.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				cw.NextReader()
			}
			if pings.Load() == 0 || pongs.Load() == 0 {
				t.Errorf("pings %d, pongs %d: want both", pings.Load(), pongs.Load())
			}
			s.Close(websocket.CloseNormalClosure, "")
			cw.Close()
			wg.Wait()
		})
	}
}

// stallConn's writes block, once stall is closed, until the connection
// is closed: a peer that stopped reading, and whose buffers are full.
type stallConn struct {
	net.Conn
	stall   chan struct{} // closed: writes block
	entered chan struct{} // gets a value when a write blocks
	closed  chan struct{}
	once    sync.Once
}

func (c *stallConn) Write(p []byte) (int, error) {
	select {
	case <-c.stall:
		select {
		case c.entered <- struct{}{}:
		default:
		}
		<-c.closed
		return 0, net.ErrClosed
	default:
		return c.Conn.Write(p)
	}
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// gorilla's control frames wait for a frame stuck on a peer that reads
// nothing only until their deadline, as they wait for gorilla's own
// writes: a ping gives up, closing the socket ends the stuck Write with
// an error, and later writes fail.
func TestServerWriterControlFrameBehindStuckFrame(t *testing.T) {
	sc := &stallConn{stall: make(chan struct{}), entered: make(chan struct{}, 1), closed: make(chan struct{})}
	cw, s := wrappedPair(t, Options{}, func(c net.Conn) net.Conn { sc.Conn = c; return sc })
	defer cw.Close()
	defer s.ws.Close() // before the cleanup's Close: it ends a stuck Write
	close(sc.stall)
	stuck := make(chan error, 1)
	go func() {
		_, err := s.Write(pattern(100 << 10))
		stuck <- err
	}()
	select {
	case <-sc.entered:
	case err := <-stuck:
		t.Fatalf("Write returned %v before it blocked", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the Write never reached the connection")
	}
	pinged := make(chan error, 1)
	go func() { pinged <- s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(50*time.Millisecond)) }()
	select {
	case err := <-pinged:
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("ping behind a stuck frame: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a ping behind a stuck frame did not give up at its deadline")
	}
	s.ws.Close()
	select {
	case err := <-stuck:
		if err == nil {
			t.Fatal("the stuck Write returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck Write did not return once the socket was closed")
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("Write after the socket was closed succeeded")
	}
}

// After gorilla sent a close frame (the answer to the peer's), a data
// frame is refused, not sent behind it.
func TestServerWriterNoFrameAfterClose(t *testing.T) {
	cw, s := serverPair(t, true, Options{})
	if err := cw.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server's read sees the close and gorilla answers it.
	if _, err := s.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after the peer's close frame returned no error")
	}
	if _, err := s.Write([]byte("late")); !errors.Is(err, websocket.ErrCloseSent) {
		t.Fatalf("Write after the close frame: %v, want ErrCloseSent", err)
	}
	// The client gets the close answer and nothing else.
	cw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := cw.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("client read %v, want the close frame", err)
	}
}
