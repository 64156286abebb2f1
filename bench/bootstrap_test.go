package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	bt "github.com/porthole-dev/porthole/bootstrapper/bootstraptest"
	"github.com/porthole-dev/porthole/protocol/che"
)

// bootstrap starts `porthole bootstrap` with config against the
// receiver's endpoint (statuses and logs on one connection) and extra
// flags; stop sends SIGTERM and waits.
func bootstrap(b *testing.B, bin, endpoint, config string, extra ...string) (stop func() error) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		b.Fatal(err)
	}
	args := append([]string{"bootstrap", "-file", path, "-push-endpoint", endpoint, "-push-logs-endpoint", endpoint,
		"-runtime-id", "ws:env:owner", "-machine-name", "bench", "-spool-dir", b.TempDir(), "-log-level", "warn"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			return <-exited
		}
		return nil
	}
	b.Cleanup(func() { stop() })
	return stop
}

// BenchmarkBootstrapLogs: an installer prints 1,000,000 short lines
// (`seq 1 1000000`); lines per second from the installer's STARTING
// arriving at the master to its last line arriving, every line checked
// (in order, exactly once, the right text). Beside it, the same number of
// frames of the same shape written by a bare gorilla WebSocket client, one
// WriteMessage per line as Che's bootstrapper sends them, to the same
// receiver: what the receiving end and one frame per write allow. The
// receiver picks method, text and seq out of each frame without decoding
// it (bootstraptest.Options.Light): a full encoding/json decode costs
// about 5 µs an event here, so it would measure the receiver and cap both
// figures near 150,000 lines/s; the tests decode every frame.
func BenchmarkBootstrapLogs(b *testing.B) {
	const n = 1_000_000
	ctx := benchCtx(b, 5*time.Minute)
	bin := porthole(b)
	var via, bare []float64
	for range reps {
		settle()
		rate, err := bootstrapLines(ctx, b, bin, n)
		if err != nil {
			b.Fatal(err)
		}
		via = append(via, rate)
		settle()
		rate, err = bareLines(ctx, b, n)
		if err != nil {
			b.Fatal(err)
		}
		bare = append(bare, rate)
	}
	b.Logf("lines/s: bootstrapper %.0f, bare WebSocket %.0f", via, bare)
	report(b, map[string]float64{
		"lines_per_s": median(via), "bare_ws_lines_per_s": median(bare), "ratio": median(via) / median(bare),
	})
	verdict(b, "bootstrapper log lines/s, all delivered", median(via), ">=", 200_000)
}

// lineCheck follows installer/log events: every line once, in order, the
// text its number.
type lineCheck struct {
	n    uint64
	mu   sync.Mutex
	seq  uint64 // last sequence number seen
	next uint64 // the next line expected
	from time.Time
	to   time.Time
	err  error
	done chan struct{}
}

func newLineCheck(n uint64) *lineCheck { return &lineCheck{n: n, next: 1, done: make(chan struct{})} }

func (c *lineCheck) event(e bt.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.next > c.n {
		return
	}
	switch {
	case e.Method == che.MethodInstallerStatus && e.Params.Status == che.StatusStarting:
		c.from = e.At
		return
	case e.Method != che.MethodInstallerLog:
		return
	case e.Params.Seq != 0 && e.Params.Seq <= c.seq:
		return // a duplicate after a reconnection
	}
	c.seq = e.Params.Seq
	if want := strconv.FormatUint(c.next, 10); e.Params.Text != want {
		c.err = fmt.Errorf("line %d is %q", c.next, e.Params.Text)
		close(c.done)
		return
	}
	if c.next++; c.next > c.n {
		c.to = e.At
		close(c.done)
	}
}

func (c *lineCheck) wait(ctx context.Context) (time.Duration, error) {
	select {
	case <-c.done:
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		return 0, fmt.Errorf("%d of %d lines arrived: %w", c.next-1, c.n, ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.from.IsZero() {
		c.from = c.to
	}
	return c.to.Sub(c.from), nil
}

func bootstrapLines(ctx context.Context, b *testing.B, bin string, n int) (float64, error) {
	check := newLineCheck(uint64(n))
	r := bt.Start(b, bt.Options{OnEvent: check.event, Light: true})
	stop := bootstrap(b, bin, r.URL+"/api/websocket", fmt.Sprintf(`[{"id":"bench.lines","script":"seq 1 %d"}]`, n))
	d, err := check.wait(ctx)
	if err != nil {
		return 0, err
	}
	stop()
	return float64(n) / d.Seconds(), nil
}

// bareLines writes n frames like the bootstrapper's, one WriteMessage
// each, to a receiver, and returns lines/s.
func bareLines(ctx context.Context, b *testing.B, n int) (float64, error) {
	check := newLineCheck(uint64(n))
	r := bt.Start(b, bt.Options{OnEvent: check.event, Light: true})
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, r.URL+"/api/websocket", nil)
	if err != nil {
		return 0, err
	}
	defer ws.Close()
	head, mid, tail, err := lineFrame()
	if err != nil {
		return 0, err
	}
	errc := make(chan error, 1)
	go func() {
		var f []byte
		for i := 1; i <= n; i++ {
			f = append(f[:0], head...)
			f = strconv.AppendInt(f, int64(i), 10)
			f = append(f, mid...)
			f = strconv.AppendInt(f, int64(i), 10)
			f = append(f, tail...)
			if err := ws.WriteMessage(websocket.TextMessage, f); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	check.mu.Lock()
	check.from = time.Now()
	check.mu.Unlock()
	d, err := check.wait(ctx)
	if werr := <-errc; werr != nil && err == nil {
		err = werr
	}
	return float64(n) / d.Seconds(), err
}

// BenchmarkBootstrapReadiness: from a server's port opening to the
// installer's RUNNING arriving at the master. The benchmark itself opens
// the port (a listener in this process), a chosen delay after the
// installer started; the installer's script only waits. porthole checks
// at once and then with a growing wait (2% of the time spent, up to the
// period); Che checks every -server-check-period (3 s), the first time one
// period after the start. The Che figure is measured, with the same
// binary run with -server-check-backoff=false (Che's schedule), and also
// computed: for a port opening d after the start, 3 s × ceil(d/3 s) − d.
func BenchmarkBootstrapReadiness(b *testing.B) {
	ctx := benchCtx(b, 5*time.Minute)
	bin := porthole(b)
	delays := []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond, time.Second, 2 * time.Second}
	var fast, che, computed []float64
	for _, d := range delays {
		ms, err := readiness(ctx, b, bin, d)
		if err != nil {
			b.Fatal(err)
		}
		fast = append(fast, ms)
	}
	for _, d := range delays {
		ms, err := readiness(ctx, b, bin, d, "-server-check-backoff=false", "-server-check-period", "3")
		if err != nil {
			b.Fatal(err)
		}
		che = append(che, ms)
		period := 3 * time.Second
		ticks := (d + period - 1) / period
		computed = append(computed, float64((ticks*period-d).Microseconds())/1000)
	}
	b.Logf("port opened after %v; RUNNING after the port opened, ms: porthole %.1f; Che's schedule %.0f (computed %.0f)", delays, fast, che, computed)
	report(b, map[string]float64{
		"porthole_p50_ms": median(fast), "porthole_max_ms": percentile(fast, 100),
		"che_schedule_p50_ms": median(che), "che_computed_p50_ms": median(computed),
	})
	verdict(b, "readiness, port open to RUNNING at the master (worst of the delays), ms", percentile(fast, 100), "<=", 50)
}

// lineFrame renders an installer/log frame once, from che's types and
// as the bootstrapper lays it out (jsonrpc2's envelope, seq last), and
// splits it around its text and its seq: line i's frame is head, i, mid,
// i, tail, so that the sending loop only appends digits.
func lineFrame() (head, mid, tail string, err error) {
	const textMark, seqMark = "porthole-text-mark", 987654321987654321
	params, err := json.Marshal(che.InstallerLog{
		MachineEvent: che.MachineEvent{MachineName: "bench", RuntimeID: che.RuntimeID{Workspace: "ws", Environment: "env", Owner: "owner"},
			Time: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)},
		Text: textMark, Installer: "bench.lines", Stream: che.StreamStdout, BootID: "0123456789abcdef", Seq: seqMark,
	})
	if err != nil {
		return "", "", "", err
	}
	raw := json.RawMessage(params)
	f, err := json.Marshal(&jsonrpc2.Request{Method: che.MethodInstallerLog, Params: &raw, Notif: true})
	if err != nil {
		return "", "", "", err
	}
	head, rest, ok := strings.Cut(string(f), textMark)
	mid, tail, ok2 := strings.Cut(rest, strconv.FormatUint(seqMark, 10))
	if !ok || !ok2 {
		return "", "", "", fmt.Errorf("render the installer/log frame: text or seq not found in %s", f)
	}
	return head, mid, tail, nil
}

// readiness runs one installer whose server port the benchmark opens
// delay after the installer's STARTING arrived, and returns the
// milliseconds from the port opening to RUNNING arriving.
func readiness(ctx context.Context, b *testing.B, bin string, delay time.Duration, extra ...string) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // reopened below, after the delay
	r := bt.Start(b, bt.Options{})
	config := fmt.Sprintf(`[{"id":"bench.server","script":"exec sleep 600","servers":{"s":{"port":"%d/tcp"}}}]`, port)
	stop := bootstrap(b, bin, r.URL+"/api/websocket", config, append([]string{"-liveness-period", "0"}, extra...)...)
	isStarting := func(p bt.Params) bool { return p.Status == che.StatusStarting }
	started := find(r.Wait(b, time.Minute, "installer STARTING", bt.Has(che.MethodInstallerStatus, isStarting)), isStarting)
	time.Sleep(time.Until(started.At.Add(delay)))
	ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	opened := time.Now()
	go func() { // accept and drop the checks' connections
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	isRunning := func(p bt.Params) bool { return p.Status == che.StatusRunning }
	at := find(r.Wait(b, time.Minute, "installer RUNNING", bt.Has(che.MethodInstallerStatus, isRunning)), isRunning).At
	if err := stop(); err != nil && !errors.As(err, new(*exec.ExitError)) {
		return 0, err
	}
	return float64(at.Sub(opened).Microseconds()) / 1000, ctx.Err()
}

// find returns the first installer status event whose params match.
func find(evs []bt.Event, match func(bt.Params) bool) bt.Event {
	for _, e := range evs {
		if e.Method == che.MethodInstallerStatus && match(e.Params) {
			return e
		}
	}
	return bt.Event{}
}
