package ring

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/internal/clock/clocktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// readAll drains r until EOF, waiting on Notify, failing on a gap.
func readAll(t *testing.T, r *Reader, chunk int) []byte {
	t.Helper()
	var out []byte
	p := make([]byte, chunk)
	deadline := time.After(10 * time.Second)
	for {
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		switch {
		case err == io.EOF:
			return out
		case err != nil:
			t.Fatalf("read at %d: %v", r.Offset(), err)
		case n == 0:
			select {
			case <-r.Notify():
			case <-deadline:
				t.Fatalf("no EOF after 10s; have %d bytes", len(out))
			}
		}
	}
}

func TestWriteReadOffsets(t *testing.T) {
	b := New(Options{Max: 16, Stall: time.Second})
	r, err := b.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b.Write([]byte("hello "))
	b.Write([]byte("world"))
	p := make([]byte, 4)
	n, err := r.Read(p)
	if n != 4 || err != nil || string(p[:n]) != "hell" {
		t.Fatalf("Read = %d %v %q", n, err, p[:n])
	}
	if got := r.Offset(); got != 4 {
		t.Fatalf("Offset = %d; want 4", got)
	}
	if s, e := b.Bounds(); s != 0 || e != 11 {
		t.Fatalf("Bounds = %d,%d; want 0,11", s, e)
	}
	b.CloseWrite()
	if got := string(readAll(t, r, 3)); got != "o world" {
		t.Fatalf("rest = %q", got)
	}
	if _, err := b.Write([]byte("x")); err != ErrClosed {
		t.Fatalf("Write after close = %v; want ErrClosed", err)
	}
}

func TestNewReaderOffsets(t *testing.T) {
	b := New(Options{Max: 8, Stall: time.Second})
	b.Write([]byte("0123456789")) // no readers: drains, keeps "23456789"
	cases := []struct {
		name    string
		off     int64
		wantErr bool
		gap     *GapError
		want    string
	}{
		{name: "retained start", off: 2, want: "23456789"},
		{name: "middle", off: 7, want: "789"},
		{name: "end", off: 10, want: ""},
		{name: "evicted", off: 0, gap: &GapError{From: 0, To: 2}, want: "23456789"},
		{name: "beyond end", off: 11, wantErr: true},
		{name: "negative", off: -1, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := b.NewReader(tc.off)
			if tc.wantErr {
				if err == nil {
					r.Close()
					t.Fatal("NewReader succeeded; want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			p := make([]byte, 64)
			n, err := r.Read(p)
			if tc.gap != nil {
				var g *GapError
				if !errors.As(err, &g) || *g != *tc.gap {
					t.Fatalf("first Read = %d, %v; want gap %v", n, err, tc.gap)
				}
				n, err = r.Read(p)
			}
			if err != nil || string(p[:n]) != tc.want {
				t.Fatalf("Read = %q, %v; want %q", p[:n], err, tc.want)
			}
		})
	}
}

// A paced reader that keeps up, however slowly, gets every byte: the writer
// waits for it instead of evicting. (The clock never moves, so the reader
// cannot be demoted whatever the machine's load.)
func TestPacedReaderGetsEverything(t *testing.T) {
	const max = 4096
	b := New(Options{Max: max, Stall: time.Second, Clock: clocktest.New()})
	r, _ := b.NewReader(0)
	defer r.Close()
	src := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(src)
	done := make(chan error, 1)
	go func() {
		for i := 0; i < len(src); i += 1000 {
			if _, err := b.Write(src[i:min(i+1000, len(src))]); err != nil {
				done <- err
				return
			}
		}
		b.CloseWrite()
		done <- nil
	}()
	got := readAll(t, r, 333) // small reads: slower than the writer
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src) {
		t.Fatalf("got %d bytes, want %d identical", len(got), len(src))
	}
	if d := b.Demoted(); d != 0 {
		t.Fatalf("Demoted = %d; want 0", d)
	}
}

// A reader that stops reading holds the writer up for the stall bound only,
// then is told exactly which bytes it lost, and is paced again once it has
// caught up.
func TestStalledReaderIsDemotedAndToldOfGap(t *testing.T) {
	const max, stall = 1024, time.Second
	clk := clocktest.New()
	var onDemote atomic.Int32
	b := New(Options{Max: max, Stall: stall, Clock: clk, OnDemote: func() { onDemote.Add(1) }})
	stalled, _ := b.NewReader(0)
	defer stalled.Close()
	data := bytes.Repeat([]byte("abcdefgh"), 1024) // 8 KiB = 8 rings
	wrote := make(chan error, 1)
	go func() {
		_, err := b.Write(data)
		wrote <- err
	}()
	clk.WaitPending(t, 1) // the writer waits for the stalled reader
	select {
	case err := <-wrote:
		t.Fatalf("Write returned (%v) before the stall bound passed", err)
	default:
	}
	clk.Advance(stall - 1)
	if d := b.Demoted(); d != 0 {
		t.Fatalf("Demoted = %d before the stall bound; want 0", d)
	}
	clk.Advance(1)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if d, n := b.Demoted(), onDemote.Load(); d != 1 || n != 1 {
		t.Fatalf("Demoted = %d, OnDemote called %d times; want 1, 1", d, n)
	}
	if stalled.Paced() {
		t.Fatal("stalled reader still paced")
	}
	p := make([]byte, 2*max)
	_, err := stalled.Read(p)
	var g *GapError
	if !errors.As(err, &g) || g.From != 0 || g.To != int64(len(data)-max) {
		t.Fatalf("Read = %v; want gap 0..%d", err, len(data)-max)
	}
	n, err := stalled.Read(p)
	if err != nil || !bytes.Equal(p[:n], data[len(data)-max:]) {
		t.Fatalf("after gap: %d bytes, %v; want the last %d bytes", n, err, max)
	}
	if n, err := stalled.Read(p); n != 0 || err != nil {
		t.Fatalf("caught-up Read = %d, %v", n, err)
	}
	if !stalled.Paced() {
		t.Fatal("reader that caught up is not paced again")
	}
}

// One stalled reader does not stop another reader from getting every byte.
// The clock moves once, by the stall bound, while the live reader has
// read everything written and the writer waits for the stalled one; the
// live reader can then never be demoted, however slowly it runs.
func TestStalledReaderDoesNotStallOthers(t *testing.T) {
	const max, stall = 2048, time.Second
	clk := clocktest.New()
	b := New(Options{Max: max, Stall: stall, Clock: clk})
	stalled, _ := b.NewReader(0)
	defer stalled.Close()
	live, _ := b.NewReader(0)
	defer live.Close()
	src := bytes.Repeat([]byte("0123456789"), 50000)
	wrote := make(chan error, 1)
	go func() {
		_, err := b.Write(src)
		b.CloseWrite()
		wrote <- err
	}()
	// The ring is full and the writer waits for both readers.
	clk.WaitPending(t, 1)
	// The live reader catches up; the writer, held by the stalled reader,
	// cannot write more until the stall bound passes.
	p := make([]byte, 4096)
	var got []byte
	for len(got) < max {
		n, err := live.Read(p)
		if err != nil {
			t.Fatalf("live Read at %d: %v", len(got), err)
		}
		got = append(got, p[:n]...)
	}
	clk.Advance(stall)
	got = append(got, readAll(t, live, 4096)...)
	if !bytes.Equal(got, src) {
		t.Fatalf("live reader got %d bytes, want %d identical", len(got), len(src))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if d := b.Demoted(); d != 1 {
		t.Fatalf("Demoted = %d; want 1 (the stalled reader only)", d)
	}
}

func TestCloseReaderReleasesWriter(t *testing.T) {
	b := New(Options{Max: 16, Stall: time.Hour})
	r, _ := b.NewReader(0)
	b.Write(make([]byte, 16))
	done := make(chan struct{})
	go func() {
		b.Write([]byte("x")) // blocked by r for up to an hour
		close(done)
	}()
	r.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write still blocked after the reader closed")
	}
}

func TestStopReleasesWriter(t *testing.T) {
	b := New(Options{Max: 16, Stall: time.Hour})
	r, _ := b.NewReader(0)
	defer r.Close()
	b.Write(make([]byte, 16))
	done := make(chan error, 1)
	go func() {
		_, err := b.Write([]byte("x"))
		done <- err
	}()
	b.Stop()
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Fatalf("Write = %v; want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write still blocked after Stop")
	}
}

func TestGrowsOnDemand(t *testing.T) {
	b := New(Options{Max: 1 << 20, Stall: time.Second})
	if got := b.Allocated(); got != 0 {
		t.Fatalf("new ring allocated %d bytes; want 0", got)
	}
	b.Write([]byte("prompt$ "))
	if got := b.Allocated(); got != minAlloc {
		t.Fatalf("after 8 bytes allocated %d; want %d", got, minAlloc)
	}
	b.Write(make([]byte, 5000))
	if got := b.Allocated(); got != 8192 {
		t.Fatalf("after 5008 bytes allocated %d; want 8192", got)
	}
	b.Write(make([]byte, 2<<20))
	if got := b.Allocated(); got != 1<<20 {
		t.Fatalf("allocated %d; want the max %d", got, 1<<20)
	}
}

// Random interleavings of writes and reads with wrap-around keep bytes
// exact, as a model check against a plain slice.
func TestRandomAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		max := 1 + rng.IntN(300)
		b := New(Options{Max: max, Stall: 0}) // a stall bound of 0 never waits
		var all []byte
		r, _ := b.NewReader(0)
		off := int64(0)
		for step := 0; step < 50; step++ {
			if rng.IntN(2) == 0 {
				p := make([]byte, rng.IntN(2*max+1))
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				b.Write(p)
				all = append(all, p...)
				continue
			}
			p := make([]byte, 1+rng.IntN(max))
			n, err := r.Read(p)
			var g *GapError
			if errors.As(err, &g) {
				if g.From != off {
					t.Fatalf("gap from %d; reader was at %d", g.From, off)
				}
				off = g.To
				continue
			}
			if !bytes.Equal(p[:n], all[off:off+int64(n)]) {
				t.Fatalf("iter %d: bytes at %d differ", iter, off)
			}
			off += int64(n)
		}
		r.Close()
	}
}

// A follower never holds the writer back: with a follower that reads
// nothing, writes of many rings' worth return at once (no stall wait on
// the fake clock), and the follower is told of the gap, then reads on.
func TestFollowerNeverPaces(t *testing.T) {
	clk := clocktest.New()
	b := New(Options{Max: 1024, Stall: time.Hour, Clock: clk})
	f, err := b.NewFollower(0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := b.Write(bytes.Repeat([]byte("x"), 8192)); err != nil {
		t.Fatal(err)
	}
	if f.Paced() {
		t.Fatal("a follower is paced")
	}
	var gap *GapError
	if _, err := f.Read(make([]byte, 10)); !errors.As(err, &gap) || gap.From != 0 || gap.To != 8192-1024 {
		t.Fatalf("first read: %v; want a gap 0..7168", err)
	}
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if n != 1024 || err != nil {
		t.Fatalf("read %d, %v; want the 1024 bytes kept", n, err)
	}
	if n, err := f.Read(buf); n != 0 || err != nil || f.Paced() {
		t.Fatalf("caught up: %d, %v, paced %v; want 0, nil, never paced", n, err, f.Paced())
	}
	if d := b.Demoted(); d != 0 {
		t.Fatalf("Demoted = %d; a follower is never demoted", d)
	}
}

// A holder is never demoted: beside a stalled reader that is, the writer
// waits for it past any stall bound, and it reads every byte, in order,
// without a gap.
func TestHolderIsNeverDemoted(t *testing.T) {
	const max, stall = 1024, time.Second
	clk := clocktest.New()
	b := New(Options{Max: max, Stall: stall, Clock: clk})
	holder, _ := b.NewHolder(0)
	defer holder.Close()
	stalled, _ := b.NewReader(0)
	defer stalled.Close()
	data := bytes.Repeat([]byte("abcdefgh"), 1024) // 8 KiB = 8 rings
	wrote := make(chan error, 1)
	go func() {
		_, err := b.Write(data)
		b.CloseWrite()
		wrote <- err
	}()
	clk.WaitPending(t, 1) // the stalled reader's bound
	clk.Advance(stall)
	waitingAlone := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.waiting && b.demoted == 1
	}
	deadline := time.Now().Add(10 * time.Second)
	for !waitingAlone() {
		if time.Now().After(deadline) {
			t.Fatal("the writer is not waiting for the holder after the other reader's demotion")
		}
		runtime.Gosched()
	}
	clk.Advance(100 * stall) // no bound for a holder
	if !holder.Paced() || b.Demoted() != 1 {
		t.Fatalf("holder paced %v, demoted %d; want true, 1", holder.Paced(), b.Demoted())
	}
	if got := readAll(t, holder, 300); !bytes.Equal(got, data) {
		t.Fatalf("the holder read %d bytes, not the %d written", len(got), len(data))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}
