package bench

// BenchmarkMasterHop: what porthole-master's proxy adds to a terminal,
// with the master, the agent and the client as separate processes (the
// release binaries, built once per run): echo latency and throughput of a
// raw attach socket through the master against the same socket direct,
// and the master's memory per idle proxied session.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/protocol"
)

// hopSetup is a porthole-master and a `porthole agent -master` beside it,
// each its own process, the agent also listening directly.
type hopSetup struct {
	master        *exec.Cmd
	masterAddr    string // 127.0.0.1:PORT
	metricsAddr   string // the master's -metrics-listen
	agentAddr     string
	agentToken    string
	clientToken   string
	rid, name     string
	direct, viaMt string // http:// bases of the agent's API
}

// freeAddr returns a loopback address nobody listens on (yet).
func freeAddr(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProc starts a command whose output goes to a file in the
// benchmark's temporary directory; it is killed when the benchmark ends.
func startProc(b *testing.B, name string, env []string, args ...string) *exec.Cmd {
	b.Helper()
	out, err := os.Create(filepath.Join(b.TempDir(), filepath.Base(name)+".log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, out, out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// An interrupt first: the master and the agent shut down as
		// they would.
		cmd.Process.Signal(os.Interrupt)
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		out.Close()
		if b.Failed() {
			log, _ := os.ReadFile(out.Name())
			b.Logf("%s output:\n%s", name, log)
		}
	})
	return cmd
}

// startHop starts a master (with masterEnv added to its environment) and
// an agent.
func startHop(ctx context.Context, b *testing.B, masterEnv ...string) *hopSetup {
	b.Helper()
	bin, mbin := porthole(b), built(b, "./cmd/porthole-master")
	data := b.TempDir()
	h := &hopSetup{masterAddr: freeAddr(b), metricsAddr: freeAddr(b), agentAddr: freeAddr(b),
		agentToken: "bench-agent-token", rid: "bench:hop:owner", name: "dev"}
	mint := func(args ...string) string {
		out, err := exec.CommandContext(ctx, mbin, append([]string{"token", "-data", data}, args...)...).Output()
		if err != nil {
			b.Fatalf("porthole-master token %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	machineTok := mint("-init", "-runtime-id", h.rid, "-machine-name", h.name)
	h.clientToken = mint("-client", "-name", "bench")
	tokFile := filepath.Join(data, "machine.token")
	if err := os.WriteFile(tokFile, []byte(machineTok), 0o600); err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), "PORTHOLE_TOKEN="+h.agentToken)
	h.master = startProc(b, mbin, append(env[:len(env):len(env)], masterEnv...),
		"-listen", h.masterAddr, "-data", data, "-metrics-listen", h.metricsAddr, "-log-level", "warn")
	startProc(b, bin, env, "agent", "-listen", h.agentAddr, "-master", "ws://"+h.masterAddr,
		"-runtime-id", h.rid, "-machine-name", h.name, "-machine-token-file", tokFile, "-log-level", "warn")
	h.direct = "http://" + h.agentAddr
	h.viaMt = "http://" + h.masterAddr + "/api/runtimes/" + h.rid + "/machines/" + h.name + "/agent"
	// Both ways up: the agent answers directly and through its tunnel.
	deadline := time.Now().Add(20 * time.Second)
	for _, base := range []string{h.direct, h.viaMt} {
		for {
			_, err := h.start(ctx, base, protocol.StartParams{Argv: []string{"true"}})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not up: %v", base, err)
			}
			time.Sleep(20 * time.Millisecond) // polling a process that is starting
		}
	}
	return h
}

func (h *hopSetup) token(base string) string {
	if base == h.direct {
		return h.agentToken
	}
	return h.clientToken
}

// start starts a process with POST /v1/rpc (as the browser terminal does).
func (h *hopSetup) start(ctx context.Context, base string, p protocol.StartParams) (string, error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": protocol.MethodStart, "params": p})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/rpc", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+h.token(base))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct {
		Result *protocol.ProcessInfo `json:"result"`
		Error  *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("process.start: %s: %s", resp.Status, msg)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", err
	}
	if r.Error != nil || r.Result == nil {
		return "", fmt.Errorf("process.start: %+v", r.Error)
	}
	return r.Result.ID, nil
}

// attach opens a raw attach socket (porthole.raw.v1) to process id.
func (h *hopSetup) attach(ctx context.Context, base, id string) (*websocket.Conn, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/processes/" + id + "/attach"
	d := websocket.Dialer{Subprotocols: []string{protocol.SubprotocolRaw}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(ctx, u, http.Header{"Authorization": {"Bearer " + h.token(base)}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("attach %s: %v (%s)", u, err, resp.Status)
		}
		return nil, fmt.Errorf("attach %s: %v", u, err)
	}
	return ws, nil
}

// hopEcho times n keystrokes echoed by `stty raw -echo; exec cat` (a real
// process on the far side) over a raw attach socket, after 200 warm-up
// ones, in µs.
func (h *hopSetup) hopEcho(ctx context.Context, base string, n int) ([]float64, error) {
	id, err := h.start(ctx, base, protocol.StartParams{Argv: []string{"sh", "-c", "stty raw -echo; echo ready; exec cat"}, TTY: true})
	if err != nil {
		return nil, err
	}
	ws, err := h.attach(ctx, base, id)
	if err != nil {
		return nil, err
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(time.Minute))
	var seen []byte
	for !bytes.Contains(seen, []byte("ready")) {
		_, m, err := ws.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("waiting for ready: %v (read %q)", err, seen)
		}
		seen = append(seen, m...)
	}
	us := make([]float64, 0, n)
	key := []byte{'a'}
	for i := range 200 + n {
		key[0] = 'a' + byte(i%26)
		t0 := time.Now()
		if err := ws.WriteMessage(websocket.BinaryMessage, key); err != nil {
			return nil, err
		}
		_, m, err := ws.ReadMessage()
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(m, key) {
			return nil, fmt.Errorf("echo of %q: got %q", key, m)
		}
		if i >= 200 {
			us = append(us, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	return us, nil
}

// hopCat times `cat FILE` in a TTY (raw, so no CR is added) over a raw
// attach socket, from the keystroke that starts it to the socket's close.
func (h *hopSetup) hopCat(ctx context.Context, base, file string, size int64) (time.Duration, error) {
	id, err := h.start(ctx, base, protocol.StartParams{Argv: []string{"sh", "-c", "stty raw -echo; printf R; head -c1 >/dev/null; exec cat " + file}, TTY: true})
	if err != nil {
		return 0, err
	}
	ws, err := h.attach(ctx, base, id)
	if err != nil {
		return 0, err
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(2 * time.Minute))
	// The keystroke waits for the terminal to be raw: typed earlier, the
	// line discipline would echo it.
	if _, m, err := ws.ReadMessage(); err != nil || string(m) != "R" {
		return 0, fmt.Errorf("waiting for R: %q, %v", m, err)
	}
	t0 := time.Now()
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("x")); err != nil {
		return 0, err
	}
	var n int64
	buf := make([]byte, 256<<10)
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			if websocket.IsCloseError(err, protocol.CloseNormal) {
				break
			}
			return 0, fmt.Errorf("after %d bytes: %v", n, err)
		}
		k, err := drainBuf(r, buf)
		n += k
		if err != nil {
			return 0, err
		}
	}
	d := time.Since(t0)
	if n != size {
		return 0, fmt.Errorf("read %d bytes, want %d", n, size)
	}
	return d, nil
}

// masterMem returns the master's VmRSS and its Go heap and stacks in use
// (from its /metrics), in bytes.
func (h *hopSetup) masterMem(ctx context.Context) (rss, heap float64, err error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.master.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	for l := range strings.Lines(string(st)) {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			rss = kb * 1024
		}
	}
	ms, err := h.metrics(ctx)
	return rss, ms["go_memstats_heap_inuse_bytes"] + ms["go_memstats_stack_inuse_bytes"], err
}

// metrics returns the master's unlabelled and labelled samples by their
// exposition name (`name{label="v"}`).
func (h *hopSetup) metrics(ctx context.Context) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.metricsAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ms := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			ms[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return ms, sc.Err()
}

// masterVia returns how many connections to the agent the master carried
// over data connections and over streams of the tunnel
// (porthole_master_agent_connections_total{via}).
func (h *hopSetup) masterVia(ctx context.Context) (data, stream float64, err error) {
	ms, err := h.metrics(ctx)
	return ms[`porthole_master_agent_connections_total{via="data"}`], ms[`porthole_master_agent_connections_total{via="stream"}`], err
}

// masterCPU returns the master's CPU time (user + system) and its
// context switches (voluntary + involuntary) so far.
func (h *hopSetup) masterCPU() (time.Duration, float64, error) {
	pid := h.master.Process.Pid
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command's closing parenthesis: utime and stime are
	// the 14th and 15th of the line, in clock ticks (100 Hz on Linux).
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	stt, _ := strconv.ParseFloat(f[12], 64)
	// Context switches are counted per thread.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var cs float64
	for _, t := range tasks {
		status, err := os.ReadFile(t)
		if err != nil {
			continue // the thread has ended
		}
		for l := range strings.Lines(string(status)) {
			if f := strings.Fields(l); len(f) == 2 && strings.HasSuffix(f[0], "ctxt_switches:") {
				v, _ := strconv.ParseFloat(f[1], 64)
				cs += v
			}
		}
	}
	return time.Duration((ut + stt) * float64(10*time.Millisecond)), cs, nil
}

// masterSyscalls returns how many read and write system calls the master
// has made (/proc/PID/io syscr + syscw).
func (h *hopSetup) masterSyscalls() float64 {
	io, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", h.master.Process.Pid))
	var n float64
	for l := range strings.Lines(string(io)) {
		if f := strings.Fields(l); len(f) == 2 && (f[0] == "syscr:" || f[0] == "syscw:") {
			v, _ := strconv.ParseFloat(f[1], 64)
			n += v
		}
	}
	return n
}

// idleSessions opens n raw attach sockets through base to one process,
// sends a keystroke through each, then has the process print burst (a
// file's bytes, size bytes) once, which every socket reads: each has
// carried bytes both ways, as a terminal that showed a screenful and went
// idle. It returns the sockets.
func (h *hopSetup) idleSessions(ctx context.Context, base string, n int, burst string, size int64) ([]*websocket.Conn, error) {
	script := "stty raw -echo; while k=$(head -c1); do [ \"$k\" = b ] && cat " + burst + "; done"
	id, err := h.start(ctx, base, protocol.StartParams{Argv: []string{"sh", "-c", script}, TTY: true})
	if err != nil {
		return nil, err
	}
	var wss []*websocket.Conn
	fail := func(err error) ([]*websocket.Conn, error) {
		for _, w := range wss {
			w.Close()
		}
		return nil, err
	}
	for range n {
		ws, err := h.attach(ctx, base, id)
		if err != nil {
			return fail(err)
		}
		wss = append(wss, ws)
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte("x")); err != nil {
			return fail(err)
		}
	}
	if err := wss[0].WriteMessage(websocket.BinaryMessage, []byte("b")); err != nil {
		return fail(err)
	}
	for _, ws := range wss {
		ws.SetReadDeadline(time.Now().Add(time.Minute))
		for got := int64(0); got < size; {
			_, m, err := ws.ReadMessage()
			if err != nil {
				return fail(fmt.Errorf("burst: %d of %d bytes: %v", got, size, err))
			}
			got += int64(len(m))
		}
	}
	return wss, nil
}

// BenchmarkMasterHop: echo p50/p99 (2,000 keystrokes after 200 warm-up)
// and TTY throughput (`cat` of a 64 MiB file) over a raw attach socket,
// direct and through porthole-master, interleaved, three repetitions,
// medians with their range; then the master's memory per idle proxied
// session with 100 sessions open, each having carried a keystroke in and
// 64 KiB out and idle for 2 s (VmRSS, and Go heap + stacks in use, on a
// master that collects whenever it allocates; the least of three
// readings each before and after).
func BenchmarkMasterHop(b *testing.B) {
	const size = 64 * mib
	ctx := benchCtx(b, 5*time.Minute)
	file, n, _ := textFile(b, size)
	h := startHop(ctx, b)
	bases := []string{h.direct, h.viaMt}
	names := []string{"direct", "through the master"}
	var p50, p99, rate [2][]float64
	var keyCPU, keyCS, keySys, mibCPU, mibSys []float64 // the master's, through it
	const keys = 2000
	for i := range reps {
		for j, base := range bases {
			t0, cs0, _ := h.masterCPU()
			sc0 := h.masterSyscalls()
			us, err := h.hopEcho(ctx, base, keys)
			if err != nil {
				b.Fatalf("%s echo: %v", names[j], err)
			}
			t1, cs1, _ := h.masterCPU()
			if j == 1 {
				keyCPU = append(keyCPU, float64(t1-t0)/float64(time.Microsecond)/(keys+200))
				keyCS = append(keyCS, (cs1-cs0)/(keys+200))
				keySys = append(keySys, (h.masterSyscalls()-sc0)/(keys+200))
			}
			p50[j] = append(p50[j], percentile(us, 50))
			p99[j] = append(p99[j], percentile(us, 99))
		}
		for j, base := range bases {
			t0, _, _ := h.masterCPU()
			sc0 := h.masterSyscalls()
			d, err := h.hopCat(ctx, base, file, n)
			if err != nil {
				b.Fatalf("%s cat: %v", names[j], err)
			}
			t1, _, _ := h.masterCPU()
			if j == 1 {
				mibCPU = append(mibCPU, float64(t1-t0)/float64(time.Millisecond)/(float64(n)/mib))
				mibSys = append(mibSys, (h.masterSyscalls()-sc0)/(float64(n)/mib))
			}
			rate[j] = append(rate[j], mibps(n, d))
		}
		b.Logf("rep %d: echo p50 %.0f / %.0f µs, p99 %.0f / %.0f µs; TTY cat %.1f / %.1f MiB/s (direct / through the master); master per keystroke %.0f µs CPU, %.1f context switches, %.1f read+write syscalls; per MiB %.2f ms CPU, %.0f syscalls",
			i+1, p50[0][i], p50[1][i], p99[0][i], p99[1][i], rate[0][i], rate[1][i], keyCPU[i], keyCS[i], keySys[i], mibCPU[i], mibSys[i])
	}

	if d, st, err := h.masterVia(ctx); err == nil {
		b.Logf("connections to the agent through the master: %.0f over data connections, %.0f over tunnel streams", d, st)
	}

	// Memory on a master of its own whose collector runs whenever it
	// allocates (a 1 MiB memory limit, GOGC off), so that its heap in use
	// and its RSS are what the sessions hold, not garbage or pooled
	// buffers (a reading's own allocations run a collection first).
	const sessions = 100
	h = startHop(ctx, b, "GOGC=off", "GOMEMLIMIT=1MiB")
	mem := func() (rss, heap float64) {
		var rs, hs []float64
		for range 3 {
			r, hp, err := h.masterMem(ctx)
			if err != nil {
				b.Fatal(err)
			}
			rs, hs = append(rs, r), append(hs, hp)
			time.Sleep(200 * time.Millisecond) // readings spread over time, not a synchronisation
		}
		return slices.Min(rs), slices.Min(hs)
	}
	// A first session and its echo, so that what every session shares
	// (pools, the tunnel's buffers) is in the "before" figure.
	const burstSize = 64 << 10
	burst := filepath.Join(b.TempDir(), "burst")
	if err := os.WriteFile(burst, bytes.Repeat([]byte("0123456789abcdef"), burstSize/16), 0o644); err != nil {
		b.Fatal(err)
	}
	warm, err := h.idleSessions(ctx, h.viaMt, 1, burst, burstSize)
	if err != nil {
		b.Fatal(err)
	}
	// Idle: past the proxy's shrinkAfter (1 s), as a terminal left open.
	time.Sleep(2 * time.Second)
	rss0, heap0 := mem()
	wss, err := h.idleSessions(ctx, h.viaMt, sessions, burst, burstSize)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	rss1, heap1 := mem()
	for _, ws := range append(wss, warm...) {
		ws.Close()
	}
	rssPer, heapPer := (rss1-rss0)/sessions/1024, (heap1-heap0)/sessions/1024
	b.Logf("master with 1 / %d idle proxied sessions: VmRSS %.1f / %.1f MiB, Go heap+stacks in use %.1f / %.1f MiB",
		sessions+1, rss0/mib, rss1/mib, heap0/mib, heap1/mib)

	added := median(p50[1]) - median(p50[0])
	ratio := median(rate[1]) / median(rate[0])
	report(b, map[string]float64{
		"direct_p50_µs": median(p50[0]), "master_p50_µs": median(p50[1]), "added_p50_µs": added,
		"direct_p99_µs": median(p99[0]), "master_p99_µs": median(p99[1]),
		"direct_MiB/s": median(rate[0]), "master_MiB/s": median(rate[1]), "ratio": ratio,
		"rss_KiB/session": rssPer, "heap_KiB/session": heapPer,
		"master_key_cpu_µs": median(keyCPU), "master_key_cs": median(keyCS), "master_key_syscalls": median(keySys),
		"master_cpu_ms/MiB": median(mibCPU), "master_syscalls/MiB": median(mibSys),
	})
	verdict(b, "echo p50 added by the master, µs", added, "<=", 50)
	verdict(b, "TTY throughput through the master / direct", ratio, ">=", 0.9)
	verdict(b, "master VmRSS per idle proxied session, KiB", rssPer, "<=", 16)
	verdict(b, "master heap+stacks per idle proxied session, KiB", heapPer, "<=", 16)
}
