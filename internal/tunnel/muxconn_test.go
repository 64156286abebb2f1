package tunnel

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// muxPair returns a muxConn over a loopback WebSocket and the raw peer.
func muxPair(t *testing.T) (*muxConn, *websocket.Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			close(ch)
			return
		}
		ch <- ws
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{WriteBufferSize: writeBufferSize, WriteBufferPool: writeBufferPool}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-ch
	if peer == nil {
		t.FailNow()
	}
	c := newMuxConn(ws)
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func header(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// What each Write becomes on the wire: a data frame's header and body one
// message; a header without a body (a window update, a ping, an empty data
// frame) a message at once; a header whose next write is not its body,
// two messages in order.
func TestMuxConnMessages(t *testing.T) {
	c, peer := muxPair(t)
	body := bytes.Repeat([]byte("b"), 300<<10) // more than a pooled buffer
	cases := []struct {
		name   string
		writes [][]byte
		want   [][]byte
	}{
		{"data frame", [][]byte{header(0, 5), []byte("hello")}, [][]byte{append(header(0, 5), "hello"...)}},
		{"large data frame", [][]byte{header(0, uint32(len(body))), body}, [][]byte{append(header(0, uint32(len(body))), body...)}},
		{"window update", [][]byte{header(1, 4096)}, [][]byte{header(1, 4096)}},
		{"ping", [][]byte{header(2, 7)}, [][]byte{header(2, 7)}},
		{"empty data frame (a close)", [][]byte{header(0, 0)}, [][]byte{header(0, 0)}},
		{"not the body", [][]byte{header(0, 5), []byte("abc")}, [][]byte{header(0, 5), []byte("abc")}},
	}
	for _, tc := range cases {
		for _, w := range tc.writes {
			if n, err := c.Write(w); err != nil || n != len(w) {
				t.Fatalf("%s: Write = %d, %v", tc.name, n, err)
			}
		}
		for i, want := range tc.want {
			typ, got, err := peer.ReadMessage()
			if err != nil || typ != websocket.BinaryMessage || !bytes.Equal(got, want) {
				t.Fatalf("%s: message %d: %d bytes (type %d), %v; want %d bytes", tc.name, i, len(got), typ, err, len(want))
			}
		}
	}
}

// Reads ignore message boundaries; a text message ends the stream.
func TestMuxConnRead(t *testing.T) {
	c, peer := muxPair(t)
	for _, m := range []string{"ab", "", "cdef"} {
		if err := peer.WriteMessage(websocket.BinaryMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	buf := make([]byte, 3)
	for len(got) < 6 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "abcdef" {
		t.Fatalf("read %q; want abcdef", got)
	}
	peer.WriteMessage(websocket.TextMessage, []byte("x"))
	if _, err := c.Read(buf); err != errTextMessage {
		t.Fatalf("Read after a text message: %v; want %v", err, errTextMessage)
	}
	if c.err() != errTextMessage {
		t.Fatalf("err() = %v", c.err())
	}
}
