package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/agenttest"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/protocol"
)

func TestMain(m *testing.M) {
	// net/http lingers up to 500ms on a connection it closes after an
	// unread request body; that goroutine is the standard library's.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

const token = "test-token-0123456789"

// testAgent is an agent served on loopback for one test.
type testAgent struct {
	a    *agent.Agent
	addr string
	url  string
}

func startAgent(t *testing.T, o agent.Options) *testAgent {
	t.Helper()
	if o.Token == "" {
		o.Token = token
	}
	if o.Clock == nil {
		// The agent's time stands still unless a test moves it: a viewer
		// that keeps reading is never demoted however busy the machine
		// (TestHundredMiBByteExact lost bytes to a 1 s stall bound under
		// load), and no keepalive ping falls due. Tests of stalls and
		// pings bring their own clock.
		o.Clock = clocktest.New()
	}
	a, addr := agenttest.Start(t, o)
	return &testAgent{a: a, addr: addr, url: "ws://" + addr}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("PORTHOLE_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (ta *testAgent) dial(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), client.Options{URL: ta.url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run starts a process, collects its output and waits for it.
func run(t *testing.T, c *client.Client, spec protocol.StartParams, stdin []byte) (stdout, stderr []byte, err error) {
	t.Helper()
	ctx := ctxT(t)
	p, err := c.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start %q: %v", spec.Argv, err)
	}
	defer p.Close()
	var outB, errB bytes.Buffer
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(&outB, p.Stdout) })
	wg.Go(func() { io.Copy(&errB, p.Stderr) })
	if stdin != nil {
		if _, err := p.Stdin.Write(stdin); err != nil {
			t.Fatalf("stdin: %v", err)
		}
		if err := p.Stdin.Close(); err != nil {
			t.Fatalf("close stdin: %v", err)
		}
	}
	err = p.Wait()
	wg.Wait()
	return outB.Bytes(), errB.Bytes(), err
}

func TestExitCodesAndSignals(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	cases := []struct {
		name     string
		argv     []string
		tty      bool
		wantCode int
		wantSig  string
		wantOut  string
		wantErr  string
	}{
		{name: "zero", argv: []string{"sh", "-c", "echo out; echo err >&2"}, wantOut: "out\n", wantErr: "err\n"},
		{name: "three", argv: []string{"sh", "-c", "exit 3"}, wantCode: 3},
		{name: "killed", argv: []string{"sh", "-c", "kill -KILL $$"}, wantSig: "KILL"},
		{name: "tty exit", argv: []string{"sh", "-c", "printf 'a\\n'; exit 42"}, tty: true, wantCode: 42, wantOut: "a\r\n"},
		{name: "tty terminated", argv: []string{"sh", "-c", "kill -TERM $$"}, tty: true, wantSig: "TERM"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := run(t, c, protocol.StartParams{Argv: tc.argv, TTY: tc.tty}, nil)
			var xe *client.ExitError
			switch {
			case tc.wantCode == 0 && tc.wantSig == "":
				if err != nil {
					t.Fatalf("Wait = %v; want nil", err)
				}
			case !errors.As(err, &xe):
				t.Fatalf("Wait = %v; want *ExitError", err)
			case xe.Code != tc.wantCode || xe.Signal != tc.wantSig:
				t.Fatalf("exit = code %d signal %q; want %d %q", xe.Code, xe.Signal, tc.wantCode, tc.wantSig)
			}
			if string(out) != tc.wantOut || string(errOut) != tc.wantErr {
				t.Fatalf("stdout %q stderr %q; want %q %q", out, errOut, tc.wantOut, tc.wantErr)
			}
		})
	}
}

func TestSignalByNameAndNumberReachesGroup(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	// Not INT: a non-interactive shell starts background jobs ignoring it.
	for _, sig := range []string{"TERM", "SIGUSR1", "15", "hup"} {
		t.Run(sig, func(t *testing.T) {
			ctx := ctxT(t)
			// A child of the shell in the same group must die too.
			p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"sh", "-c", "sleep 1000 & echo $!; wait"}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			go io.Copy(io.Discard, p.Stderr)
			var child int
			if _, err := fmt.Fscan(p.Stdout, &child); err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, p.Stdout)
			if err := p.Signal(ctx, sig); err != nil {
				t.Fatal(err)
			}
			var xe *client.ExitError
			if err := p.Wait(); !errors.As(err, &xe) || xe.Signal == "" {
				t.Fatalf("Wait = %v; want killed by a signal", err)
			}
			waitGone(t, child)
		})
	}
}

// waitGone waits until pid no longer exists (or is a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d still alive", pid)
}

func TestResizeSeenByStty(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	ctx := ctxT(t)
	p, err := c.Start(ctx, protocol.StartParams{
		Argv: []string{"sh", "-c", "stty size; stty -a | grep -o -w iutf8; read x; stty size"},
		TTY:  true, Size: protocol.WindowSize{Rows: 33, Cols: 101},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := agenttest.NewLineReader(p.Stdout)
	r.Expect(t, "33 101") // started at the requested size, never 24x80 first
	r.Expect(t, "iutf8")
	if err := p.Resize(ctx, protocol.WindowSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	p.Stdin.Write([]byte("\n"))
	r.Expect(t, "50 132")
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	err = c.Call(ctx, protocol.MethodResize, protocol.ResizeParams{ID: p.ID, WindowSize: protocol.WindowSize{Rows: 1, Cols: 1}}, nil)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("resize after exit = %v; want not-running error", err)
	}
}

func TestStdinEOF(t *testing.T) {
	ta := startAgent(t, agent.Options{Logger: testLogger(t)})
	c := ta.dial(t)
	in := bytes.Repeat([]byte("x"), 3<<20+17) // more than the stdin queue and pipe hold
	out, _, err := run(t, c, protocol.StartParams{Argv: []string{"wc", "-c"}}, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != fmt.Sprint(len(in)) {
		t.Fatalf("wc -c = %q; want %d", got, len(in))
	}
	// A terminal has no half-close: closeStdin sends ^D, which ends cat.
	out, _, err = run(t, c, protocol.StartParams{Argv: []string{"sh", "-c", "stty -echo; cat; echo done"}, TTY: true}, []byte("line\n"))
	if err != nil || !strings.Contains(string(out), "line\r\ndone") {
		t.Fatalf("tty cat = %q, %v", out, err)
	}
}

// bigFile writes n random bytes and returns the path and its sha256.
func bigFile(t *testing.T, n int) (string, [32]byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, sha256.Sum256(b)
}

func TestHundredMiBByteExact(t *testing.T) {
	const size = 100 << 20
	path, want := bigFile(t, size)
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	for _, tc := range []struct {
		name string
		spec protocol.StartParams
	}{
		{"pipes", protocol.StartParams{Argv: []string{"cat", path}}},
		// raw mode: no output processing, so the bytes are the file's.
		{"tty", protocol.StartParams{Argv: []string{"sh", "-c", "stty raw -echo; exec cat " + path}, TTY: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			p, err := c.Start(ctx, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			go io.Copy(io.Discard, p.Stderr)
			h := sha256.New()
			n, err := io.Copy(h, p.Stdout)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(); err != nil {
				t.Fatal(err)
			}
			var got [32]byte
			h.Sum(got[:0])
			if n != size || got != want {
				t.Fatalf("received %d bytes, sha256 %x; want %d bytes, %x", n, got, size, want)
			}
		})
	}
}

func TestHundredConcurrentSessions(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			tty := i%2 == 0
			want := fmt.Sprintf("session-%d", i)
			out, _, err := run(t, c, protocol.StartParams{Argv: []string{"sh", "-c", "echo " + want + "; exit " + fmt.Sprint(i%7)}, TTY: tty}, nil)
			var xe *client.ExitError
			code := 0
			if errors.As(err, &xe) {
				code = xe.Code
			} else if err != nil {
				errs <- fmt.Errorf("session %d: %v", i, err)
				return
			}
			if code != i%7 || strings.TrimSpace(string(out)) != want {
				errs <- fmt.Errorf("session %d: out %q code %d", i, out, code)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		fmt.Fprintln(&b, i)
	}
	return b.Bytes()
}

func TestReattachExactFromOffset(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	ctx := ctxT(t)
	want := seqOutput(20000)
	p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"seq", "1", "20000"}})
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, p.Stderr)
	// Read an odd prefix, then drop the connection mid-stream.
	first := make([]byte, 12345)
	if _, err := io.ReadFull(p.Stdout, first); err != nil {
		t.Fatal(err)
	}
	p.Detach()
	var de *client.DisconnectedError
	if err := p.Wait(); !errors.As(err, &de) {
		t.Fatalf("Wait after detach = %v; want *DisconnectedError", err)
	}
	if err := p.Reattach(ctx); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(p.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	got := append(first, rest...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d identical (first %d, rest %d)", len(got), len(want), len(first), len(rest))
	}
	// A fresh client from any offset gets exactly the bytes after it.
	for _, off := range []int64{0, 1, 4096, int64(len(want)) - 1, int64(len(want))} {
		p2, err := c.Attach(ctx, p.ID, client.Offsets{Stdout: off})
		if err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, p2.Stderr)
		got, _ := io.ReadAll(p2.Stdout)
		p2.Wait()
		p2.Close()
		if !bytes.Equal(got, want[off:]) {
			t.Fatalf("attach at %d: got %d bytes, want %d identical", off, len(got), len(want)-int(off))
		}
	}
	// Beyond the end is refused with a clear error.
	if _, err := c.Attach(ctx, p.ID, client.Offsets{Stdout: int64(len(want)) + 1}); err == nil || !strings.Contains(err.Error(), "beyond the end") {
		t.Fatalf("attach beyond end = %v", err)
	}
}

func TestReattachAfterRingOverflowReportsGap(t *testing.T) {
	const ring = 64 << 10
	ta := startAgent(t, agent.Options{RingBytes: ring})
	c := ta.dial(t)
	ctx := ctxT(t)
	want := seqOutput(100000) // 588,895 bytes: nine rings
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"seq", "1", "100000"}}, &info); err != nil {
		t.Fatal(err)
	}
	for { // no viewer: output drains into the ring; wait for the exit
		var w protocol.ProcessInfo
		if err := c.Call(ctx, protocol.MethodWait, protocol.IDParams{ID: info.ID}, &w); err != nil {
			t.Fatal(err)
		}
		if w.State == protocol.StateExited {
			break
		}
	}
	p, err := c.Attach(ctx, info.ID, client.Offsets{Stdout: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go io.Copy(io.Discard, p.Stderr)
	got, _ := io.ReadAll(p.Stdout)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	lost := int64(len(want) - ring)
	gaps := p.Gaps()
	if len(gaps) != 1 || gaps[0].From != 1000 || gaps[0].To != lost || gaps[0].Stream != "stdout" {
		t.Fatalf("gaps %+v; want one stdout gap 1000..%d", gaps, lost)
	}
	if !bytes.Equal(got, want[lost:]) {
		t.Fatalf("after the gap got %d bytes, want the last %d identical", len(got), ring)
	}
}
