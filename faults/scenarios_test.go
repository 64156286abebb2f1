//go:build faults

package faults

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

const (
	// period is every bootstrapper's -logs-endpoint-reconnect-period in
	// these tests (seconds): the backoff's maximum wait, short so that
	// the suite runs in minutes (the default is 10).
	period = 2
	// firstBackoff is the bootstrapper's first backoff bound
	// (bootstrapper/push.go firstBackoff): after the n-th consecutive
	// failure (from 0) a wait is uniform in [0, min(period, 0.5s·2^n)).
	firstBackoff = 500 * time.Millisecond
	// endpoints: a bootstrapper keeps two connections, statuses and logs.
	endpoints = 2
	// finish bounds how long the programs get to deliver and exit once a
	// fault is over.
	finish = 3 * time.Minute
)

// attemptsBound bounds a bootstrapper's failed reconnection attempts on
// one endpoint over an outage of d: the steps up to the period, then d
// over half a period (the mean wait at the period is half a period),
// doubled. With full jitter no wait has a lower bound, so this is a
// bound on the mean with a wide margin (the count's standard deviation
// over 30 s is about 3 attempts, the margin 30), not a certainty.
func attemptsBound(d time.Duration) int {
	p := time.Duration(period) * time.Second
	steps := int(math.Ceil(math.Log2(float64(p)/float64(firstBackoff)))) + 1
	return steps + 2*int(math.Ceil(2*d.Seconds()/p.Seconds())) + 2
}

// checkBackoff checks a bootstrapper's reconnection discipline after
// outages of total length d (outages of them): every logged wait below
// the period, at most attemptsBound(d) failed attempts per endpoint, and
// at the master at most 1 + outages handshakes per endpoint (the first
// connection, one per outage: a connection the master accepted makes
// progress, so it is not replaced until the next outage) plus one for an
// attempt the master accepted as the outage began. It returns the
// handshakes and attempts for the report.
func (c *cluster) checkBackoff(p *proc, name string, outages int, d time.Duration) (handshakes map[string]int, attempts int) {
	c.t.Helper()
	waits := reconnectWaits(p)
	for _, w := range waits {
		if w >= time.Duration(period)*time.Second {
			c.t.Errorf("%s waited %s before a reconnection attempt; the backoff's bound is the period, %ds", name, w, period)
		}
	}
	if limit := endpoints * attemptsBound(d); len(waits) > limit {
		c.t.Errorf("%s: %d failed reconnection attempts over %s of outage; want at most %d", name, len(waits), d, limit)
	}
	hs := c.handshakes("bootstrapper connected", name)
	for path, n := range hs {
		if limit := 1 + outages + 1; n > limit {
			c.t.Errorf("%s: %d handshakes at the master on %s over %d outage(s); want at most %d", name, n, path, outages, limit)
		}
	}
	return hs, len(waits)
}

// waitStored waits until the master has committed at least n entries of
// each machine.
func (c *cluster) waitStored(n uint64, machines ...string) {
	c.t.Helper()
	for _, m := range machines {
		testutil.WaitFor(c.t, fmt.Sprintf("%d entries of %s stored", n, m), func() bool { return c.seq(m) >= n })
	}
}

// waitAgent waits until the master shows machine name's agent connected.
func (c *cluster) waitAgent(name string) {
	c.t.Helper()
	testutil.WaitFor(c.t, "the agent of "+name+" connected", func() bool {
		m := c.machine(name)
		return m != nil && m.Agent.Connected
	})
}

// checkTerminal checks that the exec through the master printed exactly
// out and exited 0.
func checkTerminal(t *testing.T, p *proc, out string) {
	t.Helper()
	if code := p.exit(t, finish); code != 0 {
		t.Fatalf("porthole exec exited %d", code)
	}
	if got := p.stdout.String(); got != out {
		t.Fatalf("the terminal's output (%d bytes) is not the command's (%d bytes): first difference at byte %d", len(got), len(out), firstDiff(got, out))
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

var machines3 = []string{"m1", "m2", "m3"}

// streams starts what the partition and restart scenarios share: three
// bootstrappers printing n lines each and a terminal through the master
// on m1's agent printing tn lines, each in three parts (gates 1 and 2
// between them), and waits until the first parts have arrived.
func (c *cluster) streams(g gates, n, tn int) (boots map[string]*proc, term *proc) {
	c.t.Helper()
	boots = map[string]*proc{}
	for _, m := range machines3 {
		boots[m] = c.bootstrapper(m, lines(m, n, g, n*2/5, n*7/10), period)
	}
	c.agent("m1")
	c.waitAgent("m1")
	term = c.exec("m1", nil, nil, "sh", "-c", lines("t", tn, g, tn/3, tn*2/3))
	c.waitStored(uint64(2+n*2/5), machines3...) // 2 statuses, then the lines
	testutil.WaitFor(c.t, "the terminal's first part", func() bool {
		return strings.HasSuffix(term.stdout.String(), fmt.Sprintf("t-%d\n", tn/3))
	})
	return boots, term
}

// afterOutage checks what streams started, once one outage of length d
// is over: every bootstrapper exits 0, having delivered its n lines
// exactly once and in order, its statuses converged and its
// reconnections within the backoff's bounds; the terminal printed its tn
// lines exactly. It returns how long the bootstrappers took to finish.
func (c *cluster) afterOutage(boots map[string]*proc, term *proc, n, tn int, d time.Duration) time.Duration {
	t := c.t
	t.Helper()
	over := time.Now()
	for _, m := range machines3 {
		if code := boots[m].exit(t, finish); code != 0 {
			t.Fatalf("bootstrapper %s exited %d", m, code)
		}
	}
	took := time.Since(over)
	checkTerminal(t, term, want("t", tn))
	for _, m := range machines3 {
		c.checkLines(m, m, n)
		hs, attempts := c.checkBackoff(boots[m], m, 1, d)
		t.Logf("%s: %d lines once each, in order; handshakes at the master %v; %d failed reconnection attempts", m, n, hs, attempts)
	}
	t.Logf("terminal: %d lines exact; agent handshakes %v; exec stderr: %q", tn, c.handshakes("agent connected", "m1"), strings.TrimSpace(term.stderr.String()))
	return took
}

// A 30 s partition between the machines and the master while three
// bootstrappers print 50,000 lines each (the middle 15,000 during the
// partition) and a terminal through the master prints 30,000 lines (the
// middle third during the partition): afterwards every line is at the
// master exactly once and in order, every machine's statuses converged,
// the terminal printed exactly its command's output, and the
// reconnections kept to the backoff's bounds.
func TestPartition(t *testing.T) {
	const (
		n, tn     = 50000, 30000
		partition = 30 * time.Second
	)
	c := newCluster(t)
	c.startMaster()
	g := newGates(t)
	boots, term := c.streams(g, n, tn)

	c.link.partition(t)
	began := time.Now()
	g.open(t, 1)          // the middle parts are printed during the partition
	time.Sleep(partition) // the fault itself: the link stays dark this long
	for _, m := range machines3 {
		if s := c.seq(m); s >= uint64(2+n*7/10) {
			t.Fatalf("%s: %d entries at the master during the partition: the middle part crossed it", m, s)
		}
	}
	dropped := c.link.dropCount(t)
	c.link.heal(t)
	healed := time.Now()
	g.open(t, 2)

	converged := c.afterOutage(boots, term, n, tn, healed.Sub(began))
	t.Logf("partition of %s (%d packets dropped); every bootstrapper done %s after the heal", partition, dropped, converged.Round(time.Millisecond))
}

// The master SIGKILLed while three bootstrappers stream (30,000 lines
// each) and a terminal through it prints, and started again 5 s later on
// the same data and port: the same guarantees as a partition.
func TestMasterKilled(t *testing.T) {
	const (
		n, tn = 30000, 30000
		down  = 5 * time.Second
	)
	c := newCluster(t)
	master := c.startMaster()
	g := newGates(t)
	boots, term := c.streams(g, n, tn)

	g.open(t, 1) // the middle parts stream…
	testutil.WaitFor(t, "the middle part streaming", func() bool { return c.seq("m1") > uint64(2+n*2/5+100) })
	master.kill() // …and the master dies under them
	began := time.Now()
	time.Sleep(down) // the fault itself: the master stays down this long
	c.startMaster()
	restarted := time.Now()
	g.open(t, 2)

	converged := c.afterOutage(boots, term, n, tn, restarted.Sub(began))
	t.Logf("master down %s; every bootstrapper done %s after the restart", down, converged.Round(time.Millisecond))
}

// A link that cuts every connection once it carried 90 kB (both
// directions), for the bootstrappers (20,000 lines each) and the agent's
// tunnel alike: nothing is lost, the terminal through the master resumes
// across the cuts with its exact output.
func TestConnectionsCut(t *testing.T) {
	const (
		n, tn = 20000, 20000
		cut   = 90_000
	)
	c := newCluster(t)
	c.startMaster()
	px := c.startProxy(0, cut)
	began := time.Now()
	boots := map[string]*proc{}
	for _, m := range machines3 {
		// The lines are printed at once, so delivering them is the
		// final flush: it gets as long as the test waits, not the
		// default (three periods, at least 10 s), which a loaded
		// machine may not fit 90 connections' worth of lines in.
		boots[m] = c.bootstrapper(m, lines(m, n, gates{}), period, "-flush-timeout", finish.String())
	}
	c.agent("m1")
	c.waitAgent("m1")
	term := c.exec("m1", nil, nil, "sh", "-c", lines("t", tn, gates{}))
	for _, m := range machines3 {
		if code := boots[m].exit(t, finish); code != 0 {
			t.Fatalf("bootstrapper %s exited %d", m, code)
		}
	}
	took := time.Since(began)
	checkTerminal(t, term, want("t", tn))
	for _, m := range machines3 {
		c.checkLines(m, m, n)
		t.Logf("%s: %d lines once each, in order; handshakes at the master %v", m, n, c.handshakes("bootstrapper connected", m))
	}
	t.Logf("bootstrappers done in %s", took.Round(time.Millisecond))
	if px.cuts.Load() == 0 {
		t.Fatal("no connection was cut: the test proves nothing")
	}
	t.Logf("%d connections through the proxy, %d cut at %d bytes; agent handshakes %v; exec stderr: %q",
		px.conns.Load(), px.cuts.Load(), cut, c.handshakes("agent connected", "m1"), strings.TrimSpace(term.stderr.String()))
}

// 5 % of the packets lost in each direction and 50 ms added each way:
// three bootstrappers' 20,000 lines each arrive exactly once and in order,
// a terminal through the master prints its exact output, and an
// interactive one echoes its input.
func TestLossAndDelay(t *testing.T) {
	const (
		n, tn = 20000, 20000
		loss  = 0.05
		delay = 50 * time.Millisecond
	)
	c := newCluster(t)
	c.startMaster()
	c.link.loss(t, loss)
	c.startProxy(delay, 0)
	began := time.Now()
	boots := map[string]*proc{}
	for _, m := range machines3 {
		boots[m] = c.bootstrapper(m, lines(m, n, gates{}), period)
	}
	c.agent("m1")
	c.waitAgent("m1")
	term := c.exec("m1", nil, nil, "sh", "-c", lines("t", tn, gates{}))
	echo := c.exec("m1", strings.NewReader("hello through a lossy link\n"), []string{"-i"}, "cat")
	for _, m := range machines3 {
		if code := boots[m].exit(t, finish); code != 0 {
			t.Fatalf("bootstrapper %s exited %d", m, code)
		}
	}
	took := time.Since(began)
	checkTerminal(t, term, want("t", tn))
	checkTerminal(t, echo, "hello through a lossy link\n")
	for _, m := range machines3 {
		c.checkLines(m, m, n)
		t.Logf("%s: %d lines once each, in order; handshakes at the master %v", m, n, c.handshakes("bootstrapper connected", m))
	}
	t.Logf("%d packets dropped; bootstrappers done in %s; agent handshakes %v", c.link.dropCount(t), took.Round(time.Millisecond), c.handshakes("agent connected", "m1"))
}

// keepaliveBound is how long the master may take to notice an agent
// that vanished without closing its connection: the tunnel's yamux
// keepalive pings every 15 s and gives up on a ping unanswered for 30 s
// (internal/tunnel keepAliveInterval + writeTimeout).
const keepaliveBound = 45 * time.Second

// An agent SIGKILLed: its kernel closes the connection, and subscribed
// clients see the agent disconnected at once (within 2 s here). An agent
// SIGKILLed behind a dark link (its FIN never arrives: a machine that
// vanished) is noticed by the tunnel's keepalive, within keepaliveBound.
func TestAgentKilled(t *testing.T) {
	c := newCluster(t)
	c.startMaster()
	sub := c.subscribe("m1")
	ag := c.agent("m1")
	sub.agentState(t, true, time.Time{}, wait)

	killed := time.Now()
	ag.kill()
	plain := sub.agentState(t, false, killed, wait).Sub(killed)
	if plain > 2*time.Second {
		t.Errorf("agent SIGKILLed: disconnected shown after %s; want within 2s (the connection's end reaches the master at once)", plain)
	}

	ag = c.agent("m1")
	up := sub.agentState(t, true, killed, wait)
	c.link.partition(t)
	killed = time.Now()
	ag.kill()
	silent := sub.agentState(t, false, killed, keepaliveBound+15*time.Second).Sub(killed)
	if silent > keepaliveBound+2*time.Second {
		t.Errorf("agent gone silently: disconnected shown after %s; want within %s (+2s)", silent, keepaliveBound)
	}
	t.Logf("disconnected shown %s after a SIGKILL, %s after a silent death (bound %s); the second agent was up %s before",
		plain.Round(time.Millisecond), silent.Round(time.Millisecond), keepaliveBound, killed.Sub(up).Round(time.Millisecond))
}

// The poison frame: a line larger than the master's -max-message (4096
// bytes here; the bootstrapper's -max-line is 8 KiB) must not stop the
// stream nor make the bootstrapper reconnect in a loop: it arrives split
// (partial pieces that make up the line) or is counted as lost, the
// lines after it arrive, and the handshakes stay bounded.
func TestPoisonFrame(t *testing.T) {
	const (
		maxMessage = 4096
		long       = 20000
		after      = 100
	)
	c := newCluster(t)
	c.startMaster("-max-message", fmt.Sprint(maxMessage))
	script := fmt.Sprintf("echo before; head -c %d /dev/zero | tr '\\0' x; echo; seq -f 'after-%%.0f' 1 %d", long, after)
	boot := c.bootstrapper("m1", script, period)
	code := boot.exit(t, finish)
	hs := c.handshakes("bootstrapper connected", "m1")
	total := 0
	for _, n := range hs {
		total += n
	}
	if total > 2*endpoints {
		t.Errorf("%d handshakes at the master %v: a reconnection loop; want at most %d", total, hs, 2*endpoints)
	}
	if code != 0 {
		t.Fatalf("bootstrapper exited %d", code)
	}
	es := c.logs("m1")
	var texts []string
	var piece strings.Builder
	lost, pieces := uint64(0), 0
	for _, e := range es {
		if e.Type != masterapi.EntryLog {
			continue
		}
		switch {
		case e.Lost > 0:
			lost += e.Lost
		case e.Partial:
			piece.WriteString(e.Text)
			pieces++
		case piece.Len() > 0:
			piece.WriteString(e.Text)
			pieces++
			texts = append(texts, piece.String())
			piece.Reset()
		default:
			texts = append(texts, e.Text)
		}
	}
	wantTexts := []string{"before"}
	if lost == 0 {
		wantTexts = append(wantTexts, strings.Repeat("x", long))
	}
	for i := 1; i <= after; i++ {
		wantTexts = append(wantTexts, fmt.Sprintf("after-%d", i))
	}
	if fmt.Sprint(texts) != fmt.Sprint(wantTexts) {
		t.Fatalf("lines at the master (%d, %d lost, %d pieces): want %d: before, the long line whole or lost, after-1…after-%d",
			len(texts), lost, pieces, len(wantTexts), after)
	}
	c.checkStopped("m1")
	t.Logf("the %d-byte line arrived in %d pieces, %d lost; handshakes %v", long, pieces, lost, hs)
}

// checkStopped waits until machine name is STOPPED with its bootstrapper
// DONE.
func (c *cluster) checkStopped(name string) {
	c.t.Helper()
	testutil.WaitFor(c.t, name+" STOPPED", func() bool {
		m := c.machine(name)
		return m != nil && m.Status == masterapi.MachineStopped && m.Bootstrapper.Status == "DONE"
	})
}
