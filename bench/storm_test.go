package bench

// The reconnection storm: 1,000 machines lose porthole-master, which
// comes back on the same store and port; how hard do they hit it, how
// soon are they all back, and is anything lost?

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/bootstrapper"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

const (
	stormMachines = 1000
	// stormLines is how many lines each machine prints in each of three
	// phases: before the master goes, while it is down, once it is back.
	stormLines = 10
	// The targets: every machine connected again within two reconnect
	// periods of the restart, and no second in which the master receives
	// more than 1,000 handshakes.
	stormConvergePeriods = 2
	stormHandshakeTarget = 1000
)

// BenchmarkStorm runs 1,000 machines' bootstrappers in this process
// (bootstrapper.Run, the real push code, two connections each, every
// machine's installer a `cat` of a FIFO the benchmark writes to), and
// porthole-master in this process over a bbolt store. The master is
// lost (its listener and every connection closed at once, then the
// master and its store closed) while the machines stream, stays down
// for one reconnect period while they print more, and comes back on
// the same store and port. Reported: the peak handshakes in any one
// second (a sliding window) and the mean over the reconnection, the
// time until every machine has both connections again, each against
// its target as a ratio, and the events lost (every line must be
// stored once, in order).
//
// It runs with a reconnect period of 2 s (quick) and with the default,
// 10 s: the backoff spreads the reconnections over about one period, so
// the handshake rate scales with 1/period.
func BenchmarkStorm(b *testing.B) {
	for _, period := range []time.Duration{2 * time.Second, 10 * time.Second} {
		b.Run(fmt.Sprintf("period=%s", period), func(b *testing.B) {
			for range b.N {
				stormOnce(b, period)
			}
		})
	}
}

func stormOnce(b *testing.B, period time.Duration) {
	ctx := benchCtx(b, 5*time.Minute)
	dir := b.TempDir()
	fifos := b.TempDir()
	signer, err := master.LoadSigner(dir)
	if err != nil {
		b.Fatal(err)
	}
	sm := &stormMaster{b: b, dir: dir, signer: signer, machines: make([][2]int, stormMachines), tokens: map[string]int{}}
	toks := make([]string, stormMachines)
	sm.all = make(chan struct{})
	const rid = "storm:env:owner"
	id, _ := che.ParseRuntimeID(rid)
	for i := range stormMachines {
		tok, err := signer.MachineToken(rid, stormName(i))
		if err != nil {
			b.Fatal(err)
		}
		sm.tokens[tok], toks[i] = i, tok
	}
	sm.start("127.0.0.1:0")
	defer sm.stop()

	// The machines: each installer cats its FIFO, which the benchmark
	// holds open for writing (O_RDWR opens at once) until the end.
	writers := make([]*os.File, stormMachines)
	defer func() {
		for _, w := range writers {
			if w != nil {
				w.Close()
			}
		}
	}()
	type result struct {
		i   int
		err error
	}
	results := make(chan result, stormMachines)
	runCtx, cancelRuns := context.WithCancel(ctx)
	defer cancelRuns()
	for i := range stormMachines {
		path := filepath.Join(fifos, stormName(i))
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			b.Fatal(err)
		}
		if writers[i], err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			b.Fatal(err)
		}
		o := bootstrapper.Options{
			Installers:  []bootstrapper.Installer{{ID: "org.storm", Script: "exec cat " + path}},
			MachineName: stormName(i), RuntimeID: id,
			PushURL: "ws://" + sm.addr + "/api/websocket", LogsURL: "ws://" + sm.addr + "/api/websocket-minor",
			Token: toks[i], ReconnectPeriod: period, InstallerTimeout: 10 * time.Minute,
			SpoolMemory: 1 << 20, Logger: slog.New(slog.DiscardHandler),
		}
		go func() { results <- result{i, bootstrapper.Run(runCtx, o)} }()
	}
	began := time.Now()
	select {
	case <-sm.allConnected():
	case <-ctx.Done():
		b.Fatalf("only %d of %d machines connected at the start", sm.connectedCount(), stormMachines)
	}
	b.Logf("%d machines connected (both endpoints) in %s", stormMachines, time.Since(began).Round(time.Millisecond))

	write := func(phase string) {
		for i, w := range writers {
			for l := 1; l <= stormLines; l++ {
				if _, err := fmt.Fprintf(w, "%s-%d\n", phase, l); err != nil {
					b.Fatalf("machine %d: %v", i, err)
				}
			}
		}
	}
	write("a") // in flight as the master goes
	sm.kill()
	write("b")         // printed while it is down
	time.Sleep(period) // the outage itself: one reconnect period
	sm.mu.Lock()
	sm.handshakes = nil
	sm.mu.Unlock()
	sm.start(sm.addr)
	restarted := time.Now()
	var converged time.Duration
	select {
	case <-sm.allConnected():
		converged = time.Since(restarted)
	case <-time.After(20 * period):
		b.Fatalf("only %d of %d machines connected again within %s", sm.connectedCount(), stormMachines, 20*period)
	}
	// The reconnection's handshakes: until every machine was back.
	sm.mu.Lock()
	hs := slices.Clone(sm.handshakes)
	sm.mu.Unlock()
	write("c")
	for _, w := range writers {
		w.Close() // cat ends, the installer is DONE, the bootstrapper flushes and returns
	}
	clear(writers)
	failed := 0
	for range stormMachines {
		select {
		case r := <-results:
			if r.err != nil {
				failed++
				if failed <= 3 {
					b.Logf("machine %d: %v", r.i, r.err)
				}
			}
		case <-ctx.Done():
			b.Fatal("the bootstrappers did not finish")
		}
	}
	lost := sm.lost(ctx, rid)

	peak, mean := 0, 0.0
	for i, j := 0, 0; j < len(hs); j++ {
		for hs[j].Sub(hs[i]) >= time.Second {
			i++
		}
		peak = max(peak, j-i+1)
	}
	if len(hs) > 0 {
		mean = float64(len(hs)) / max(hs[len(hs)-1].Sub(restarted).Seconds(), 1)
	}
	b.Logf("restart: %d handshakes until all %d machines were back, in %s (first at +%s, last at +%s); %d bootstrappers failed; %d events lost",
		len(hs), stormMachines, converged.Round(time.Millisecond), hs[0].Sub(restarted).Round(time.Millisecond),
		hs[len(hs)-1].Sub(restarted).Round(time.Millisecond), failed, lost)
	report(b, map[string]float64{
		"peak_handshakes/s":  float64(peak),
		"mean_handshakes/s":  mean,
		"peak/target":        float64(peak) / stormHandshakeTarget,
		"converge_s":         converged.Seconds(),
		"converge/target":    converged.Seconds() / (stormConvergePeriods * period).Seconds(),
		"events_lost":        float64(lost),
		"bootstrappers_fail": float64(failed),
	})
	verdict(b, "peak handshakes in one second", float64(peak), "<=", stormHandshakeTarget)
	verdict(b, "seconds until every machine is back", converged.Seconds(), "<=", (stormConvergePeriods * period).Seconds())
	verdict(b, "events lost", float64(lost), "<=", 0)
	if lost > 0 || failed > 0 {
		b.Errorf("%d events lost, %d bootstrappers failed", lost, failed)
	}
}

func stormName(i int) string { return fmt.Sprintf("m%04d", i) }

// stormMaster is the in-process master the machines lose and get back:
// the same store directory and address every time. Its handler counts
// the bootstrappers' handshakes and their open connections.
type stormMaster struct {
	b      *testing.B
	dir    string
	signer *master.Signer
	tokens map[string]int // machine token → machine
	addr   string

	running bool
	m       *master.Master
	st      *store.Bolt
	srv     *http.Server
	ln      net.Listener
	conns   sync.Map // net.Conn → struct{}: every connection accepted, to cut at once
	srvWG   sync.WaitGroup

	mu         sync.Mutex
	machines   [][2]int // open connections per machine and endpoint
	full       int      // machines with both endpoints connected
	all        chan struct{}
	handshakes []time.Time // bootstrapper handshakes, in order
}

func (sm *stormMaster) start(addr string) {
	b := sm.b
	st, err := store.Open(filepath.Join(sm.dir, "porthole.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	m, err := master.New(master.Options{Store: st, Signer: sm.signer, Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	var ln net.Listener
	for deadline := time.Now().Add(30 * time.Second); ; {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	sm.m, sm.st, sm.ln, sm.addr, sm.running = m, st, ln, ln.Addr().String(), true
	inner := m.Handler()
	sm.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ep := -1
			switch r.URL.Path {
			case "/api/websocket":
				ep = 0
			case "/api/websocket-minor":
				ep = 1
			}
			i, ok := sm.tokens[r.Header.Get("Authorization")]
			if ep >= 0 && ok {
				sm.conn(i, ep, 1)
				defer sm.conn(i, ep, -1)
			}
			inner.ServeHTTP(w, r)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				sm.conns.Store(c, struct{}{})
			}
		},
	}
	srv := sm.srv
	sm.srvWG.Go(func() { srv.Serve(ln) })
}

// conn counts a bootstrapper connection of machine i opening (d 1, a
// handshake) or ending (-1).
func (sm *stormMaster) conn(i, ep, d int) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if d > 0 {
		sm.handshakes = append(sm.handshakes, time.Now())
	}
	before := sm.machines[i][0] > 0 && sm.machines[i][1] > 0
	sm.machines[i][ep] += d
	after := sm.machines[i][0] > 0 && sm.machines[i][1] > 0
	switch {
	case !before && after:
		sm.full++
		if sm.full == stormMachines {
			close(sm.all)
		}
	case before && !after:
		if sm.full == stormMachines {
			sm.all = make(chan struct{})
		}
		sm.full--
	}
}

func (sm *stormMaster) allConnected() <-chan struct{} {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.all
}

func (sm *stormMaster) connectedCount() int {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.full
}

// kill loses the master as a crash would for its peers: the listener and
// every connection closed at once; then the master and its store are
// closed (what it had not committed was not acknowledged either), and
// kill waits until no bootstrapper connection is left.
func (sm *stormMaster) kill() {
	sm.running = false
	sm.ln.Close()
	sm.conns.Range(func(k, _ any) bool {
		k.(net.Conn).Close()
		sm.conns.Delete(k)
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sm.m.Shutdown(ctx)
	sm.srv.Close()
	sm.srvWG.Wait()
	sm.st.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		sm.mu.Lock()
		open := 0
		for _, c := range sm.machines {
			open += c[0] + c[1]
		}
		sm.mu.Unlock()
		if open == 0 {
			return
		}
		if time.Now().After(deadline) {
			sm.b.Fatalf("%d connections still open 30s after the master was lost", open)
		}
	}
}

func (sm *stormMaster) stop() {
	if sm.running {
		sm.kill()
	}
}

// lost reads every machine's journal and counts the lines missing from
// a–1 … c-stormLines (each phase in order, each line once; a line out of
// place counts as lost).
func (sm *stormMaster) lost(ctx context.Context, rid string) int {
	tok, err := sm.signer.ClientToken()
	if err != nil {
		sm.b.Fatal(err)
	}
	lost := 0
	for i := range stormMachines {
		var want []string
		for _, p := range []string{"a", "b", "c"} {
			for l := 1; l <= stormLines; l++ {
				want = append(want, fmt.Sprintf("%s-%d", p, l))
			}
		}
		got, err := stormLogs(ctx, sm.addr, tok, rid, stormName(i))
		if err != nil {
			sm.b.Fatal(err)
		}
		k := 0
		for _, t := range got {
			if k < len(want) && t == want[k] {
				k++
			}
		}
		lost += len(want) - k
		if extra := len(got) - k; extra > 0 {
			sm.b.Errorf("%s: %d lines stored that are not the next expected (duplicates or out of order)", stormName(i), extra)
		}
	}
	return lost
}

// stormLogs returns the log lines of a machine's journal.
func stormLogs(ctx context.Context, addr, tok, rid, name string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/runtimes/"+rid+"/machines/"+name+"/logs", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("logs of %s: %s %s", name, resp.Status, b)
	}
	var page struct {
		Entries []masterapi.Entry `json:"entries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range page.Entries {
		if e.Type == masterapi.EntryLog {
			out = append(out, e.Text)
		}
	}
	return out, nil
}
