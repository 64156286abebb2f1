package bench

// The agent's fast path and lean session (docs/performance.md, "Agent fast
// path"), measured the way a browser terminal uses the agent: the agent
// binary as a separate process, a process started with POST process.start,
// and a raw attach socket (porthole.raw.v1). The cost per keystroke and
// per 32 KiB of output is read from the agent's /proc counters (every
// thread's context switches and CPU time), so it is the agent's alone.
//
// PORTHOLE_FASTPATH_BASELINE=/path/to/porthole adds a second binary (an
// older build) measured beside this tree's, interleaved, in the same run;
// without it (or PORTHOLE_FASTPATH=1) the benchmarks skip, so that `make
// bench` does not run them.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
)

const (
	fpKeystrokes = 1000
	fpWarmup     = 100
	fpReps       = 5
	fpOutBytes   = 16 << 20
)

// fpAgent is a `porthole agent` process.
type fpAgent struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func fpStart(tb testing.TB, bin string, extra ...string) *fpAgent {
	tb.Helper()
	addr := testutil.FreeAddr(tb)
	args := append([]string{"agent", "-listen", addr, "-insecure-no-auth", "-log-level", "warn", "-grace", "1s", "-max-processes", "1100"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	a := &fpAgent{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { cmd.Wait(); close(a.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a
			}
		}
		if time.Now().After(deadline) {
			a.stop()
			tb.Fatalf("%s not healthy: %v", bin, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *fpAgent) stop() {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// fpCounters are the agent's own costs so far, summed over its threads.
type fpCounters struct {
	cpuNS, switches, involuntary int64
	// threads: per thread (by its task directory), CPU ns, voluntary
	// and involuntary switches; for PORTHOLE_FASTPATH_THREADS=1.
	threads map[string][3]int64
}

func (a *fpAgent) counters(tb testing.TB) fpCounters {
	tb.Helper()
	c := fpCounters{threads: map[string][3]int64{}}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", a.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("agent threads: %v", err)
	}
	for _, t := range tasks {
		if b, err := os.ReadFile(t + "/schedstat"); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				c.cpuNS += n
				th := c.threads[t]
				th[0] = n
				c.threads[t] = th
			}
		}
		b, err := os.ReadFile(t + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				c.switches += n
				th := c.threads[t]
				if k == "nonvoluntary_ctxt_switches" {
					c.involuntary += n
					th[2] = n
				} else {
					th[1] = n
				}
				c.threads[t] = th
			}
		}
	}
	return c
}

// logThreads logs each thread's CPU and switches per keystroke between
// c0 and c1 (threads that did nothing are left out).
func logThreads(tb testing.TB, c0, c1 fpCounters, n int) {
	for t, v1 := range c1.threads {
		v0 := c0.threads[t]
		cpu, vol, inv := v1[0]-v0[0], v1[1]-v0[1], v1[2]-v0[2]
		if vol+inv == 0 {
			continue
		}
		tb.Logf("thread %s: %.1f CPU µs, %.2f voluntary, %.2f involuntary switches per keystroke",
			filepath.Base(t), float64(cpu)/1e3/float64(n), float64(vol)/float64(n), float64(inv)/float64(n))
	}
}

func (a *fpAgent) rssKiB(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// startProc starts argv in a terminal and returns its id and pid.
func (a *fpAgent) startProc(tb testing.TB, argv ...string) (string, int) {
	tb.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "process.start",
		"params": map[string]any{"argv": argv, "tty": true}})
	resp, err := http.Post("http://"+a.addr+"/v1/rpc", "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Result struct {
			ID  string `json:"id"`
			PID int    `json:"pid"`
		} `json:"result"`
		Error *struct{ Message string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Error != nil {
		tb.Fatalf("process.start: %v %+v", err, r.Error)
	}
	return r.Result.ID, r.Result.PID
}

func (a *fpAgent) attachRaw(tb testing.TB, id string) *websocket.Conn {
	tb.Helper()
	d := websocket.Dialer{Subprotocols: []string{"porthole.raw.v1"}, HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.Dial("ws://"+a.addr+"/v1/processes/"+id+"/attach", nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ws
}

// waitComm waits until pid, or one of its children, runs the program
// named comm.
func waitComm(tb testing.TB, pid int, comm string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		pids := []string{strconv.Itoa(pid)}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
			pids = append(pids, strings.Fields(string(b))...)
		}
		for _, p := range pids {
			if b, err := os.ReadFile("/proc/" + p + "/comm"); err == nil && strings.TrimSpace(string(b)) == comm {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	tb.Fatalf("pid %d never ran %s", pid, comm)
}

type fpEcho struct {
	p50, p99, switches, involuntary, cpuUS float64
}

// fpEchoRun types keystrokes one at a time into `stty raw -echo; exec cat`
// and times each until cat's copy comes back.
func fpEchoRun(tb testing.TB, a *fpAgent) fpEcho {
	id, pid := a.startProc(tb, "sh", "-c", "stty raw -echo; exec cat")
	ws := a.attachRaw(tb, id)
	defer ws.Close()
	waitComm(tb, pid, "cat")
	key := func(c byte) time.Duration {
		t0 := time.Now()
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte{c}); err != nil {
			tb.Fatal(err)
		}
		for {
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, m, err := ws.ReadMessage()
			if err != nil {
				tb.Fatal(err)
			}
			if bytes.IndexByte(m, c) >= 0 {
				return time.Since(t0)
			}
		}
	}
	for i := range fpWarmup {
		key(byte('a' + i%26))
	}
	c0 := a.counters(tb)
	lat := make([]float64, fpKeystrokes)
	for i := range lat {
		lat[i] = float64(key(byte('a' + i%26)).Microseconds())
	}
	c1 := a.counters(tb)
	if os.Getenv("PORTHOLE_FASTPATH_THREADS") != "" {
		logThreads(tb, c0, c1, fpKeystrokes)
	}
	slices.Sort(lat)
	return fpEcho{
		p50: lat[len(lat)/2], p99: lat[len(lat)*99/100],
		switches:    float64(c1.switches-c0.switches) / fpKeystrokes,
		involuntary: float64(c1.involuntary-c0.involuntary) / fpKeystrokes,
		cpuUS:       float64(c1.cpuNS-c0.cpuNS) / 1e3 / fpKeystrokes,
	}
}

type fpOut struct {
	mibps, switches, cpuUS float64 // the costs per 32 KiB
}

// fpOutputRun cats a file through a terminal and the raw attach socket.
func fpOutputRun(tb testing.TB, a *fpAgent, file string) fpOut {
	id, pid := a.startProc(tb, "sh", "-c", "stty raw -echo; head -c 1 >/dev/null; exec cat "+file)
	ws := a.attachRaw(tb, id)
	defer ws.Close()
	waitComm(tb, pid, "head")
	c0 := a.counters(tb)
	t0 := time.Now()
	ws.WriteMessage(websocket.BinaryMessage, []byte{'g'})
	var n int64
	for {
		ws.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				tb.Fatal(err)
			}
			break
		}
		n += int64(len(m))
	}
	el := time.Since(t0)
	c1 := a.counters(tb)
	if n < fpOutBytes {
		tb.Fatalf("got %d bytes, want %d", n, fpOutBytes)
	}
	chunks := float64(n) / (32 << 10)
	return fpOut{
		mibps:    float64(n) / (1 << 20) / el.Seconds(),
		switches: float64(c1.switches-c0.switches) / chunks,
		cpuUS:    float64(c1.cpuNS-c0.cpuNS) / 1e3 / chunks,
	}
}

func fpBuild(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "porthole")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/porthole")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// fpBinaries are the agents to measure. The fast-path benchmarks compare
// builds; `make bench` measures the same things its own way (user_test.go),
// so they run only when asked: PORTHOLE_FASTPATH_BASELINE set, or
// PORTHOLE_FASTPATH=1 for this tree alone.
func fpBinaries(b *testing.B) [][2]string {
	if os.Getenv("PORTHOLE_FASTPATH_BASELINE") == "" && os.Getenv("PORTHOLE_FASTPATH") == "" {
		b.Skip("set PORTHOLE_FASTPATH_BASELINE=/path/to/porthole (or PORTHOLE_FASTPATH=1) to run")
	}
	bins := [][2]string{{"this tree", fpBuild(b)}}
	if base := os.Getenv("PORTHOLE_FASTPATH_BASELINE"); base != "" {
		bins = append([][2]string{{"baseline", base}}, bins...)
	}
	return bins
}

func fpMedian(v []float64) (med, lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2], s[0], s[len(s)-1]
}

// BenchmarkAgentFastPath: echo of 1,000 keystrokes through `stty raw
// -echo; exec cat` (p50, p99, and the agent's context switches and CPU µs
// per keystroke), then 16 MiB of `cat` output (MiB/s, and the agent's
// context switches and CPU µs per 32 KiB); medians of 5 interleaved reps,
// a fresh agent per rep.
func BenchmarkAgentFastPath(b *testing.B) {
	bins := fpBinaries(b)
	file := filepath.Join(b.TempDir(), "out")
	data := make([]byte, fpOutBytes)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(' ' + rng.IntN(95))
		if i%80 == 79 {
			data[i] = '\n'
		}
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		b.Fatal(err)
	}
	echo := make([][]fpEcho, len(bins))
	out := make([][]fpOut, len(bins))
	for range b.N {
		for rep := range fpReps {
			for i, bin := range bins {
				_ = rep
				a := fpStart(b, bin[1])
				echo[i] = append(echo[i], fpEchoRun(b, a))
				out[i] = append(out[i], fpOutputRun(b, a, file))
				a.stop()
			}
		}
	}
	for i, bin := range bins {
		col := func(f func(fpEcho) float64) string {
			v := make([]float64, len(echo[i]))
			for j, e := range echo[i] {
				v[j] = f(e)
			}
			m, lo, hi := fpMedian(v)
			return fmt.Sprintf("%.1f (%.1f–%.1f)", m, lo, hi)
		}
		ocol := func(f func(fpOut) float64) string {
			v := make([]float64, len(out[i]))
			for j, e := range out[i] {
				v[j] = f(e)
			}
			m, lo, hi := fpMedian(v)
			return fmt.Sprintf("%.1f (%.1f–%.1f)", m, lo, hi)
		}
		b.Logf("%s: echo p50 %s µs, p99 %s µs, %s switches (%s involuntary) and %s CPU µs per keystroke; output %s MiB/s, %s switches and %s CPU µs per 32 KiB",
			bin[0], col(func(e fpEcho) float64 { return e.p50 }), col(func(e fpEcho) float64 { return e.p99 }),
			col(func(e fpEcho) float64 { return e.switches }), col(func(e fpEcho) float64 { return e.involuntary }),
			col(func(e fpEcho) float64 { return e.cpuUS }),
			ocol(func(o fpOut) float64 { return o.mibps }), ocol(func(o fpOut) float64 { return o.switches }),
			ocol(func(o fpOut) float64 { return o.cpuUS }))
	}
}

// BenchmarkAgentIdleAttached: the agent's VmRSS per idle attached session
// ((RSS with n sessions − idle RSS) / n) for n = 100 and 1,000: each
// session a terminal running `sleep 3600` with a raw attach socket open,
// the way the browser terminal holds one; beside it, Go's own figures
// from the agent's metrics (goroutines, heap in use and memory obtained
// from the OS, per session). What starting the sessions left on the heap
// counts too: garbage the GC has not collected yet (at 100 sessions the
// heap stays below the GC's 4 MiB minimum, so none is).
func BenchmarkAgentIdleAttached(b *testing.B) {
	bins := fpBinaries(b)
	for _, n := range []int{100, 1000} {
		res := make([][]fpIdleResult, len(bins))
		for range b.N {
			for range 3 {
				for i, bin := range bins {
					res[i] = append(res[i], fpIdle(b, bin[1], n))
				}
			}
		}
		for i, bin := range bins {
			med := func(f func(fpIdleResult) float64) (m, lo, hi float64) {
				v := make([]float64, len(res[i]))
				for j, r := range res[i] {
					v[j] = f(r)
				}
				return fpMedian(v)
			}
			rss, lo, hi := med(func(r fpIdleResult) float64 { return r.rssKiB })
			g, _, _ := med(func(r fpIdleResult) float64 { return r.goroutines })
			heap, _, _ := med(func(r fpIdleResult) float64 { return r.heapKiB })
			sys, _, _ := med(func(r fpIdleResult) float64 { return r.sysKiB })
			b.Logf("%s: %d sessions: %.1f KiB RSS per idle attached session (%.1f–%.1f); per session %.2f goroutines, heap in use %.1f KiB, from the OS %.1f KiB",
				bin[0], n, rss, lo, hi, g, heap, sys)
		}
	}
}

type fpIdleResult struct {
	rssKiB, goroutines, heapKiB, sysKiB float64
}

func fpIdle(b *testing.B, bin string, n int) fpIdleResult {
	maddr := testutil.FreeAddr(b)
	a := fpStart(b, bin, "-metrics-listen", maddr)
	defer a.stop()
	time.Sleep(500 * time.Millisecond)
	idle := a.rssKiB(b)
	m0 := fpMetrics(b, maddr)
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			id, _ := a.startProc(b, "sleep", "3600")
			conns[i] = a.attachRaw(b, id)
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(2 * time.Second) // settled: nothing is pending
	var rss []float64
	for range 3 {
		rss = append(rss, float64(a.rssKiB(b)))
		time.Sleep(300 * time.Millisecond)
	}
	m, _, _ := fpMedian(rss)
	m1 := fpMetrics(b, maddr)
	per := func(k string) float64 { return (m1[k] - m0[k]) / float64(n) }
	return fpIdleResult{
		rssKiB:     (m - float64(idle)) / float64(n),
		goroutines: per("go_goroutines"),
		heapKiB:    per("go_memstats_heap_inuse_bytes") / 1024,
		sysKiB:     per("go_memstats_sys_bytes") / 1024,
	}
}

// fpMetrics reads the agent's unlabelled metrics.
func fpMetrics(b *testing.B, addr string) map[string]float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	m := make(map[string]float64)
	for _, line := range strings.Split(buf.String(), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(k, "#") {
			m[k], _ = strconv.ParseFloat(v, 64)
		}
	}
	return m
}
