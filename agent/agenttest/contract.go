package agenttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// Contract runs the agent's behaviour tests against the agent dial
// reaches: directly on loopback (agent's tests), or through a master's
// tunnel (internal/tunnel's and master's tests). dial returns a new
// client of that agent for t, closed when t ends. The agent runs on this
// machine (the tests look for its children in /proc) with the default
// agent.Options but for its token and logger.
func Contract(t *testing.T, dial func(t *testing.T) *client.Client) {
	cases := []struct {
		name string
		test func(t *testing.T, c *client.Client)
	}{
		{"ExitCodesAndSignals", exitCodesAndSignals},
		{"SignalByNameAndNumberReachesGroup", signalReachesGroup},
		{"ResizeSeenByStty", resizeSeenByStty},
		{"StdinEOF", stdinEOF},
		{"HundredConcurrentSessions", hundredConcurrentSessions},
		{"ReattachExactFromOffset", reattachExactFromOffset},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, dial(t)) })
	}
}

// Run starts a process, collects its output and waits for it.
func Run(t *testing.T, c *client.Client, spec protocol.StartParams, stdin []byte) (stdout, stderr []byte, err error) {
	t.Helper()
	ctx := testutil.Ctx(t)
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

// SeqOutput is what `seq 1 n` prints.
func SeqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		fmt.Fprintln(&b, i)
	}
	return b.Bytes()
}

func exitCodesAndSignals(t *testing.T, c *client.Client) {
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
			out, errOut, err := Run(t, c, protocol.StartParams{Argv: tc.argv, TTY: tc.tty}, nil)
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

func signalReachesGroup(t *testing.T, c *client.Client) {
	// Not INT: a non-interactive shell starts background jobs ignoring it.
	for _, sig := range []string{"TERM", "SIGUSR1", "15", "hup"} {
		t.Run(sig, func(t *testing.T) {
			ctx := testutil.Ctx(t)
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
			// The process is gone (or a zombie) once its parent is:
			// /proc has no event to wait on.
			testutil.WaitFor(t, fmt.Sprintf("process %d to end", child), func() bool {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
				return err != nil || strings.Contains(string(b), ") Z ")
			})
		})
	}
}

func resizeSeenByStty(t *testing.T, c *client.Client) {
	ctx := testutil.Ctx(t)
	p, err := c.Start(ctx, protocol.StartParams{
		Argv: []string{"sh", "-c", "stty size; stty -a | grep -o -w iutf8; read x; stty size"},
		TTY:  true, Size: protocol.WindowSize{Rows: 33, Cols: 101},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := NewLineReader(p.Stdout)
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

func stdinEOF(t *testing.T, c *client.Client) {
	in := bytes.Repeat([]byte("x"), 3<<20+17) // more than the stdin queue and pipe hold
	out, _, err := Run(t, c, protocol.StartParams{Argv: []string{"wc", "-c"}}, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != fmt.Sprint(len(in)) {
		t.Fatalf("wc -c = %q; want %d", got, len(in))
	}
	// A terminal has no half-close: closeStdin sends ^D, which ends cat.
	out, _, err = Run(t, c, protocol.StartParams{Argv: []string{"sh", "-c", "stty -echo; cat; echo done"}, TTY: true}, []byte("line\n"))
	if err != nil || !strings.Contains(string(out), "line\r\ndone") {
		t.Fatalf("tty cat = %q, %v", out, err)
	}
}

func hundredConcurrentSessions(t *testing.T, c *client.Client) {
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			tty := i%2 == 0
			want := fmt.Sprintf("session-%d", i)
			out, _, err := Run(t, c, protocol.StartParams{Argv: []string{"sh", "-c", "echo " + want + "; exit " + fmt.Sprint(i%7)}, TTY: tty}, nil)
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

// reattachExactFromOffset: a client that detaches mid-stream reattaches
// at its offset and gets every byte exactly once; a new client attaches
// from any offset and gets exactly the bytes after it.
func reattachExactFromOffset(t *testing.T, c *client.Client) {
	ctx := testutil.Ctx(t)
	want := SeqOutput(20000)
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
	for _, off := range []int64{0, 1, 4096, 77777, int64(len(want)) - 1, int64(len(want))} {
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
