package wsrpc

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/protocol"
)

// TryWriteBinary never waits. Against a peer that does not read, it
// sends whole frames while the socket takes them, then part of one (the
// rest kept), or nothing; it declines while a part is pending; every
// other write finishes the part first. The peer reads every frame intact
// and in order, the text after them, and no data after the close frame.
func TestTryWriteBinary(t *testing.T) {
	for _, size := range []int{1000, 48 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { tryWriteBinary(t, size) })
	}
}

func tryWriteBinary(t *testing.T, size int) {
	type result struct {
		sent       int // whole frames
		partial    bool
		declinedIn bool // declined while a part was pending
		err        error
	}
	results := make(chan result, 1)
	proceed := make(chan struct{})
	c := serve(t, func(ws *websocket.Conn) {
		ws.NetConn().(*net.TCPConn).SetWriteBuffer(4096)
		s := New(ws, Options{WriteTimeout: wait})
		defer s.Close()
		var r result
		if !s.CanTryWrite() {
			r.err = fmt.Errorf("a TCP socket cannot TryWrite")
			results <- r
			return
		}
		body := make([]byte, size)
		head := make([]byte, 8)
		for range 100000 {
			binary.BigEndian.PutUint64(head, uint64(r.sent))
			sent, whole := s.TryWriteBinary(head, body)
			if !sent {
				break
			}
			if !whole {
				r.partial = true
				sent, _ := s.TryWriteBinary(head, body)
				r.declinedIn = !sent
				break
			}
			r.sent++
		}
		results <- r
		<-proceed
		// The text waits for the rest of the frame before it.
		if err := s.WriteText([]byte(`"after"`)); err != nil {
			t.Error(err)
		}
		s.SendClose(protocol.CloseNormal, "bye")
		if sent, _ := s.TryWriteBinary(nil, []byte("late")); sent {
			t.Error("TryWriteBinary sent data after the close frame")
		}
		s.ws.ReadMessage() // the peer's close
	})
	var r result
	select {
	case r = <-results:
	case <-time.After(wait):
		t.Fatal("TryWriteBinary waited")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.sent == 0 && !r.partial {
		t.Fatal("nothing was sent")
	}
	if size > 8192 && !r.partial {
		t.Fatal("a frame larger than the socket's buffer was not sent in part")
	}
	if r.partial && !r.declinedIn {
		t.Fatal("a second frame was begun while a part of the first was pending")
	}
	close(proceed)
	want := r.sent
	if r.partial {
		want++
	}
	for i := range want {
		c.SetReadDeadline(time.Now().Add(wait))
		typ, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d of %d: %v", i, want, err)
		}
		if typ != websocket.BinaryMessage || len(b) != 8+size || binary.BigEndian.Uint64(b) != uint64(i) {
			t.Fatalf("frame %d: type %d, %d bytes, seq %d", i, typ, len(b), binary.BigEndian.Uint64(b))
		}
	}
	typ, b, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage || string(b) != `"after"` {
		t.Fatalf("after the frames: %d %q %v", typ, b, err)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, protocol.CloseNormal) {
		t.Fatalf("then %v; want the close frame", err)
	}
	t.Logf("%d whole frames, then a partial one: %v", r.sent, r.partial)
}

// frameHeader encodes the three length forms of RFC 6455.
func TestFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "8200"}, {125, "827d"}, {126, "827e007e"}, {65535, "827effff"},
		{65536, "827f0000000000010000"},
	} {
		if got := fmt.Sprintf("%x", frameHeader(nil, tc.n)); got != tc.want {
			t.Errorf("frameHeader(%d) = %s; want %s", tc.n, got, tc.want)
		}
	}
}
