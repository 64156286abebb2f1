package cli

// In-process tests of the session's reconnection: a real agent behind a
// TCP gate the test can cut and restore, the CLI's session and attach on
// pipes, and the reattach backoff on a fake clock, so an outage of any
// length costs no real time.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

const gateToken = "reattach-test-token-0123456789"

// gate forwards TCP connections to an agent until cut: then it closes
// every connection and, until restored, accepts and closes at once each
// new one, reporting it on refused.
type gate struct {
	ln      net.Listener
	target  string
	refused chan struct{}

	mu    sync.Mutex
	down  bool
	conns []net.Conn
	wg    sync.WaitGroup
}

func startGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target, refused: make(chan struct{}, 1024)}
	g.wg.Go(g.accept)
	t.Cleanup(func() {
		ln.Close()
		g.cut()
		g.wg.Wait()
	})
	return g
}

func (g *gate) url() string { return "ws://" + g.ln.Addr().String() }

func (g *gate) accept() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		down := g.down
		if !down {
			g.conns = append(g.conns, c)
		}
		g.mu.Unlock()
		if down {
			c.Close()
			g.refused <- struct{}{}
			continue
		}
		g.wg.Go(func() { g.forward(c) })
	}
}

func (g *gate) forward(c net.Conn) {
	u, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.down { // cut while dialling
		g.mu.Unlock()
		u.Close()
		c.Close()
		return
	}
	g.conns = append(g.conns, u)
	g.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(u, c); u.Close() })
	io.Copy(c, u)
	c.Close()
	wg.Wait()
}

// cut closes every connection and refuses new ones until restore.
func (g *gate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = true
	for _, c := range g.conns {
		c.Close()
	}
	g.conns = nil
}

func (g *gate) restore() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = false
}

// startGatedAgent runs a real agent on a loopback server behind a gate.
func startGatedAgent(t *testing.T) *gate {
	t.Helper()
	a, err := agent.New(agent.Options{Token: gateToken, Clock: clocktest.New()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
		defer cancel()
		a.Shutdown(ctx, time.Second)
		srv.Close()
	})
	return startGate(t, srv.Listener.Addr().String())
}

// watched collects what is written to a pipe's read end.
type watched struct {
	r    *os.File
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{} // cap 1: something arrived, or the end
	done chan struct{} // closed at EOF
}

func watch(t *testing.T) (*watched, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	wa := &watched{r: r, more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(wa.done)
		b := make([]byte, 32<<10)
		for {
			n, err := r.Read(b)
			wa.mu.Lock()
			wa.buf.Write(b[:n])
			wa.mu.Unlock()
			select {
			case wa.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { w.Close(); <-wa.done; r.Close() })
	return wa, w
}

func (wa *watched) String() string {
	wa.mu.Lock()
	defer wa.mu.Unlock()
	return wa.buf.String()
}

// waitFor waits until the text so far contains s.
func (wa *watched) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(testutil.Wait)
	for !strings.Contains(wa.String(), s) {
		select {
		case <-wa.more:
		case <-wa.done:
			if !strings.Contains(wa.String(), s) {
				t.Fatalf("EOF without %q; got %q", s, wa.String())
			}
		case <-deadline:
			t.Fatalf("no %q within %s; got %q", s, testutil.Wait, wa.String())
		}
	}
}

// top is the backoff's random source at the top of each range, so every
// wait is its whole bound: the longest outage for a number of attempts.
func top(n int64) int64 { return n - 1 }

// startGated starts a process through g that prints "before", waits for
// a line on a FIFO (released by the returned function), then prints
// 1..3000 and "end"; it returns the process attached from offset 0.
func startGated(t *testing.T, g *gate) (p *client.Process, release func(), want string) {
	t.Helper()
	ctx := testutil.Ctx(t)
	fifo := filepath.Join(t.TempDir(), "go")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, client.Options{URL: g.url(), Token: gateToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var info protocol.ProcessInfo
	argv := []string{"sh", "-c", `echo before; read x < "$1"; i=1; while [ $i -le 3000 ]; do echo $i; i=$((i+1)); done; echo end`, "sh", fifo}
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: argv}, &info); err != nil {
		t.Fatal(err)
	}
	if p, err = c.Attach(ctx, info.ID, client.Offsets{}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("before\n")
	for i := 1; i <= 3000; i++ {
		fmt.Fprintln(&b, i)
	}
	b.WriteString("end\n")
	release = func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("go\n")
		f.Close()
	}
	return p, release, b.String()
}

type sessionRun struct {
	out, errs *watched
	outW      *os.File
	ended     chan error
}

// runSession runs session for p on pipes with rc.
func runSession(t *testing.T, g *gate, p *client.Process, rc reconnect) *sessionRun {
	t.Helper()
	s := &sessionRun{ended: make(chan error, 1)}
	var errW *os.File
	s.out, s.outW = watch(t)
	s.errs, errW = watch(t)
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdinW.Close(); stdinR.Close() })
	go func() {
		s.ended <- session(context.Background(), make(chan os.Signal), p, g.url(), rc, false, false, stdinR, s.outW, errW)
	}()
	return s
}

// The agent goes away for much longer than the old 8 s: the session keeps
// trying with the backoff, says so once on stderr, and once the agent is
// back continues at the exact offset: every line once, in order.
func TestSessionSurvivesLongOutage(t *testing.T) {
	g := startGatedAgent(t)
	p, release, want := startGated(t, g)
	clk := clocktest.New()
	s := runSession(t, g, p, reconnect{timeout: 5 * time.Minute, clock: clk, rand: top})
	s.out.waitFor(t, "before\n")

	g.cut()
	s.errs.waitFor(t, "reconnecting for up to 5m0s")
	release() // the rest is printed while nobody is attached
	var outage time.Duration
	for outage < time.Minute {
		clk.WaitPending(t, 1)
		clk.Advance(reattachMax) // at least the wait, whatever it is
		outage += reattachMax
		testutil.Recv(t, "a reattach attempt", g.refused)
	}
	g.restore()
	clk.WaitPending(t, 1)
	clk.Advance(reattachMax)
	if err := testutil.Recv(t, "the session to end", s.ended); err != nil {
		t.Fatalf("session = %v; want nil (exit 0)", err)
	}
	s.outW.Close()
	<-s.out.done
	if got := s.out.String(); got != want {
		t.Fatalf("stdout after a %s outage: %d bytes, want %d exactly (no loss, no duplicate)", outage, len(got), len(want))
	}
	if n := strings.Count(s.errs.String(), "porthole:"); n != 1 {
		t.Fatalf("stderr has %d status lines; want 1: %q", n, s.errs.String())
	}
}

// When -reconnect-timeout passes, the session gives up with the command
// that continues exactly where it stopped, and following it (porthole
// attach -offset) prints exactly the rest.
func TestSessionGivesUpWithExactHint(t *testing.T) {
	g := startGatedAgent(t)
	p, release, want := startGated(t, g)
	clk := clocktest.New()
	s := runSession(t, g, p, reconnect{timeout: time.Minute, clock: clk, rand: top})
	s.out.waitFor(t, "before\n")
	g.cut()
	s.errs.waitFor(t, "reconnecting for up to 1m0s")
	release()
	start := clk.Now()
	var err error
	for err == nil {
		if clk.Pending() == 0 { // the next wait is not armed yet, or never will be
			select {
			case err = <-s.ended:
			case <-clk.Armed():
			case <-time.After(testutil.Wait):
				t.Fatalf("the session neither gave up nor waited again within %s", testutil.Wait)
			}
			continue
		}
		clk.Advance(reattachMax) // at least the wait, whatever it is
		testutil.Recv(t, "a reattach attempt", g.refused)
		if elapsed := clk.Now().Sub(start); elapsed > 2*time.Minute {
			t.Fatalf("still reconnecting after %s of fake time; -reconnect-timeout is 1m", elapsed)
		}
	}
	hint := fmt.Sprintf("reattach with: porthole attach -url %s -offset %d %s", g.url(), len("before\n"), p.ID)
	if !strings.Contains(err.Error(), hint) {
		t.Fatalf("session = %v; want the hint %q", err, hint)
	}
	p.Close()

	g.restore()
	_, cmd, _ := strings.Cut(err.Error(), "reattach with: porthole ")
	out, outW := watch(t)
	errs, errW := watch(t)
	stdinR, stdinW, perr := os.Pipe()
	if perr != nil {
		t.Fatal(perr)
	}
	defer stdinR.Close()
	stdinW.Close()
	if err := run(testutil.Ctx(t), strings.Fields(cmd), env{"PORTHOLE_TOKEN": gateToken}, stdinR, outW, errW); err != nil {
		t.Fatalf("porthole %s = %v; stderr %q", cmd, err, errs.String())
	}
	outW.Close()
	<-out.done
	if got, want := out.String(), strings.TrimPrefix(want, "before\n"); got != want {
		t.Fatalf("porthole %s printed %d bytes; want exactly the %d after the offset", cmd, len(got), len(want))
	}
}

// attach -offset and -stderr-offset continue each stream at its offset,
// overriding -from.
func TestAttachOffsets(t *testing.T) {
	g := startGatedAgent(t)
	ctx := testutil.Ctx(t)
	c, err := client.Dial(ctx, client.Options{URL: g.url(), Token: gateToken})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", "printf 0123456789; printf abcdefghij >&2"}}, &info); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args              []string
		wantOut, wantErrs string
	}{
		{nil, "0123456789", "abcdefghij"},
		{[]string{"-offset", "4"}, "456789", "abcdefghij"},
		{[]string{"-stderr-offset", "3"}, "0123456789", "defghij"},
		{[]string{"-from", "end", "-offset", "9", "-stderr-offset", "10"}, "9", ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, outW := watch(t)
			errs, errW := watch(t)
			stdinR, stdinW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer stdinR.Close()
			stdinW.Close()
			args := append([]string{"attach", "-url", g.url()}, tc.args...)
			if err := run(ctx, append(args, info.ID), env{"PORTHOLE_TOKEN": gateToken}, stdinR, outW, errW); err != nil {
				t.Fatalf("porthole %q = %v", args, err)
			}
			outW.Close()
			errW.Close()
			<-out.done
			<-errs.done
			if out.String() != tc.wantOut || errs.String() != tc.wantErrs {
				t.Fatalf("porthole %q: stdout %q, stderr %q; want %q, %q", args, out.String(), errs.String(), tc.wantOut, tc.wantErrs)
			}
		})
	}
}
