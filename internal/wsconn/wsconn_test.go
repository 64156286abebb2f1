package wsconn

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a WebSocket on loopback.
func pair(t *testing.T) (client, server *websocket.Conn) {
	t.Helper()
	got := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		got <- ws
	}))
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	t.Cleanup(func() { c.Close(); s.Close(); srv.Close() })
	return c, s
}

// Empty binary messages end a direction; messages of any size, including
// ones split by FrameBytes, read as one stream; a status follows.
func TestStream(t *testing.T) {
	cw, sw := pair(t)
	c, s := New(cw, Options{FrameBytes: 3}), New(sw, Options{})
	var wg sync.WaitGroup
	wg.Go(func() {
		io.WriteString(c, "hello, ")
		io.WriteString(c, "world")
		c.CloseWrite()
		c.CloseWrite() // once only
		c.WriteStatus(map[string]int{"files": 2})
	})
	b, err := io.ReadAll(s)
	if err != nil || string(b) != "hello, world" {
		t.Fatalf("read %q, %v", b, err)
	}
	if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("read after the end: %d, %v; want EOF again", n, err)
	}
	var st map[string]int
	if err := s.ReadStatus(&st); err != nil || st["files"] != 2 {
		t.Errorf("status %v, %v", st, err)
	}
	wg.Wait()
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("write after CloseWrite: no error")
	}
}

// A close other than 1000 is a *CloseError with the reason; a text
// message where data was expected is ErrStatus.
func TestErrors(t *testing.T) {
	cw, sw := pair(t)
	c, s := New(cw, Options{}), New(sw, Options{})
	c.WriteStatus("oops")
	if _, err := s.Read(make([]byte, 8)); !errors.Is(err, ErrStatus) {
		t.Errorf("text where data was expected: %v", err)
	}
	var v string
	if err := s.ReadStatus(&v); err != nil || v != "oops" {
		t.Errorf("ReadStatus after ErrStatus: %q, %v", v, err)
	}
	c.Close(websocket.CloseInternalServerErr, "read tcp: connection reset by peer")
	_, err := s.Read(make([]byte, 8))
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 1011 || ce.Error() != "read tcp: connection reset by peer" {
		t.Errorf("after close 1011: %v", err)
	}
}

func TestShorten(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := Shorten(long)
	if len(got) > 120 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Errorf("Shorten: %d bytes %q", len(got), got)
	}
	if Shorten("short") != "short" {
		t.Error("Shorten changed a short reason")
	}
}
