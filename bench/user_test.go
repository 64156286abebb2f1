package bench

// What a user sees: the benchmarks of this file run the client (this
// process), the agent (`porthole agent`, the static binary) and the
// master (`porthole-master`) as separate processes, and drive them as a
// browser terminal does: POST /v1/rpc process.start, then the raw attach
// socket (porthole.raw.v1), directly or through the master's proxy
// (/api/runtimes/RID/machines/NAME/agent/...). The far side of every
// terminal is a real process (`stty raw -echo; exec cat` for echo), so a
// keystroke crosses the whole path twice; the limit beside each figure is
// a bare PTY driven the same way in the same run. gotty, built from the
// Go module proxy when it can be, runs beside them as a peer.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/protocol"
)

const (
	// userReps is the number of interleaved repetitions of each side
	// for echo; throughput takes userThroughputReps (each a 64 MiB cat).
	userReps           = 5
	userThroughputReps = 3
	// userKeys is the number of timed keystrokes per repetition, after
	// echoWarmup untimed ones.
	userKeys = 3000
	userRID  = "bench:user:owner"
	userName = "dev"
)

// The commands on the far side. Each prints R once its terminal is set
// up, so the first keystroke never meets the line discipline's defaults.
const (
	echoCmd = "stty raw -echo; printf R; exec cat"
	// catCmd waits for a newline (not echoed) before it starts, so the
	// viewer is attached and the clock running when output begins.
	catCmd = "stty -echo; printf R; read x; exec cat \"$0\""
)

// stack is a porthole-master and a `porthole agent` serving both on its
// own port and through its tunnel to the master, each its own process.
type stack struct {
	agent, master *server
	agentTok      string
	clientTok     string
	dir           string
	once          sync.Once
}

// startStack starts the master (when withMaster) and the agent, waits
// until the agent's tunnel is up, and stops both when the benchmark ends.
func startStack(ctx context.Context, b *testing.B, withMaster bool) *stack {
	b.Helper()
	s, err := newStack(ctx, b, withMaster)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.stop(b) })
	return s
}

// newStack is startStack for a caller that stops it itself (stop).
func newStack(ctx context.Context, b *testing.B, withMaster bool) (s *stack, err error) {
	if err := raiseNOFILE(8*idleSessions + 1000); err != nil {
		b.Logf("open-file limit: %v", err)
	}
	// The binaries first: their build must not count against ctx.
	bin, mbin := porthole(b), ""
	if withMaster {
		mbin = portholeMaster(b)
	}
	dir, err := os.MkdirTemp("", "porthole-bench-user-")
	if err != nil {
		return nil, err
	}
	s = &stack{agentTok: token, dir: dir}
	defer func() {
		if err != nil {
			s.stop(b)
		}
	}()
	tokFile := filepath.Join(dir, "agent.token")
	if err := os.WriteFile(tokFile, []byte(token), 0o600); err != nil {
		return s, err
	}
	args := []string{"agent", "-token-file", tokFile, "-log-level", "warn", "-grace", "2s",
		"-max-processes", strconv.Itoa(idleSessions + 100)}
	if withMaster {
		data := filepath.Join(dir, "master")
		out, err := exec.CommandContext(ctx, mbin, "token", "-init", "-data", data, "-client", "-name", "bench").Output()
		if err != nil {
			return s, fmt.Errorf("porthole-master token -client: %w", err)
		}
		s.clientTok = strings.TrimSpace(string(out))
		out, err = exec.CommandContext(ctx, mbin, "token", "-data", data, "-runtime-id", userRID, "-machine-name", userName).Output()
		if err != nil {
			return s, fmt.Errorf("porthole-master token (machine): %w", err)
		}
		mtok := filepath.Join(dir, "machine.token")
		if err := os.WriteFile(mtok, bytes.TrimSpace(out), 0o600); err != nil {
			return s, err
		}
		s.master, err = startServer(ctx, b, mbin, func(addr string) []string {
			return []string{"-listen", addr, "-data", data, "-log-level", "warn"}
		})
		if err != nil {
			return s, fmt.Errorf("porthole-master: %w", err)
		}
		args = append(args, "-master", "ws://"+s.master.addr, "-machine-token-file", mtok,
			"-runtime-id", userRID, "-machine-name", userName)
	}
	s.agent, err = startServer(ctx, b, bin, func(addr string) []string { return append(args, "-listen", addr) })
	if err != nil {
		return s, fmt.Errorf("porthole agent: %w", err)
	}
	if withMaster {
		if err := s.waitTunnel(ctx); err != nil {
			return s, err
		}
	}
	return s, nil
}

// stop stops the agent (it takes its children), then the master, and
// removes the stack's directory.
func (s *stack) stop(b *testing.B) {
	s.once.Do(func() {
		if s.agent != nil {
			s.agent.stop(b)
		}
		if s.master != nil {
			s.master.stop(b)
		}
		os.RemoveAll(s.dir)
	})
}

// route is how a client reaches the agent: its base URL and token.
type route struct{ base, tok string }

func (s *stack) direct() route { return route{"http://" + s.agent.addr, s.agentTok} }
func (s *stack) viaMaster() route {
	return route{"http://" + s.master.addr + "/api/runtimes/" + userRID + "/machines/" + userName + "/agent", s.clientTok}
}

// waitTunnel waits until the master reaches the agent (502 until then).
func (s *stack) waitTunnel(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		err := s.viaMaster().call(ctx, protocol.MethodAgentInfo, struct{}{}, nil)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the agent's tunnel to the master did not come up: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// call makes one JSON-RPC call with POST /v1/rpc, as a browser does.
func (r route) call(ctx context.Context, method string, params, result any) error {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", r.base+"/v1/rpc", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+r.tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s/v1/rpc %s: %s: %s", r.base, method, resp.Status, bytes.TrimSpace(data))
	}
	var reply struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &reply); err != nil {
		return fmt.Errorf("%s: %w in %q", method, err, data)
	}
	if reply.Error != nil {
		return fmt.Errorf("%s: %d %s", method, reply.Error.Code, reply.Error.Message)
	}
	if result == nil {
		return nil
	}
	return json.Unmarshal(reply.Result, result)
}

// open starts argv on a terminal and attaches a raw socket to it.
func (r route) open(ctx context.Context, argv ...string) (*rawTerm, error) {
	var info protocol.ProcessInfo
	if err := r.call(ctx, protocol.MethodStart, protocol.StartParams{Argv: argv, TTY: true}, &info); err != nil {
		return nil, err
	}
	ws, err := dialWS(ctx, "ws"+strings.TrimPrefix(r.base, "http")+"/v1/processes/"+info.ID+"/attach",
		[]string{protocol.SubprotocolRaw}, http.Header{"Authorization": {"Bearer " + r.tok}})
	if err != nil {
		r.call(ctx, protocol.MethodKill, protocol.IDParams{ID: info.ID}, nil)
		return nil, fmt.Errorf("attach %s: %w", info.ID, err)
	}
	return &rawTerm{ws: ws, kill: func() error {
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return r.call(kctx, protocol.MethodKill, protocol.IDParams{ID: info.ID}, nil)
	}}, nil
}

func dialWS(ctx context.Context, url string, subprotocols []string, h http.Header) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 30 * time.Second,
		ReadBufferSize: 64 << 10, WriteBufferSize: 4 << 10}
	ws, resp, err := d.DialContext(ctx, url, h)
	if err != nil && resp != nil {
		err = fmt.Errorf("%w (%s)", err, resp.Status)
	}
	return ws, err
}

// term is one terminal as the benchmarks drive it: keystrokes in,
// output out (io.EOF once the far side ended), and Close ends it.
type term interface {
	io.Reader
	io.Writer
	Close() error
}

// rawTerm is a raw attach socket: each Write one binary message, Read
// the binary messages' bytes; the close 1000 at exit is io.EOF.
type rawTerm struct {
	ws   *websocket.Conn
	r    io.Reader
	kill func() error
	// decode, when set, turns a message into output bytes (gotty's
	// framing); it returns nil for a message that carries none.
	decode func(typ int, msg []byte) ([]byte, error)
	encode func(p []byte) (int, []byte)
	// endIsEOF: any end of the socket is the end of the output (gotty
	// closes without a close frame when its command exits; the benchmarks
	// check the byte count).
	endIsEOF bool
	pend     []byte
}

func (t *rawTerm) Write(p []byte) (int, error) {
	typ, msg := websocket.BinaryMessage, p
	if t.encode != nil {
		typ, msg = t.encode(p)
	}
	if err := t.ws.WriteMessage(typ, msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (t *rawTerm) Read(p []byte) (int, error) {
	for {
		if len(t.pend) > 0 {
			n := copy(p, t.pend)
			t.pend = t.pend[n:]
			return n, nil
		}
		if t.r != nil {
			n, err := t.r.Read(p)
			if err == io.EOF {
				t.r, err = nil, nil
			}
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		typ, r, err := t.ws.NextReader()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure || err != nil && t.endIsEOF {
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		if t.decode == nil {
			if typ == websocket.BinaryMessage {
				t.r = r
			}
			continue
		}
		msg, err := io.ReadAll(r)
		if err != nil {
			return 0, err
		}
		if t.pend, err = t.decode(typ, msg); err != nil {
			return 0, err
		}
	}
}

func (t *rawTerm) Close() error {
	var err error
	if t.kill != nil {
		err = t.kill()
	}
	return errors.Join(err, t.ws.Close())
}

// ptyTerm is the limit: the command on a bare PTY, read from its master.
type ptyTerm struct {
	m   *os.File
	cmd *exec.Cmd
}

func startPTY(argv ...string) (*ptyTerm, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	m, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: protocol.DefaultRows, Cols: protocol.DefaultCols})
	if err != nil {
		return nil, err
	}
	return &ptyTerm{m: m, cmd: cmd}, nil
}

func (p *ptyTerm) Read(b []byte) (int, error)  { return eioIsEOF{p.m}.Read(b) }
func (p *ptyTerm) Write(b []byte) (int, error) { return p.m.Write(b) }
func (p *ptyTerm) Close() error {
	p.cmd.Process.Kill()
	p.cmd.Wait()
	return p.m.Close()
}

// waitFor reads t until it has seen marker; the bytes after it in the
// same read are returned.
func waitFor(t io.Reader, marker []byte) ([]byte, error) {
	var seen []byte
	buf := make([]byte, 4096)
	for {
		n, err := t.Read(buf)
		seen = append(seen, buf[:n]...)
		if i := bytes.Index(seen, marker); i >= 0 {
			return seen[i+len(marker):], nil
		}
		if err != nil {
			return nil, fmt.Errorf("waiting for %q, read %q: %w", marker, seen, err)
		}
	}
}

// usage is what the /proc files say a process has spent so far.
type usage struct {
	cpu time.Duration // utime + stime, all threads
	// ctxsw is voluntary_ctxt_switches + nonvoluntary_ctxt_switches,
	// summed over the process's threads (/proc/PID/status counts only
	// the main thread's).
	ctxsw int64
}

func (u usage) sub(v usage) usage { return usage{u.cpu - v.cpu, u.ctxsw - v.ctxsw} }

// userHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux ABI Go supports).
const userHZ = 100

func readUsage(pid int) (usage, error) {
	var u usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, stat)
	}
	// After "pid (comm)": state is field 3, utime 14 and stime 15.
	fs := strings.Fields(string(stat[i+1:]))
	if len(fs) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fs))
	}
	ut, err1 := strconv.ParseInt(fs[11], 10, 64)
	st, err2 := strconv.ParseInt(fs[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	u.cpu = time.Duration(ut+st) * time.Second / userHZ
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return u, err
	}
	for _, t := range tasks {
		st, err := procStatus(mustAtoi(t.Name()))
		if err != nil {
			continue // the thread exited
		}
		u.ctxsw += st["voluntary_ctxt_switches"] + st["nonvoluntary_ctxt_switches"]
	}
	return u, nil
}

func mustAtoi(s string) int { n, _ := strconv.Atoi(s); return n }

// watched is a process whose usage a benchmark charges per unit of work.
type watched struct {
	name string
	pid  int
}

func snapshot(ws []watched) ([]usage, error) {
	us := make([]usage, len(ws))
	for i, w := range ws {
		var err error
		if us[i], err = readUsage(w.pid); err != nil {
			return nil, fmt.Errorf("%s: %w", w.name, err)
		}
	}
	return us, nil
}

// echoKeys types warmup+keys bytes one at a time on a terminal in raw
// mode with a process echoing each, and times each until its echo is
// read back (µs). The usage of the watched processes is taken around the
// timed keystrokes only.
func echoKeys(ctx context.Context, t term, warmup, keys int, ws []watched) (us []float64, spent []usage, err error) {
	buf := make([]byte, 64)
	key := []byte{'x'}
	var before []usage
	for i := range warmup + keys {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if i == warmup {
			if before, err = snapshot(ws); err != nil {
				return nil, nil, err
			}
		}
		t0 := time.Now()
		if _, err := t.Write(key); err != nil {
			return nil, nil, err
		}
		n, err := t.Read(buf)
		if err != nil {
			return nil, nil, fmt.Errorf("echo %d: %w", i, err)
		}
		if n != 1 || buf[0] != 'x' {
			return nil, nil, fmt.Errorf("echo %d: read %q, want \"x\"", i, buf[:n])
		}
		d := time.Since(t0)
		if i >= warmup {
			us = append(us, float64(d.Nanoseconds())/1e3)
		}
	}
	after, err := snapshot(ws)
	if err != nil {
		return nil, nil, err
	}
	for i := range after {
		spent = append(spent, after[i].sub(before[i]))
	}
	return us, spent, nil
}

// spread is a median with the range of the repetitions behind it.
type spread struct{ xs []float64 }

func (s *spread) add(x float64) { s.xs = append(s.xs, x) }
func (s spread) med() float64   { return median(s.xs) }
func (s spread) String() string { return s.format("%.3g") }
func (s spread) lo() float64    { return percentile(s.xs, 0) }
func (s spread) hi() float64    { return percentile(s.xs, 100) }
func (s spread) format(f string) string {
	if len(s.xs) == 0 {
		return "–"
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.med(), s.lo(), s.hi())
}

// echoSide is one terminal server under the echo benchmark.
type echoSide struct {
	name    string
	open    func(ctx context.Context) (term, error)
	watch   []watched
	p50     spread
	p99     spread
	cpu     []spread // µs per keystroke, per watched process
	ctxsw   []spread // per keystroke, per watched process
	skipped string
}

// BenchmarkUserEcho: keystroke to echo as a browser terminal sees it,
// one byte at a time, through a raw attach socket to `stty raw -echo;
// exec cat` (the cat echoes, not the line discipline): on a bare PTY (the
// limit), through `porthole agent` directly, through porthole-master to
// the same agent, and through gotty when it can be built. userReps
// interleaved repetitions of userKeys keystrokes (after echoWarmup), each
// on a fresh terminal; the medians of the repetitions' p50 and p99 with
// their range. Alongside, the CPU time (utime+stime) and context
// switches (voluntary and involuntary, all threads) that the agent and
// the master spend per keystroke, from /proc.
func BenchmarkUserEcho(b *testing.B) {
	ctx := benchCtx(b, 4*time.Minute)
	s := startStack(ctx, b, true)
	agentW := watched{"agent", s.agent.cmd.Process.Pid}
	masterW := watched{"master", s.master.cmd.Process.Pid}
	sides := []*echoSide{
		{name: "bare PTY", open: func(context.Context) (term, error) { return startPTY("sh", "-c", echoCmd) }},
		{name: "porthole agent", watch: []watched{agentW}, open: func(ctx context.Context) (term, error) {
			return s.direct().open(ctx, "sh", "-c", echoCmd)
		}},
		{name: "porthole through master", watch: []watched{agentW, masterW}, open: func(ctx context.Context) (term, error) {
			return s.viaMaster().open(ctx, "sh", "-c", echoCmd)
		}},
	}
	g := startGotty(ctx, b, "sh", "-c", echoCmd)
	gs := &echoSide{name: "gotty", skipped: g.skipped}
	if g.srv != nil {
		gs.watch = []watched{{"gotty", g.srv.cmd.Process.Pid}}
		gs.open = g.open
	}
	sides = append(sides, gs)
	fl, so := floorEcho(ctx, b, "sh", "-c", echoCmd), socatEcho(b, echoCmd)
	relay := socatRelayEcho(b, s, "sh", "-c", echoCmd)
	sides = append(sides, fl, so, relay)
	for _, sd := range sides {
		sd.cpu = make([]spread, len(sd.watch))
		sd.ctxsw = make([]spread, len(sd.watch))
	}
	for rep := range userReps {
		for _, sd := range sides {
			if sd.skipped != "" {
				continue
			}
			settle()
			if err := echoOnce(ctx, sd); err != nil {
				b.Fatalf("rep %d, %s: %v", rep+1, sd.name, err)
			}
		}
		var line []string
		for _, sd := range sides {
			if sd.skipped == "" {
				line = append(line, fmt.Sprintf("%s %.0f/%.0f", sd.name, sd.p50.xs[rep], sd.p99.xs[rep]))
			}
		}
		b.Logf("rep %d: echo p50/p99 µs: %s", rep+1, strings.Join(line, ", "))
	}
	raw, direct, via := sides[0], sides[1], sides[2]
	for _, sd := range sides {
		if sd.skipped != "" {
			b.Logf("%-24s skipped: %s", sd.name, sd.skipped)
			continue
		}
		msg := fmt.Sprintf("%-24s echo p50 %s µs, p99 %s µs; ×bare p50 %.2f, p99 %.2f", sd.name,
			sd.p50.format("%.0f"), sd.p99.format("%.0f"), sd.p50.med()/raw.p50.med(), sd.p99.med()/raw.p99.med())
		for i, w := range sd.watch {
			msg += fmt.Sprintf("; %s %s µs CPU, %s ctx switches per key", w.name, sd.cpu[i].format("%.1f"), sd.ctxsw[i].format("%.2f"))
		}
		b.Log(msg)
	}
	m := map[string]float64{
		"raw_p50_µs": raw.p50.med(), "raw_p99_µs": raw.p99.med(),
		"agent_p50_µs": direct.p50.med(), "agent_p99_µs": direct.p99.med(),
		"master_p50_µs": via.p50.med(), "master_p99_µs": via.p99.med(),
		"agent_cpu_µs/key": direct.cpu[0].med(), "agent_ctxsw/key": direct.ctxsw[0].med(),
		"via_agent_cpu_µs/key": via.cpu[0].med(), "via_master_cpu_µs/key": via.cpu[1].med(),
		"via_agent_ctxsw/key": via.ctxsw[0].med(), "via_master_ctxsw/key": via.ctxsw[1].med(),
	}
	if gs.skipped == "" {
		m["gotty_p50_µs"], m["gotty_p99_µs"] = gs.p50.med(), gs.p99.med()
		m["gotty_cpu_µs/key"], m["gotty_ctxsw/key"] = gs.cpu[0].med(), gs.ctxsw[0].med()
	}
	for _, y := range []struct {
		sd  *echoSide
		key string
	}{{fl, "floor"}, {so, "socat"}} {
		if y.sd.skipped == "" {
			m[y.key+"_p50_µs"], m[y.key+"_p99_µs"] = y.sd.p50.med(), y.sd.p99.med()
			m[y.key+"_cpu_µs/key"], m[y.key+"_ctxsw/key"] = y.sd.cpu[0].med(), y.sd.ctxsw[0].med()
			b.Logf("porthole agent / %s: echo p50 %.2f, p99 %.2f", y.sd.name,
				direct.p50.med()/y.sd.p50.med(), direct.p99.med()/y.sd.p99.med())
		}
	}
	if relay.skipped == "" {
		m["relay_p50_µs"], m["relay_p99_µs"] = relay.p50.med(), relay.p99.med()
		b.Logf("echo p50 added by the master %.1f µs, by a socat relay %.1f µs", via.p50.med()-direct.p50.med(),
			relay.p50.med()-direct.p50.med())
	}
	report(b, m)
	verdict(b, "agent echo p50 / bare PTY p50", direct.p50.med()/raw.p50.med(), "<=", 2.2)
	verdict(b, "agent echo p99 / bare PTY p99", direct.p99.med()/raw.p99.med(), "<=", 1.6)
	verdict(b, "agent context switches per keystroke", direct.ctxsw[0].med(), "<=", 3)
	verdict(b, "agent CPU µs per keystroke", direct.cpu[0].med(), "<=", 70)
	verdict(b, "echo p50 added by the master, µs", via.p50.med()-direct.p50.med(), "<=", 50)
}

// withTerm opens a terminal, waits for its command's R (the bytes after
// it are rest), runs f on it and closes it; the terminal is closed early
// when ctx ends, which fails f's reads.
func withTerm(ctx context.Context, open func(context.Context) (term, error), f func(t term, rest []byte) error) error {
	t, err := open(ctx)
	if err != nil {
		return err
	}
	defer t.Close()
	stop := context.AfterFunc(ctx, func() { t.Close() })
	defer stop()
	rest, err := waitFor(t, []byte("R"))
	if err != nil {
		return err
	}
	return f(t, rest)
}

func echoOnce(ctx context.Context, sd *echoSide) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return withTerm(ctx, sd.open, func(t term, _ []byte) error { return echoRecord(ctx, t, sd) })
}

func echoRecord(ctx context.Context, t term, sd *echoSide) error {
	us, spent, err := echoKeys(ctx, t, echoWarmup, userKeys, sd.watch)
	if err != nil {
		return err
	}
	sd.p50.add(percentile(us, 50))
	sd.p99.add(percentile(us, 99))
	for i, u := range spent {
		sd.cpu[i].add(float64(u.cpu.Microseconds()) / userKeys)
		sd.ctxsw[i].add(float64(u.ctxsw) / userKeys)
	}
	return nil
}

// BenchmarkUserThroughput: `cat` of a 64 MiB text file on a terminal,
// drained through a raw attach socket directly from the agent, through
// the master, through gotty when it can be built, and from a bare PTY
// (the limit), each read with the same 256 KiB buffer. The clock runs
// from the newline that lets the command start (it waits for it, so the
// viewer is attached first) to the end of the output (the socket's close
// 1000, the PTY's EIO); every side must deliver the file's exact length
// with \n as \r\n. userThroughputReps interleaved repetitions; medians with range,
// and the CPU and context switches of the agent and master per 32 KiB of
// the file.
func BenchmarkUserThroughput(b *testing.B) {
	const size = 64 * mib
	ctx := benchCtx(b, 4*time.Minute)
	file, n, lines := textFile(b, size)
	want := n + lines // ONLCR
	s := startStack(ctx, b, true)
	agentW := watched{"agent", s.agent.cmd.Process.Pid}
	masterW := watched{"master", s.master.cmd.Process.Pid}
	type side struct {
		name    string
		open    func(ctx context.Context) (term, error)
		watch   []watched
		mibps   spread
		cpu     []spread // µs per 32 KiB of file
		ctxsw   []spread // per 32 KiB of file
		skipped string
	}
	sides := []*side{
		{name: "bare PTY", open: func(context.Context) (term, error) { return startPTY("sh", "-c", catCmd, file) }},
		{name: "porthole agent", watch: []watched{agentW}, open: func(ctx context.Context) (term, error) {
			return s.direct().open(ctx, "sh", "-c", catCmd, file)
		}},
		{name: "porthole through master", watch: []watched{agentW, masterW}, open: func(ctx context.Context) (term, error) {
			return s.viaMaster().open(ctx, "sh", "-c", catCmd, file)
		}},
	}
	g := startGotty(ctx, b, "sh", "-c", catCmd, file)
	gs := &side{name: "gotty", skipped: g.skipped}
	if g.srv != nil {
		gs.watch, gs.open = []watched{{"gotty", g.srv.cmd.Process.Pid}}, g.open
	}
	sides = append(sides, gs)
	for _, sd := range sides {
		sd.cpu, sd.ctxsw = make([]spread, len(sd.watch)), make([]spread, len(sd.watch))
	}
	buf := make([]byte, 256<<10)
	var drainRecord func(t term, rest []byte, sd *side) error
	once := func(sd *side) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		return withTerm(ctx, sd.open, func(t term, rest []byte) error { return drainRecord(t, rest, sd) })
	}
	drainRecord = func(t term, rest []byte, sd *side) error {
		before, err := snapshot(sd.watch)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := t.Write([]byte("\n")); err != nil {
			return err
		}
		got, err := drainBuf(t, buf)
		d := time.Since(t0)
		got += int64(len(rest))
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", got, err)
		}
		if got != want {
			return fmt.Errorf("read %d bytes, want %d (%d file bytes + %d CRs)", got, want, n, lines)
		}
		after, err := snapshot(sd.watch)
		if err != nil {
			return err
		}
		sd.mibps.add(mibps(n, d))
		for i := range after {
			u := after[i].sub(before[i])
			chunks := float64(n) / (32 << 10)
			sd.cpu[i].add(float64(u.cpu.Microseconds()) / chunks)
			sd.ctxsw[i].add(float64(u.ctxsw) / chunks)
		}
		return nil
	}
	for rep := range userThroughputReps {
		var line []string
		for _, sd := range sides {
			if sd.skipped != "" {
				continue
			}
			settle()
			if err := once(sd); err != nil {
				b.Fatalf("rep %d, %s: %v", rep+1, sd.name, err)
			}
			line = append(line, fmt.Sprintf("%s %.1f", sd.name, sd.mibps.xs[rep]))
		}
		b.Logf("rep %d: MiB/s: %s", rep+1, strings.Join(line, ", "))
	}
	raw, direct, via := sides[0], sides[1], sides[2]
	for _, sd := range sides {
		if sd.skipped != "" {
			b.Logf("%-24s skipped: %s", sd.name, sd.skipped)
			continue
		}
		msg := fmt.Sprintf("%-24s %s MiB/s, ×bare %.2f", sd.name, sd.mibps.format("%.1f"), sd.mibps.med()/raw.mibps.med())
		for i, w := range sd.watch {
			msg += fmt.Sprintf("; %s %s µs CPU, %s ctx switches per 32 KiB", w.name, sd.cpu[i].format("%.0f"), sd.ctxsw[i].format("%.1f"))
		}
		b.Log(msg)
	}
	m := map[string]float64{
		"raw_MiB/s": raw.mibps.med(), "agent_MiB/s": direct.mibps.med(), "master_MiB/s": via.mibps.med(),
		"ratio": direct.mibps.med() / raw.mibps.med(), "master_direct_ratio": via.mibps.med() / direct.mibps.med(),
		"agent_cpu_µs/32KiB": direct.cpu[0].med(), "agent_ctxsw/32KiB": direct.ctxsw[0].med(),
	}
	if gs.skipped == "" {
		m["gotty_MiB/s"] = gs.mibps.med()
	}
	report(b, m)
	verdict(b, "agent / bare PTY throughput", direct.mibps.med()/raw.mibps.med(), ">=", 0.95)
	verdict(b, "through the master / direct throughput", via.mibps.med()/direct.mibps.med(), ">=", 0.9)
}

// BenchmarkUserSessions: the memory each idle attached terminal costs
// (`sleep 3600` on a TTY with a raw attach socket open on it, nothing
// flowing): the VmRSS growth of the agent, and of the master for
// sessions proxied through it, divided by the number of sessions, at 100
// and at 1,000 sessions, each on fresh processes. The 100-session
// figures are the medians of userReps/2+1 interleaved repetitions with
// their range; the 1,000-session ones are one run each (their cost is
// minutes of set-up). Beside them, gotty with the same sockets when it
// can be built.
func BenchmarkUserSessions(b *testing.B) {
	ctx := benchCtx(b, 5*time.Minute)
	if err := checkPTYs(idleSessions + 50); err != nil {
		b.Skip(err)
	}
	if err := raiseNOFILE(8*idleSessions + 1000); err != nil {
		b.Skip(err)
	}
	type cell struct{ agent, master, gotty spread }
	direct := map[int]*cell{100: {}, idleSessions: {}}
	via := map[int]*cell{100: {}, idleSessions: {}}
	gottySkipped := ""
	for _, n := range []int{100, idleSessions} {
		reps := userReps/2 + 1
		if n == idleSessions {
			reps = 1
		}
		for rep := range reps {
			a, _, err := sessionsOnce(ctx, b, n, false, false)
			if err != nil {
				b.Fatalf("%d sessions direct: %v", n, err)
			}
			direct[n].agent.add(a)
			a, m, err := sessionsOnce(ctx, b, n, true, false)
			if err != nil {
				b.Fatalf("%d sessions through the master: %v", n, err)
			}
			via[n].agent.add(a)
			via[n].master.add(m)
			if gottySkipped == "" {
				g, skipped, err := gottySessionsOnce(ctx, b, n)
				if err != nil {
					b.Fatalf("gotty, %d sessions: %v", n, err)
				}
				gottySkipped = skipped
				if skipped == "" {
					direct[n].gotty.add(g)
				}
			}
			b.Logf("%d sessions, rep %d: agent %.1f KiB each; through the master: agent %.1f, master %.1f KiB each",
				n, rep+1, direct[n].agent.xs[rep], via[n].agent.xs[rep], via[n].master.xs[rep])
		}
	}
	// What 100 sessions keep once the heaps have grown (a diagnosis of
	// the figure at 100, not judged): one rep each way.
	wa, _, err := sessionsOnce(ctx, b, 100, false, true)
	if err != nil {
		b.Fatalf("100 sessions direct after a warm-up: %v", err)
	}
	wva, wvm, err := sessionsOnce(ctx, b, 100, true, true)
	if err != nil {
		b.Fatalf("100 sessions through the master after a warm-up: %v", err)
	}
	b.Logf("  100 idle sessions after a warm-up of 100 started and ended, KiB each: agent direct %.1f; through the master: agent %.1f, master %.1f",
		wa, wva, wvm)
	for _, n := range []int{100, idleSessions} {
		b.Logf("%5d idle sessions, KiB each: agent direct %s; through the master: agent %s, master %s; gotty %s",
			n, direct[n].agent.format("%.1f"), via[n].agent.format("%.1f"), via[n].master.format("%.1f"),
			orSkipped(direct[n].gotty, gottySkipped))
	}
	m := map[string]float64{
		"agent_KiB/session_100": direct[100].agent.med(), "agent_KiB/session_1000": direct[idleSessions].agent.med(),
		"master_KiB/session_100": via[100].master.med(), "master_KiB/session_1000": via[idleSessions].master.med(),
		"via_agent_KiB/session_1000": via[idleSessions].agent.med(),
		"warm_agent_KiB/session_100": wa, "warm_master_KiB/session_100": wvm,
	}
	if gottySkipped == "" {
		m["gotty_KiB/session_1000"] = direct[idleSessions].gotty.med()
	}
	report(b, m)
	verdict(b, "agent KiB per idle session (100)", direct[100].agent.med(), "<=", 16)
	verdict(b, "agent KiB per idle session (1,000)", direct[idleSessions].agent.med(), "<=", 16)
	verdict(b, "master KiB per proxied idle session (100)", via[100].master.med(), "<=", 16)
	verdict(b, "master KiB per proxied idle session (1,000)", via[idleSessions].master.med(), "<=", 16)
}

func orSkipped(s spread, skipped string) string {
	if skipped != "" {
		return "skipped (" + skipped + ")"
	}
	return s.format("%.1f")
}

// sessionsOnce starts a fresh stack, opens n idle sessions directly or
// through the master and returns the RSS growth per session (KiB) of the
// agent and of the master (0 when direct).
//
// With warm, n sessions are opened and ended first (their processes
// killed and gone) before the figure is taken: the growth is then what
// sessions keep once the agent's and the master's heaps have reached
// their working size, without the one-time growth the first burst of
// starts causes.
func sessionsOnce(ctx context.Context, b *testing.B, n int, withMaster, warm bool) (agentKiB, masterKiB float64, err error) {
	s, err := newStack(ctx, b, withMaster)
	if err != nil {
		return 0, 0, err
	}
	defer s.stop(b)
	r := s.direct()
	if withMaster {
		r = s.viaMaster()
	}
	if warm {
		if err := warmUp(ctx, s, r, n); err != nil {
			return 0, 0, fmt.Errorf("warm-up: %w", err)
		}
	}
	time.Sleep(500 * time.Millisecond) // let the start-up garbage be collected
	a0, _, err := s.agent.rss(3, 200*time.Millisecond)
	if err != nil {
		return 0, 0, err
	}
	var m0 int64
	if withMaster {
		if m0, _, err = s.master.rss(3, 200*time.Millisecond); err != nil {
			return 0, 0, err
		}
	}
	terms, err := fanOut(ctx, n, func(ctx context.Context) (*rawTerm, error) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return r.open(sctx, "sleep", "3600")
	})
	defer func() {
		var wg sync.WaitGroup
		for _, t := range terms {
			wg.Go(func() { t.ws.Close() }) // the agent's SIGTERM takes the sleeps
		}
		wg.Wait()
	}()
	if err != nil {
		return 0, 0, fmt.Errorf("after %d sessions: %w", len(terms), err)
	}
	if err := waitChildren(ctx, s.agent.cmd.Process.Pid, n); err != nil {
		return 0, 0, fmt.Errorf("agent: %w", err)
	}
	time.Sleep(time.Second) // nothing is pending; let the figure settle
	a1, _, err := s.agent.rss(3, 300*time.Millisecond)
	if err != nil {
		return 0, 0, err
	}
	agentKiB = float64(a1-a0) / float64(n)
	if withMaster {
		m1, _, err := s.master.rss(3, 300*time.Millisecond)
		if err != nil {
			return 0, 0, err
		}
		masterKiB = float64(m1-m0) / float64(n)
	}
	return agentKiB, masterKiB, nil
}

// warmUp opens n idle sessions on r and ends them: each process killed,
// each socket closed, until the agent has no child left.
func warmUp(ctx context.Context, s *stack, r route, n int) error {
	terms, err := fanOut(ctx, n, func(ctx context.Context) (*rawTerm, error) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return r.open(sctx, "sleep", "3600")
	})
	var wg sync.WaitGroup
	for _, t := range terms {
		wg.Go(func() { t.Close() })
	}
	wg.Wait()
	if err != nil {
		return err
	}
	return waitChildren(ctx, s.agent.cmd.Process.Pid, 0)
}

// portholeMaster is porthole-master's binary, built once per run.
func portholeMaster(b *testing.B) string { return built(b, "./cmd/porthole-master") }

// waitChildren waits until process pid has n children.
func waitChildren(ctx context.Context, pid, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		k := len(childrenOf(pid))
		if k == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d children, want %d", k, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestReadUsage: the /proc figures the user benchmarks charge per
// keystroke move when a process works: CPU after a busy loop, context
// switches after sleeps (each one a voluntary switch of some thread).
func TestReadUsage(t *testing.T) {
	pid := os.Getpid()
	u0, err := readUsage(pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readUsage(1 << 30); err == nil {
		t.Error("readUsage of a pid that cannot exist: no error")
	}
	// Busy until this process has used 50 ms more CPU (by getrusage, not
	// by the wall clock: on a loaded machine 50 ms of wall time may be
	// 5 ms of CPU).
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for end := cpu() + 50*time.Millisecond; cpu() < end; {
	}
	for range 20 {
		time.Sleep(time.Millisecond)
	}
	u1, err := readUsage(pid)
	if err != nil {
		t.Fatal(err)
	}
	d := u1.sub(u0)
	if d.cpu < 30*time.Millisecond { // 50 ms, counted in 10 ms ticks
		t.Errorf("CPU after a busy loop of 50 ms of CPU: %v more, want at least 30ms", d.cpu)
	}
	if d.ctxsw < 20 {
		t.Errorf("context switches after 20 sleeps: %d more, want at least 20", d.ctxsw)
	}
}

// TestGottyOutput: gotty's output messages decode to their bytes; its
// other messages carry none; a broken one is an error.
func TestGottyOutput(t *testing.T) {
	cases := []struct {
		msg     string
		want    string
		wantErr bool
	}{
		{"1eA==", "x", false},
		{"1aGVsbG8NCg==", "hello\r\n", false},
		{"3title", "", false},
		{"", "", false},
		{"1!!", "", true},
	}
	for _, c := range cases {
		got, err := gottyOutput(websocket.TextMessage, []byte(c.msg))
		if (err != nil) != c.wantErr || string(got) != c.want {
			t.Errorf("gottyOutput(%q) = %q, %v; want %q, error %v", c.msg, got, err, c.want, c.wantErr)
		}
	}
	typ, in := gottyInput([]byte("ls\r"))
	if typ != websocket.TextMessage || string(in) != "1ls\r" {
		t.Errorf("gottyInput(ls\\r) = %d %q, want a text message \"1ls\\r\"", typ, in)
	}
}
