package tunnel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/tunnel"
)

// FuzzFirstMessage: what an agent (anyone holding a machine token) sends
// first on its tunnel reaches the master's yamux session unchecked. Sent
// as the first binary message, whatever it is, the master neither panics
// nor hangs: a request proxied through the session ends, and the session
// ends once the agent's socket closes.
func FuzzFirstMessage(f *testing.F) {
	// yamux frames: version 0, type, flags, stream id, length.
	f.Add([]byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0})             // window update SYN, stream 1
	f.Add([]byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7})             // ping
	f.Add([]byte{0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})             // go away
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff}) // data, 4 GiB announced
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})             // bad version
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	sessions := make(chan *tunnel.Session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := tunnel.Accept(w, r, nil)
		if err != nil {
			return
		}
		sessions <- s
	}))
	f.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	f.Fuzz(func(t *testing.T, msg []byte) {
		ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		s := <-sessions
		defer s.Close()
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		// A request through the session ends (the agent answers nothing).
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://agent/healthz", nil)
		rec := httptest.NewRecorder()
		s.Proxy("").ServeHTTP(rec, req)
		ws.Close()
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("first message %x: the session outlived its socket by 10 s", msg)
		}
	})
}
