package bootstrapper

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/protocol/che"
)

func testEncoder(t *testing.T) *encoder {
	t.Helper()
	enc, err := newEncoder("m", che.RuntimeID{Workspace: "w", Environment: "e", Owner: "o"}, "0123456789abcdef", []che.PlanInstaller{{ID: "inst.a"}, {ID: "inst.b"}})
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func newTestSpool(t *testing.T, o spoolOptions) *testSpool {
	t.Helper()
	if o.window == 0 {
		o.window = 1 << 30
	}
	enc := testEncoder(t)
	s, err := newSpool(enc.lost, o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.release)
	return &testSpool{s, enc}
}

// testSpool is a spool with its encoder.
type testSpool struct {
	*spool
	enc *encoder
}

// decoded is what a test needs of a frame.
type decoded struct {
	Method string
	Params struct {
		Seq    uint64
		Text   string
		Status string
		Lost   uint64
	}
}

func decode(t *testing.T, f []byte) decoded {
	t.Helper()
	var d decoded
	if err := json.Unmarshal(f, &d); err != nil {
		t.Fatalf("frame %s: %v", f, err)
	}
	return d
}

func addLines(s *testSpool, from, to int) {
	for i := from; i <= to; i++ {
		s.add(kindLog, 0, s.enc.log(0, che.StreamStdout, []byte(fmt.Sprint(i)), false))
	}
}

// takeAll takes every frame the spool has to send now.
func takeAll(t *testing.T, s *testSpool) []decoded {
	t.Helper()
	var out []decoded
	for {
		fs, _ := s.take(nil, 1000)
		if len(fs) == 0 {
			return out
		}
		for _, f := range fs {
			out = append(out, decode(t, f))
		}
	}
}

func texts(ds []decoded) string {
	var b []string
	for _, d := range ds {
		switch {
		case d.Params.Lost > 0:
			b = append(b, fmt.Sprintf("lost%d@%d", d.Params.Lost, d.Params.Seq))
		case d.Method == che.MethodInstallerLog:
			b = append(b, d.Params.Text)
		default:
			b = append(b, d.Params.Status)
		}
	}
	return strings.Join(b, " ")
}

func TestSpoolOrderAckResend(t *testing.T) {
	s := newTestSpool(t, spoolOptions{memory: 1 << 20, limit: 1 << 20})
	s.add(kindStatus, -1, s.enc.bootstrapperStatus(che.StatusStarting, "", true))
	addLines(s, 1, 4)
	got := takeAll(t, s)
	if texts(got) != "STARTING 1 2 3 4" {
		t.Fatalf("sent %q", texts(got))
	}
	for i, d := range got {
		if d.Params.Seq != uint64(i+1) {
			t.Fatalf("frame %d has seq %d", i, d.Params.Seq)
		}
	}
	s.ack(3)              // STARTING, 1 and 2
	s.setConnected(false) // the connection broke: what is not acknowledged goes again
	addLines(s, 5, 5)
	if got := texts(takeAll(t, s)); got != "3 4 5" {
		t.Fatalf("after reconnecting, sent %q; want 3 4 5", got)
	}
	s.ack(6)
	if !s.empty() {
		t.Fatal("not empty after everything was acknowledged")
	}
	if n, last, dropped := s.stats(); n != 0 || last != 6 || dropped != 0 {
		t.Fatalf("stats %d %d %d", n, last, dropped)
	}
}

func TestSpoolWindow(t *testing.T) {
	s := newTestSpool(t, spoolOptions{memory: 1 << 20, limit: 1 << 20, window: 1000})
	addLines(s, 1, 100)
	fs, _ := s.take(nil, 1000)
	n := len(fs)
	if n == 0 || n == 100 {
		t.Fatalf("took %d frames in a window of 1000 bytes", n)
	}
	if more, _ := s.take(nil, 1000); len(more) != 0 {
		t.Fatal("took more beyond the window")
	}
	s.ack(uint64(n))
	if more, _ := s.take(nil, 1000); len(more) == 0 {
		t.Fatal("the window did not open after an acknowledgement")
	}
}

func TestSpoolSpillsInOrder(t *testing.T) {
	s := newTestSpool(t, spoolOptions{memory: 4 << 10, limit: 1 << 20, dir: t.TempDir()})
	const n = 2000 // about 500 KiB: most of it goes to the file
	addLines(s, 1, n)
	if s.spill.size() == 0 {
		t.Fatal("nothing was spilled")
	}
	got := takeAll(t, s)
	if len(got) != n {
		t.Fatalf("got %d frames, want %d", len(got), n)
	}
	for i, d := range got {
		if d.Params.Text != fmt.Sprint(i+1) || d.Params.Seq != uint64(i+1) {
			t.Fatalf("frame %d: text %q seq %d", i, d.Params.Text, d.Params.Seq)
		}
	}
	s.ack(n)
	if !s.empty() {
		t.Fatal("not empty")
	}
}

// While disconnected and full, the oldest log lines give way to one event
// saying how many were lost; statuses are kept.
func TestSpoolDropsOldestLines(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		t.Run(fmt.Sprintf("dir=%q", dir), func(t *testing.T) {
			s := newTestSpool(t, spoolOptions{memory: 8 << 10, limit: 16 << 10, dir: dir})
			s.add(kindStatus, -1, s.enc.bootstrapperStatus(che.StatusStarting, "", true))
			addLines(s, 1, 500)
			s.add(kindStatus, 0, s.enc.installerStatus(0, che.StatusDone, ""))
			_, _, dropped := s.stats()
			if dropped == 0 {
				t.Fatal("nothing dropped")
			}
			got := takeAll(t, s)
			if !strings.HasPrefix(texts(got), fmt.Sprintf("STARTING lost%d@%d %d ", dropped, dropped+1, dropped+1)) {
				t.Fatalf("want STARTING, one lost event for %d lines, then line %d…: got %.120s", dropped, dropped+1, texts(got))
			}
			if !strings.HasSuffix(texts(got), " 500 DONE") {
				t.Fatalf("want the newest lines and the status kept: %s", texts(got))
			}
			for i := 2; i < len(got); i++ { // contiguous sequence numbers after the lost event
				if got[i].Params.Seq != got[i-1].Params.Seq+1 {
					t.Fatalf("seq %d after %d", got[i].Params.Seq, got[i-1].Params.Seq)
				}
			}
			if dir != "" && s.total() > 16<<10+1024 {
				t.Fatalf("holds %d bytes, over the bound", s.total())
			}
		})
	}
}

// Lines written before the connection broke are kept and written again
// (the receiver may have them or not); the lost event stands only for
// lines never written, so its count is exact.
func TestSpoolDropAfterWrite(t *testing.T) {
	s := newTestSpool(t, spoolOptions{memory: 8 << 10, limit: 8 << 10})
	s.setConnected(true)
	addLines(s, 1, 10)
	takeAll(t, s) // written, not acknowledged
	s.setConnected(false)
	addLines(s, 11, 200)
	_, _, dropped := s.stats()
	got := texts(takeAll(t, s))
	want := fmt.Sprintf("1 2 3 4 5 6 7 8 9 10 lost%d@%d %d ", dropped, 10+dropped, 11+dropped)
	if dropped == 0 || !strings.HasPrefix(got, want) {
		t.Fatalf("got %.100s; want %s…", got, want)
	}
}

// While connected, a log line waits for room instead of dropping anything.
func TestSpoolBackpressure(t *testing.T) {
	s := newTestSpool(t, spoolOptions{memory: 8 << 10, limit: 8 << 10})
	s.setConnected(true)
	added := make(chan struct{})
	go func() {
		defer close(added)
		addLines(s, 1, 200)
	}()
	var got []decoded
	deadline := time.After(10 * time.Second)
	for len(got) < 200 {
		fs, last := s.take(nil, 10)
		for _, f := range fs {
			got = append(got, decode(t, f))
		}
		if len(fs) > 0 {
			s.ack(last)
			continue
		}
		select {
		case <-s.ready:
		case <-deadline:
			t.Fatalf("stuck after %d lines", len(got))
		}
	}
	<-added
	if _, _, dropped := s.stats(); dropped != 0 {
		t.Fatalf("%d lines dropped while connected", dropped)
	}
	for i, d := range got {
		if d.Params.Text != fmt.Sprint(i+1) {
			t.Fatalf("line %d is %q", i+1, d.Params.Text)
		}
	}
}
