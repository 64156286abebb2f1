package wsrpc

import (
	"bytes"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"

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
