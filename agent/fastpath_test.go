package agent_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// The fast path's hostile cases (agent/output.go): viewers that keep up
// are served by the pump itself, viewers that fall behind by their own
// loop from the ring, and a viewer moves between the two without a byte
// repeated, lost or out of place.

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// viewer reads an attach socket and checks it as it goes: framed output
// must come at exactly the offset after what it has (or after a gap
// event), and the bytes must be the expected ones at their offsets.
type viewer struct {
	name   string
	ws     *websocket.Conn
	framed bool
	want   []byte

	n     atomic.Int64 // stream offset reached (bytes received, and gaps skipped)
	gaps  atomic.Int32
	wrote chan struct{} // cap 1: n moved
	done  chan error    // the socket closed (nil: with 1000 after the exit)
	// gate, when set, is called before each read; a viewer paused there
	// reads nothing.
	gate func()
}

func newViewer(t *testing.T, name, url string, framed bool, want []byte, dial *websocket.Dialer) *viewer {
	t.Helper()
	proto := protocol.SubprotocolRaw
	if framed {
		proto = protocol.SubprotocolAttach
	}
	d := *dial
	d.Subprotocols = []string{proto}
	ws, _, err := d.Dial(url, bearer(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &viewer{name: name, ws: ws, framed: framed, want: want, wrote: make(chan struct{}, 1), done: make(chan error, 1)}
}

func (v *viewer) run() { v.done <- v.read() }

func (v *viewer) read() error {
	exited := false
	for {
		if v.gate != nil {
			v.gate()
		}
		v.ws.SetReadDeadline(time.Now().Add(testutil.Wait))
		typ, b, err := v.ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, protocol.CloseNormal) {
				return fmt.Errorf("%s: %v at offset %d", v.name, err, v.n.Load())
			}
			if v.framed && !exited {
				return fmt.Errorf("%s: closed without process.exited", v.name)
			}
			return nil
		}
		off, payload := v.n.Load(), b
		if typ == websocket.TextMessage && v.framed {
			var m struct {
				Method string
				Params protocol.GapEvent
			}
			json.Unmarshal(b, &m)
			switch m.Method {
			case protocol.EventGap:
				if m.Params.From != off || m.Params.To <= off {
					return fmt.Errorf("%s: gap %d..%d at offset %d", v.name, m.Params.From, m.Params.To, off)
				}
				v.gaps.Add(1)
				v.advance(m.Params.To)
			case protocol.EventExited:
				exited = true
			}
			continue
		}
		if v.framed {
			var s protocol.Stream
			s, off, payload, err = protocol.ParseOutputFrame(b)
			if err != nil || s != protocol.Stdout {
				return fmt.Errorf("%s: frame %v on %v", v.name, err, s)
			}
			if off != v.n.Load() {
				return fmt.Errorf("%s: frame at offset %d after %d bytes: bytes repeated or lost", v.name, off, v.n.Load())
			}
		} else if bytes.HasPrefix(b, []byte("\r\n[porthole: ")) {
			return fmt.Errorf("%s: a raw viewer that kept up was told of a gap: %q", v.name, b)
		}
		end := off + int64(len(payload))
		if end > int64(len(v.want)) || !bytes.Equal(payload, v.want[off:end]) {
			return fmt.Errorf("%s: wrong bytes at offset %d..%d", v.name, off, end)
		}
		v.advance(end)
	}
}

func (v *viewer) advance(n int64) {
	v.n.Store(n)
	select {
	case v.wrote <- struct{}{}:
	default:
	}
}

// directBytes reads the fast path's share of the agent's output.
func directBytes(t *testing.T, a *agent.Agent) (direct, all int64) {
	t.Helper()
	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		k, v, _ := strings.Cut(line, " ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "porthole_agent_output_direct_bytes_total":
			direct = n
		case "porthole_agent_output_bytes_total":
			all = n
		}
	}
	return direct, all
}

// smallReads dials with a small receive buffer (set before connecting, so
// that the window it advertises is small from the start), so that a
// viewer that stops reading fills its socket soon.
var smallReads = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: (&net.Dialer{
	Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10) })
		return err
	},
}).DialContext}

// A viewer that stops reading again and again leaves the fast path each
// time (the pump then waits for it in the ring: with it direct it never
// would), and comes back to it once it caught up: every byte arrives
// once, in order, at its offset, with no gap.
func TestFastPathViewerSwitchesPaths(t *testing.T) {
	const stall = time.Second
	clk := clocktest.New()
	// The clock never moves: the paused viewer is never demoted. Pings
	// and the exit drain are an hour away, so every timer is the ring's.
	ta := startAgent(t, agent.Options{RingBytes: 64 << 10, StallTimeout: stall, PingInterval: time.Hour, ExitDrain: time.Hour, Clock: clk})
	c := ta.dial(t)
	// Each pause needs the socket's buffers full (up to 4 MiB on
	// loopback) and the ring: the output is far larger.
	const lines = 2000000
	want := seqOutput(lines)
	var info protocol.ProcessInfo
	if err := c.Call(ctxT(t), protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", fmt.Sprintf("read x; exec seq 1 %d", lines)}}, &info); err != nil {
		t.Fatal(err)
	}
	v := newViewer(t, "switching", ta.url+"/v1/processes/"+info.ID+"/attach", true, want, smallReads)
	const pauses = 2
	var paused int
	next := int64(len(want)) / (pauses + 2)
	v.gate = func() {
		if paused == pauses || v.n.Load() < next {
			return
		}
		// Stop reading until the pump waits in the ring for this viewer.
		select {
		case <-clk.Armed():
		case <-time.After(testutil.Wait):
			return // paused stays short: the test fails
		}
		paused++
		next = v.n.Load() + int64(len(want))/(pauses+2)
	}
	go v.run()
	if err := v.ws.WriteMessage(websocket.BinaryMessage, protocol.AppendInputFrame(nil, []byte("go\n"))); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Recv(t, "the viewer's end", v.done); err != nil {
		t.Fatal(err)
	}
	if v.n.Load() != int64(len(want)) || v.gaps.Load() != 0 || paused != pauses {
		t.Fatalf("got %d of %d bytes, %d gaps, %d of %d pauses", v.n.Load(), len(want), v.gaps.Load(), paused, pauses)
	}
	direct, all := directBytes(t, ta.a)
	t.Logf("%d of %d bytes on the fast path", direct, all)
	if direct == 0 || direct == all {
		t.Fatalf("%d of %d bytes on the fast path: want both paths used", direct, all)
	}
}

// Several viewers at once: two that keep up (one raw, one framed) and
// one that never reads. The pump waits for the stalled one only for the
// stall bound, whatever the fast ones do; they get every byte, in order;
// when the stalled one finally reads, it gets what the ring still has, a
// gap for what it lost, then the rest, each at its offset.
func TestFastPathBesideStalledViewer(t *testing.T) {
	const stall = time.Second
	clk := clocktest.New()
	ta := startAgent(t, agent.Options{RingBytes: 128 << 10, StallTimeout: stall, PingInterval: time.Hour, ExitDrain: time.Hour, Clock: clk, Logger: testLogger(t)})
	c := ta.dial(t)
	ctx := ctxT(t)
	const lines = 600000
	want := seqOutput(lines)
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", fmt.Sprintf("read x; exec seq 1 %d", lines)}}, &info); err != nil {
		t.Fatal(err)
	}
	url := ta.url + "/v1/processes/" + info.ID + "/attach"
	stalled := newViewer(t, "stalled", url, true, want, smallReads)
	live := []*viewer{
		newViewer(t, "raw", url, false, want, smallReads),
		newViewer(t, "framed", url, true, want, smallReads),
	}
	for _, v := range live {
		go v.run()
	}
	// Each viewer counts among the process's clients once attached.
	testutil.WaitFor(t, "three viewers", func() bool {
		var p protocol.ProcessInfo
		return c.Call(ctx, protocol.MethodGet, protocol.IDParams{ID: info.ID}, &p) == nil && p.Clients == 3
	})
	if err := c.Call(ctx, protocol.MethodWrite, protocol.WriteParams{ID: info.ID, Text: "go\n"}, nil); err != nil {
		t.Fatal(err)
	}
	end := func() int64 {
		var p protocol.ProcessInfo
		if err := c.Call(ctx, protocol.MethodGet, protocol.IDParams{ID: info.ID}, &p); err != nil {
			t.Fatal(err)
		}
		return p.Stdout.End
	}
	// The clock moves by half the stall bound, and only when the writer
	// waits and both live viewers have everything written so far (see
	// TestStalledViewerDoesNotStallOthers): only the stalled viewer can
	// then be demoted.
	deadline := time.After(testutil.Wait)
	finished := 0
	for finished < len(live) {
		if clk.Due(stall) > 0 {
			e := end()
			if caughtUp(live, e) && clk.Due(stall) > 0 && end() == e {
				clk.Advance(stall / 2)
				continue
			}
		}
		select {
		case err := <-live[0].done:
			check(t, err, live[0], want)
			finished++
		case err := <-live[1].done:
			check(t, err, live[1], want)
			finished++
		case <-clk.Armed():
		case <-live[0].wrote:
		case <-live[1].wrote:
		case <-deadline:
			t.Fatalf("live viewers at %d and %d of %d bytes after %v", live[0].n.Load(), live[1].n.Load(), len(want), testutil.Wait)
		}
	}
	go stalled.run()
	if err := testutil.Recv(t, "the stalled viewer's end", stalled.done); err != nil {
		t.Fatal(err)
	}
	if stalled.n.Load() != int64(len(want)) || stalled.gaps.Load() == 0 {
		t.Fatalf("stalled viewer reached offset %d of %d with %d gaps; want the end, past a gap", stalled.n.Load(), len(want), stalled.gaps.Load())
	}
	if direct, _ := directBytes(t, ta.a); direct == 0 {
		t.Fatal("nothing went on the fast path")
	}
}

func caughtUp(vs []*viewer, end int64) bool {
	for _, v := range vs {
		if v.n.Load() < end {
			return false
		}
	}
	return true
}

func check(t *testing.T, err error, v *viewer, want []byte) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if v.n.Load() != int64(len(want)) || v.gaps.Load() != 0 {
		t.Fatalf("%s: %d of %d bytes, %d gaps", v.name, v.n.Load(), len(want), v.gaps.Load())
	}
}

// Stdin goes from the socket's reader straight to the process while it
// takes it, and through the socket's queue while it does not: a stopped
// process fills its pipe, the rest waits in the queue (and then in the
// socket), and once it runs again it reads every byte once, in order;
// then stdin goes straight through again.
func TestFastPathStdinOrder(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	ctx := ctxT(t)
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", "kill -STOP $$; exec cat"}}, &info); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the process to stop itself", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", info.PID))
		_, rest, _ := strings.Cut(string(b), ") ")
		return err == nil && strings.HasPrefix(rest, "T")
	})
	in := seqOutput(200000) // 1.3 MB: far more than a pipe holds
	v := newViewer(t, "stdin", ta.url+"/v1/processes/"+info.ID+"/attach", false, append(append([]byte(nil), in...), "more\n"...), websocket.DefaultDialer)
	go v.run()
	wrote := make(chan error, 1)
	go func() {
		for b := in; len(b) > 0; {
			n := min(len(b), 4096)
			if err := v.ws.WriteMessage(websocket.BinaryMessage, b[:n]); err != nil {
				wrote <- err
				return
			}
			b = b[n:]
		}
		wrote <- nil
	}()
	// Let it run once its pipe and this socket's queue are full.
	testutil.WaitFor(t, "the stopped process's pipe to fill", func() bool { return pipeFull(info.PID) })
	if err := c.Call(ctx, protocol.MethodSignal, protocol.SignalParams{ID: info.ID, Signal: "CONT"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Recv(t, "the writes", wrote); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "cat's copy of the input", func() bool { return v.n.Load() == int64(len(in)) })
	// The queue is empty again: this goes straight through.
	if err := v.ws.WriteMessage(websocket.BinaryMessage, []byte("more\n")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "cat's copy of more", func() bool { return v.n.Load() == int64(len(in)+5) })
	select {
	case err := <-v.done:
		t.Fatalf("viewer ended: %v", err)
	default:
	}
}

// pipeFull reports whether the pipe on pid's stdin holds all it can.
func pipeFull(pid int) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd/0", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ)
	return err == nil && n >= 64<<10
}

// An idle attached terminal costs one goroutine: its pump. Its viewer
// runs on none while the pump serves it, no goroutine waits for the
// process's exit (one reaper waits for all), and none for its raw
// socket while the client sends nothing (one poller waits for all). A
// line typed into a parked socket still reaches the process, and its
// answer the viewer (wsrpc's tests park it again after typing).
func TestIdleAttachedSessionGoroutines(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	const n = 20
	var last *viewer
	for i := range n {
		argv := []string{"sleep", "3600"}
		if i == n-1 {
			argv = []string{"sh", "-c", "read line; echo got $line; exec sleep 3600"}
		}
		var info protocol.ProcessInfo
		if err := c.Call(ctxT(t), protocol.MethodStart, protocol.StartParams{Argv: argv, TTY: true}, &info); err != nil {
			t.Fatal(err)
		}
		last = newViewer(t, "idle", ta.url+"/v1/processes/"+info.ID+"/attach", false, nil, websocket.DefaultDialer)
	}
	count := func(fn string) int {
		var b bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&b, 2)
		return strings.Count(b.String(), fn)
	}
	idle := func() bool {
		return count("agent.(*attachView).loop") == 0 && count("agent.pump(") == n &&
			count("wsrpc.(*Stream).serveRaw(") == 0 && count("wsrpc.(*Stream).ReadObject(") == 2 && // the control socket's two ends
			count("wsrpc.(*Poller).run(") == 1
	}
	testutil.WaitFor(t, "idle viewers and sockets parked", idle)
	if got := count("os/exec.(*Cmd).Wait") + count("agent.waitReady"); got != 0 {
		t.Fatalf("%d goroutines wait for a process; want 0", got)
	}
	if got := count("agent.(*reaper).run("); got != 1 {
		t.Fatalf("%d reapers; want 1", got)
	}
	// A line typed into a parked socket reaches the process, and its
	// answer comes back.
	msgs := make(chan []byte, 16)
	go func() { // ends when the test's cleanup closes the socket
		defer close(msgs)
		for {
			_, msg, err := last.ws.ReadMessage()
			if err != nil {
				return
			}
			msgs <- msg
		}
	}()
	if err := last.ws.WriteMessage(websocket.BinaryMessage, []byte("hello\r")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for !bytes.Contains(got, []byte("got hello")) {
		msg := testutil.Recv(t, "the answer to a typed line", msgs)
		if msg == nil {
			t.Fatalf("read %q, then the socket ended", got)
		}
		got = append(got, msg...)
	}
}
