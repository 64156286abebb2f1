package wsrpc

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/protocol"
)

const wait = 30 * time.Second // an upper bound, never a pace

// serve runs serveFn on the server side of a WebSocket and returns the
// client side; the test's cleanup waits for serveFn.
func serve(t *testing.T, serveFn func(*websocket.Conn)) *websocket.Conn {
	t.Helper()
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		serveFn(ws)
	}))
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); srv.Close(); wg.Wait() })
	return c
}

// A pong acknowledges: it is sent once ack returns, and ack runs after
// every message read before the ping.
func TestAckPings(t *testing.T) {
	type ackAt struct{ read int }
	acks := make(chan ackAt, 4)
	ended := make(chan error, 1)
	release := make(chan struct{})
	c := serve(t, func(ws *websocket.Conn) {
		s := New(ws, Options{})
		defer s.Close()
		read := 0
		s.AckPings(func() error {
			acks <- ackAt{read}
			<-release
			if read == 2 {
				return errors.New("store closed")
			}
			return nil
		})
		for {
			var v map[string]any
			if err := s.ReadObject(&v); err != nil {
				ended <- err
				return
			}
			read++
		}
	})
	pongs := make(chan string, 4)
	c.SetPongHandler(func(data string) error { pongs <- data; return nil })
	readerDone := make(chan struct{})
	go func() { // the client's reader: pongs are handled while reading
		defer close(readerDone)
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-readerDone })
	c.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","method":"a"}`))
	c.WriteControl(websocket.PingMessage, []byte("1"), time.Now().Add(wait))
	select {
	case a := <-acks:
		if a.read != 1 {
			t.Errorf("ack ran after %d messages; want 1 (every message before the ping)", a.read)
		}
	case <-time.After(wait):
		t.Fatal("ack never ran")
	}
	select {
	case p := <-pongs:
		t.Fatalf("pong %q before ack returned", p)
	default:
	}
	release <- struct{}{}
	select {
	case p := <-pongs:
		if p != "1" {
			t.Errorf("pong %q; want the ping's data", p)
		}
	case <-time.After(wait):
		t.Fatal("no pong after ack returned")
	}
	// An ack that fails ends the reads, with no pong.
	c.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","method":"b"}`))
	c.WriteControl(websocket.PingMessage, []byte("2"), time.Now().Add(wait))
	<-acks
	close(release)
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "store closed") {
			t.Errorf("reads ended with %v; want ack's error", err)
		}
	case <-time.After(wait):
		t.Fatal("a failing ack did not end the reads")
	}
}

// A stream answers what it cannot handle: with Decode, the reader's
// *Error; with HardLimit at Limit, a message over it closes with 1009
// instead of getting an error response.
func TestDecodeAndHardLimit(t *testing.T) {
	cases := []struct {
		name      string
		opts      Options
		send      string
		wantReply string // "" : the socket closes instead
		wantClose int
	}{
		{
			name: "Decode's *Error is answered, id null",
			opts: Options{Limit: 64, Decode: func(data []byte, v any) error {
				return &Error{Code: protocol.CodeInvalidParams, Message: "x: invalid params"}
			}},
			send:      `{"method":"x"}`,
			wantReply: `{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"x: invalid params"}}`,
		},
		{
			name:      "over Limit: an error response",
			opts:      Options{Limit: 64},
			send:      `{"method":"` + strings.Repeat("x", 100) + `"}`,
			wantReply: `{"jsonrpc":"2.0","id":null,"error":{"code":-32007,"message":"message of 113 bytes exceeds the limit of 64 bytes"}}`,
		},
		{
			name:      "over HardLimit: 1009",
			opts:      Options{Limit: 64, HardLimit: 64},
			send:      `{"method":"` + strings.Repeat("x", 100) + `"}`,
			wantClose: websocket.CloseMessageTooBig,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := serve(t, func(ws *websocket.Conn) {
				s := New(ws, tc.opts)
				defer s.Close()
				var v json.RawMessage
				for s.ReadObject(&v) == nil {
				}
			})
			c.SetReadDeadline(time.Now().Add(wait))
			c.WriteMessage(websocket.TextMessage, []byte(tc.send))
			_, got, err := c.ReadMessage()
			if tc.wantReply != "" {
				if err != nil || string(got) != tc.wantReply {
					t.Fatalf("reply %s, %v; want %s", got, err, tc.wantReply)
				}
				return
			}
			if !websocket.IsCloseError(err, tc.wantClose) {
				t.Fatalf("read %s, %v; want close %d", got, err, tc.wantClose)
			}
		})
	}
}
