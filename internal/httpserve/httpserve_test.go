package httpserve

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve serves h with o on loopback until the test ends.
func serve(t *testing.T, h http.Handler, o Options) string {
	addr, _ := serveLimited(t, h, o)
	return addr
}

// serveLimited is serve, with the server's limiter.
func serveLimited(t *testing.T, h http.Handler, o Options) (string, *limiter) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, l := newServer(h, o)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String(), l
}

// closedWithin reports whether the server closes c within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// M2: idle connections from one address are bounded: past
// MaxPendingPerIP the next is closed at once, and there is room again
// once one goes; one upgraded to a WebSocket does not count.
func TestPendingConnectionsBounded(t *testing.T) {
	up := websocket.Upgrader{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsUpgrade(r) {
			ws, err := up.Upgrade(w, r, nil)
			if err == nil {
				go func() { ws.ReadMessage(); ws.Close() }()
			}
			return
		}
		w.Write([]byte("ok"))
	})
	addr, l := serveLimited(t, h, Options{MaxPendingPerIP: 3, MaxPending: 100})
	// A WebSocket first: it must not count.
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var idle []net.Conn
	for range 3 {
		idle = append(idle, dial(t, addr))
	}
	// The server sees new connections in its accept loop; once it counts
	// the three (a request on one would make it active for a moment, and
	// let a 4th in meanwhile), a 4th is one too many.
	testutil.WaitFor(t, "three pending connections counted", func() bool { return l.pending("127.0.0.1") == 3 })
	extra := dial(t, addr)
	if !closedWithin(t, extra, 10*time.Second) {
		t.Fatal("a 4th idle connection from the same address was kept (MaxPendingPerIP 3)")
	}
	idle[0].Close()
	// Once one is gone, there is room again: eventually a new connection
	// gets an answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dial(t, addr)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no room after an idle connection closed")
		}
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("x")); err != nil {
		t.Errorf("the WebSocket was closed: %v", err)
	}
}

// M2: a connection that sends no headers is closed after
// ReadHeaderTimeout; an idle keep-alive one after IdleTimeout; an
// ordinary request's response is bounded by WriteTimeout, while a
// WebSocket outlives it.
func TestTimeouts(t *testing.T) {
	up := websocket.Upgrader{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsUpgrade(r) {
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			for {
				mt, p, err := ws.ReadMessage()
				if err != nil || ws.WriteMessage(mt, p) != nil {
					ws.Close()
					return
				}
			}
		}
		w.Write([]byte("ok"))
	})
	const short = 300 * time.Millisecond
	addr := serve(t, h, Options{ReadHeaderTimeout: short, IdleTimeout: short, WriteTimeout: short, ReadTimeout: short})
	if !closedWithin(t, dial(t, addr), 10*time.Second) {
		t.Error("a silent connection was not closed (ReadHeaderTimeout)")
	}
	c := dial(t, addr)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("an idle keep-alive connection was not closed (IdleTimeout): %v", err)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// Past every timeout (the WebSocket layer has its own keepalive), the
	// WebSocket still echoes.
	time.Sleep(3 * short) // what is measured: that nothing closes it
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := ws.ReadMessage(); err != nil || string(p) != "hi" {
		t.Errorf("WebSocket after the timeouts: %q, %v; want the echo", p, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
