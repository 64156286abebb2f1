package bootstrapper_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	bt "github.com/porthole-dev/porthole/bootstrapper/bootstraptest"
	"github.com/porthole-dev/porthole/protocol/che"
)

// A receiver that drops every logs connection after a few frames still
// gets every line, in order, once duplicates are dropped, over a bounded
// number of connections: each connection asks for its first
// acknowledgement after a few frames and opens its window as they come
// back, so each one advances the spool. It used to ask only after a full
// batch (512 frames): against cuts at 400 frames, the first 400 lines went
// round over thousands of connections, and the rest never arrived.
func TestShortConnectionsAdvance(t *testing.T) {
	const n = 3000
	for _, c := range []struct {
		cut, maxConns int // frames per logs connection; handshakes allowed (both endpoints)
	}{
		{cut: 400, maxConns: 60},  // about 250 lines acknowledged on each logs connection
		{cut: 20, maxConns: 1000}, // about 12 on each
	} {
		t.Run(fmt.Sprintf("cut%d", c.cut), func(t *testing.T) {
			const logs = "/logs"
			r := bt.Start(t, bt.Options{Cut: func(path string, _, frames int) bool {
				return path == logs && frames == c.cut
			}})
			cfg := config(t, fmt.Sprintf(`[{"id":"org.lines","script":"seq 1 %d"}]`, n))
			args := bootArgs(t, r, cfg, "-logs-endpoint-reconnect-period", "1", "-push-logs-endpoint", r.URL+logs,
				"-flush-timeout", "1m") // bounded by the test's wait, not by the default
			p := start(t, "", args)
			if code := p.exitWithin(t, 4*wait); code != 0 {
				t.Fatalf("exit code %d", code)
			}
			conns := r.Handshakes()
			if out := p.output(); strings.Contains(out, "not delivered") {
				t.Fatalf("after %d handshakes, the bootstrapper says events were not delivered:\n%.2000s", conns, out)
			}
			kept, dups, err := bt.Dedup(r.Events())
			if err != nil {
				t.Fatal(err)
			}
			next := 1
			for _, e := range kept {
				if e.Path != logs {
					continue
				}
				if e.Params.Lost > 0 || e.Params.Text != strconv.Itoa(next) {
					t.Fatalf("line %d is %+v", next, e.Params)
				}
				next++
			}
			if next != n+1 {
				t.Fatalf("%d lines arrived over %d handshakes; want %d", next-1, conns, n)
			}
			if conns > c.maxConns {
				t.Fatalf("%d handshakes; want at most %d", conns, c.maxConns)
			}
			if v := r.Violations(); len(v) > 0 {
				t.Fatalf("frames that are not well-formed notifications: %q", v)
			}
			t.Logf("%d lines over %d handshakes, %d duplicates dropped", n, conns, dups)
		})
	}
}

// A receiver that accepts every logs connection and drops it at its first
// frame, before anything is acknowledged, gets a few handshakes a second,
// not thousands: a connection that made no progress counts as a failure,
// and the next attempt waits (exponential backoff with full jitter, from
// 0.5 s up to the reconnect period). It used to be redialled at once,
// every time.
func TestDroppedConnectionsBackOff(t *testing.T) {
	const logs = "/logs"
	r := bt.Start(t, bt.Options{Cut: func(path string, _, _ int) bool { return path == logs }})
	cfg := config(t, `[{"id":"org.a","script":"echo a"}]`)
	args := bootArgs(t, r, cfg, "-logs-endpoint-reconnect-period", "1", "-push-logs-endpoint", r.URL+logs,
		"-flush-timeout", "3s")
	began := time.Now()
	p := start(t, "", args)
	p.exitWithin(t, 4*wait) // its exit status is not this test's concern: the line is not delivered
	elapsed := time.Since(began)
	// The waits average 0.25 s, then 0.5 s: about 2 handshakes a second.
	// The bound allows twice that; load only makes them fewer.
	handshakes := r.Handshakes() - 1 // the statuses' one
	if limit := 10 + int(4*elapsed.Seconds()); handshakes > limit {
		t.Fatalf("%d logs handshakes in %s; want at most %d", handshakes, elapsed.Round(time.Millisecond), limit)
	}
	if handshakes < 2 {
		t.Fatalf("%d logs handshakes: the dropped connection was not retried", handshakes)
	}
	t.Logf("%d logs handshakes in %s", handshakes, elapsed.Round(time.Millisecond))
}

// Loss is never silent: a bootstrapper that could not deliver its events
// by the end of -flush-timeout tells the master on one last connection
// (an installer/log event whose lost is how many, numbered as the last of
// them), says so on stderr and exits 3. It used to log "events not
// delivered" and exit 0, and the master showed the machine as it last
// knew it, for ever.
func TestUndeliveredReported(t *testing.T) {
	const logs = "/logs"
	r := bt.Start(t, bt.Options{Cut: func(path string, _, _ int) bool { return path == logs }})
	cfg := config(t, `[{"id":"org.a","script":"echo a; echo b"}]`)
	args := bootArgs(t, r, cfg, "-logs-endpoint-reconnect-period", "1", "-push-logs-endpoint", r.URL+logs,
		"-flush-timeout", "2s")
	p := start(t, "", args)
	if code := p.exitWithin(t, 4*wait); code != 3 {
		t.Fatalf("exit code %d; want 3", code)
	}
	if out := p.output(); !strings.Contains(out, "porthole bootstrap: 2 event(s) not delivered") {
		t.Fatalf("output:\n%s", out)
	}
	var report []bt.Event
	for _, e := range r.Events() {
		if e.Path == logs && e.Params.Lost > 0 {
			report = append(report, e)
		}
	}
	if len(report) != 1 {
		t.Fatalf("%d lost-events reports; want 1:\n%s", len(report), bt.Summary(r.Events(), 50))
	}
	if p := report[0].Params; p.Lost != 2 || p.Seq != 2 || p.Text != che.UndeliveredText(2) || p.Installer != "org.a" || p.Stream != che.StreamStderr {
		t.Fatalf("report %+v; want lost 2, seq 2, installer org.a, STDERR, %q", p, che.UndeliveredText(2))
	}
	// The statuses were delivered: DONE, on their own connection.
	r.Wait(t, wait, "bootstrapper DONE", bootstrapperDone)
}
