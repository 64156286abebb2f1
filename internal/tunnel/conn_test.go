package tunnel_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/tunnel"
)

// wsPair returns the two ends of a WebSocket over loopback TCP.
func wsPair(t *testing.T) (dialed, accepted *websocket.Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			close(ch)
			return
		}
		ch <- ws
	}))
	t.Cleanup(srv.Close)
	d, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a == nil {
		t.FailNow()
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d, a
}

func connPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	d, a := wsPair(t)
	c1, c2 := tunnel.NewConn(d), tunnel.NewConn(a)
	t.Cleanup(func() { c1.Close(); c2.Close() })
	return c1, c2
}

// Records written by concurrent writers arrive whole and in each writer's
// order, read through buffers of odd sizes that ignore message boundaries.
func TestConnStreamExact(t *testing.T) {
	c1, c2 := connPair(t)
	const writers, records = 8, 50
	sizes := []int{0, 1, 7, 1000, 32 << 10, 32<<10 + 1, 200 << 10}
	var wg sync.WaitGroup
	want := make([][32]byte, writers) // per writer: sha256 of its payloads in order
	for w := range writers {
		wg.Go(func() {
			h := sha256.New()
			for i := range records {
				payload := make([]byte, sizes[(w+i)%len(sizes)])
				rand.Read(payload)
				h.Write(payload)
				rec := binary.BigEndian.AppendUint32([]byte{byte(w)}, uint32(len(payload)))
				if _, err := c1.Write(append(rec, payload...)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
			copy(want[w][:], h.Sum(nil))
		})
	}
	got := make([]io.Writer, writers)
	hashes := make([]interface{ Sum([]byte) []byte }, writers)
	for w := range writers {
		h := sha256.New()
		got[w], hashes[w] = h, h
	}
	// An odd-sized reader: each Read gets at most 5, 999 or 4096 bytes.
	r := &oddReader{r: c2, sizes: []int{5, 999, 4096}}
	hdr := make([]byte, 5)
	for range writers * records {
		if _, err := io.ReadFull(r, hdr); err != nil {
			t.Fatal(err)
		}
		w, n := int(hdr[0]), int64(binary.BigEndian.Uint32(hdr[1:]))
		if w >= writers {
			t.Fatalf("record header names writer %d: the stream is corrupt", w)
		}
		if _, err := io.CopyN(got[w], r, n); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for w := range writers {
		if !bytes.Equal(hashes[w].Sum(nil), want[w][:]) {
			t.Errorf("writer %d: payloads differ", w)
		}
	}
	if r.calls < writers*records {
		t.Errorf("only %d reads", r.calls)
	}
}

type oddReader struct {
	r     io.Reader
	sizes []int
	calls int
}

func (o *oddReader) Read(b []byte) (int, error) {
	n := o.sizes[o.calls%len(o.sizes)]
	o.calls++
	return o.r.Read(b[:min(n, len(b))])
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// A read deadline fails the blocked and the next Read with a timeout, and
// once extended, reading goes on with no byte lost.
func TestConnReadDeadline(t *testing.T) {
	c1, c2 := connPair(t)
	b := make([]byte, 10)

	c2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := c2.Read(b); n != 0 || !isTimeout(err) {
		t.Fatalf("Read past the deadline = %d, %v; want a timeout wrapping os.ErrDeadlineExceeded", n, err)
	}
	if _, err := c2.Read(b); !isTimeout(err) {
		t.Fatalf("second Read = %v; want a timeout", err)
	}

	// A Read blocked with no deadline is released by one set in the past.
	c2.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c2.Read(b)
		done <- err
	}()
	c2.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-done:
		if !isTimeout(err) {
			t.Fatalf("blocked Read = %v; want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a deadline in the past did not release a blocked Read")
	}

	c2.SetReadDeadline(time.Time{})
	if _, err := c1.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(c2, b[:5]); err != nil || string(b[:n]) != "hello" {
		t.Fatalf("Read after clearing the deadline = %q, %v", b[:n], err)
	}
}

// A write deadline fails a Write the peer does not take in time, and a
// deadline already passed fails the next Write at once.
func TestConnWriteDeadline(t *testing.T) {
	c1, _ := connPair(t) // the peer never calls Read: its socket fills up
	if err := c1.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1<<20)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = c1.Write(big)
	}
	if !isTimeout(err) {
		t.Fatalf("Write to a peer that does not read = %v; want a timeout", err)
	}

	c3, _ := connPair(t)
	c3.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := c3.Write([]byte("x")); !isTimeout(err) {
		t.Fatalf("Write past the deadline = %v; want a timeout", err)
	}
}

// Close releases a blocked Read with net.ErrClosed; the peer reads EOF.
func TestConnClose(t *testing.T) {
	c1, c2 := connPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c1.Read(make([]byte, 1))
		done <- err
	}()
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read blocked at Close = %v; want net.ErrClosed", err)
	}
	if _, err := c1.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
	}
	if _, err := c2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer Read = %v; want io.EOF", err)
	}
}

// A text message is a protocol error.
func TestConnRefusesTextMessages(t *testing.T) {
	d, a := wsPair(t)
	c := tunnel.NewConn(a)
	defer c.Close()
	if err := d.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "text message") {
		t.Fatalf("Read of a text message = %v; want a protocol error", err)
	}
	// The peer is told why.
	d.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := d.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseUnsupportedData) {
		t.Fatalf("peer got %v; want close 1003", err)
	}
}
