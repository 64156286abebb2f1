package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
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

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

const idleSessions = 1000

// footprint is a server's resident memory (KiB) idle and with sessions.
type footprint struct {
	idle, busy           int64
	idleThreads, threads int
}

func (f footprint) perSession() float64 { return float64(f.busy-f.idle) / idleSessions }

// BenchmarkIdleSessions: the resident memory (VmRSS) of the agent process,
// the static binary as deployed, when idle and with 1,000 TTY sessions
// (`sleep 3600`, which prints nothing), each with a client attached; the
// children's memory is their own and not counted. Alongside, the same
// measurement of bench/floor, a minimal Go terminal server (gorilla
// WebSocket, PTY, two goroutines per session, no protocol): what a
// straightforward Go design spends before any of porthole's features. Each
// figure is the median of three readings.
func BenchmarkIdleSessions(b *testing.B) {
	ctx := benchCtx(b, 5*time.Minute)
	if err := checkPTYs(idleSessions + 50); err != nil {
		b.Skip(err)
	}
	if err := raiseNOFILE(4*idleSessions + 1000); err != nil {
		b.Skip(err)
	}
	ag, err := agentFootprint(ctx, b)
	if err != nil {
		b.Fatalf("agent: %v", err)
	}
	fl, err := floorFootprint(ctx, b)
	if err != nil {
		b.Fatalf("floor: %v", err)
	}
	for _, x := range []struct {
		name string
		f    footprint
	}{{"agent", ag}, {"floor", fl}} {
		b.Logf("%s VmRSS: idle %d KiB (%d threads); with %d sessions %d KiB (%d threads): %.1f KiB per session",
			x.name, x.f.idle, x.f.idleThreads, idleSessions, x.f.busy, x.f.threads, x.f.perSession())
	}
	idleMiB := float64(ag.idle) / 1024
	report(b, map[string]float64{
		"idle_RSS_MiB":          idleMiB,
		"rss_1000_MiB":          float64(ag.busy) / 1024,
		"KiB_per_session":       ag.perSession(),
		"threads_1000":          float64(ag.threads),
		"floor_idle_RSS_MiB":    float64(fl.idle) / 1024,
		"floor_KiB_per_session": fl.perSession(),
		"idle_ratio":            float64(ag.idle) / float64(fl.idle),
		"session_ratio":         ag.perSession() / fl.perSession(),
	})
	verdict(b, "idle agent RSS MiB", idleMiB, "<=", 8)
	verdict(b, "KiB per idle session", ag.perSession(), "<=", 32)
}

// agentFootprint runs `porthole agent` and attaches 1,000 TTY sessions
// through the Go client.
func agentFootprint(ctx context.Context, b *testing.B) (footprint, error) {
	srv, f, err := startIdle(ctx, b, porthole(b), func(addr string) []string {
		return []string{"agent", "-listen", addr, "-insecure-no-auth", "-log-level", "warn", "-grace", "2s",
			"-max-processes", strconv.Itoa(idleSessions + 100)}
	})
	if srv != nil {
		defer srv.stop(b)
	}
	if err != nil {
		return f, err
	}
	c, err := client.Dial(ctx, client.Options{URL: "ws://" + srv.addr})
	if err != nil {
		return f, err
	}
	defer c.Close()
	t0 := time.Now()
	procs, err := startSleepers(ctx, c, idleSessions)
	defer func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(func() { p.Close() })
		}
		wg.Wait()
	}()
	if err != nil {
		return f, fmt.Errorf("after %d sessions: %w", len(procs), err)
	}
	b.Logf("agent: %d sessions started and attached in %v", len(procs), time.Since(t0).Round(time.Millisecond))
	if err := waitProcesses(ctx, c, idleSessions); err != nil {
		return f, err
	}
	time.Sleep(2 * time.Second) // let it settle: no work is pending
	f.busy, f.threads, err = srv.rss(3, 500*time.Millisecond)
	return f, err
}

// startIdle starts a server and measures its idle RSS once it has
// settled (half a second after it answered: its start-up garbage is then
// collected and the figure stops moving).
func startIdle(ctx context.Context, tb testing.TB, bin string, args func(addr string) []string) (*server, footprint, error) {
	var f footprint
	srv, err := startServer(ctx, tb, bin, args)
	if err != nil {
		return nil, f, err
	}
	time.Sleep(500 * time.Millisecond)
	f.idle, f.idleThreads, err = srv.rss(3, 200*time.Millisecond)
	return srv, f, err
}

// floorFootprint runs bench/floor and opens 1,000 terminal sockets on it.
func floorFootprint(ctx context.Context, b *testing.B) (footprint, error) {
	srv, f, err := startIdle(ctx, b, floor(b), func(addr string) []string { return []string{"-listen", addr} })
	if srv != nil {
		defer srv.stop(b)
	}
	if err != nil {
		return f, err
	}
	url := "ws://" + srv.addr + "/attach?cmd=sleep&arg=3600"
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	conns, first := fanOut(ctx, idleSessions, func(ctx context.Context) (*websocket.Conn, error) {
		ws, _, err := d.DialContext(ctx, url, nil)
		return ws, err
	})
	defer func() {
		for _, ws := range conns {
			ws.Close()
		}
	}()
	if first != nil {
		return f, fmt.Errorf("after %d sessions: %w", len(conns), first)
	}
	if n := len(childrenOf(srv.cmd.Process.Pid)); n != idleSessions {
		return f, fmt.Errorf("floor has %d children, want %d", n, idleSessions)
	}
	time.Sleep(2 * time.Second)
	f.busy, f.threads, err = srv.rss(3, 500*time.Millisecond)
	return f, err
}

// checkPTYs fails when fewer than n more PTYs can be opened.
func checkPTYs(n int) error {
	read := func(name string) (int, error) {
		b, err := os.ReadFile("/proc/sys/kernel/pty/" + name)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	maxN, err := read("max")
	if err != nil {
		return err
	}
	nr, err := read("nr")
	if err != nil {
		return err
	}
	if maxN-nr < n {
		return fmt.Errorf("need %d PTYs but /proc/sys/kernel/pty/max is %d with %d in use", n, maxN, nr)
	}
	return nil
}

// raiseNOFILE raises this process's open-file limit to at least n (the
// agent started from here inherits it), to the hard limit or, as root,
// beyond.
func raiseNOFILE(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Max < n {
		lim.Max = n
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("need %d open files: setrlimit: %v", n, err)
	}
	return nil
}

// server is a server (the agent or the floor) run as its own process.
type server struct {
	cmd    *exec.Cmd
	addr   string
	out    *bytes.Buffer
	exited chan struct{}
}

// startServer runs bin with args(a free loopback address) and waits until
// its /healthz answers.
func startServer(ctx context.Context, tb testing.TB, bin string, args func(addr string) []string) (*server, error) {
	return startServerAt(ctx, tb, bin, args, "/healthz")
}

// startServerAt is startServer for a server whose health is a 200 on
// another path.
func startServerAt(ctx context.Context, tb testing.TB, bin string, args func(addr string) []string, health string) (*server, error) {
	addr := testutil.FreeAddr(tb)
	cmd := exec.Command(bin, args(addr)...)
	srv := &server{cmd: cmd, addr: addr, out: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = srv.out, srv.out
	// Should this process die, the server shuts down and takes its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(srv.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + health)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return srv, nil
			}
		}
		select {
		case <-srv.exited:
			return nil, fmt.Errorf("%s exited: %s", bin, srv.out)
		case <-ctx.Done():
			srv.kill(nil)
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			srv.kill(nil)
			return nil, fmt.Errorf("%s not healthy after 15s: %v", bin, err)
		}
	}
}

// rss returns the median of n VmRSS readings (KiB), one every, and the
// thread count at the last.
func (srv *server) rss(n int, every time.Duration) (kib int64, threads int, err error) {
	var xs []float64
	for i := range n {
		if i > 0 {
			time.Sleep(every)
		}
		st, err := procStatus(srv.cmd.Process.Pid)
		if err != nil {
			return 0, 0, err
		}
		xs = append(xs, float64(st["VmRSS"]))
		threads = int(st["Threads"])
	}
	return int64(median(xs)), threads, nil
}

// procStatus reads the numeric fields of /proc/PID/status (kB for sizes).
func procStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
			m[k] = n
		}
	}
	return m, sc.Err()
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fs := strings.Fields(string(stat[i+1:]))
		if len(fs) > 1 && fs[1] == strconv.Itoa(pid) {
			kids = append(kids, child)
		}
	}
	return kids
}

// stop shuts the server down with SIGTERM (both kill their children); if
// it does not exit in time it is killed. Either way no child may outlive
// it.
func (srv *server) stop(b *testing.B) {
	kids := childrenOf(srv.cmd.Process.Pid)
	srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-srv.exited:
	case <-time.After(20 * time.Second):
		b.Errorf("%s did not exit 20s after SIGTERM; killing it and its %d children", srv.cmd.Path, len(kids))
		srv.kill(kids)
	}
	// The agent reaps its children before it exits; the floor kills them
	// and exits, leaving init to reap them. Give them a moment, then any
	// still alive is an error (and is killed).
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range kids {
		for isAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, pid := range kids {
		if isAlive(pid) {
			b.Errorf("child %d of %s outlived it; killing it", pid, srv.cmd.Path)
			syscall.Kill(-pid, syscall.SIGKILL) // each child leads its own session
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// isAlive reports whether pid exists and is not a zombie.
func isAlive(pid int) bool {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i >= 0 && i+2 < len(st) && st[i+2] != 'Z'
}

func (srv *server) kill(kids []int) {
	srv.cmd.Process.Kill()
	<-srv.exited
	for _, pid := range kids {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// startSleepers starts n TTY `sleep 3600` sessions, each attached, with a
// few requests in flight at a time.
func startSleepers(ctx context.Context, c *client.Client, n int) ([]*client.Process, error) {
	return fanOut(ctx, n, func(ctx context.Context) (*client.Process, error) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return c.Start(sctx, protocol.StartParams{Argv: []string{"sleep", "3600"}, TTY: true})
	})
}

// fanOut calls create n times, eight at a time, and returns what it made;
// it stops at the first error (returned with what was made before it).
func fanOut[T comparable](ctx context.Context, n int, create func(context.Context) (T, error)) ([]T, error) {
	const workers = 8
	var (
		mu    sync.Mutex
		made  []T
		first error
		zero  T
	)
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range next {
				v, err := create(ctx)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if v != zero {
					made = append(made, v)
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return made, first
}

// waitProcesses waits until the agent reports n processes.
func waitProcesses(ctx context.Context, c *client.Client, n int) error {
	for {
		var info protocol.AgentInfo
		if err := c.Call(ctx, protocol.MethodAgentInfo, struct{}{}, &info); err != nil {
			return err
		}
		if info.Processes == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent reports %d processes, want %d: %w", info.Processes, n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// BenchmarkBinarySize: the static release build (CGO_ENABLED=0, -trimpath,
// -ldflags "-s -w") of cmd/porthole, against the 10 MiB target and, as the
// limit, bench/floor built the same way: the Go runtime, net/http,
// gorilla/websocket and creack/pty that any Go terminal server carries.
func BenchmarkBinarySize(b *testing.B) {
	ctx := benchCtx(b, 5*time.Minute)
	out := filepath.Join(b.TempDir(), "porthole")
	if err := staticBuild(ctx, "./cmd/porthole", out); err != nil {
		b.Fatal(err)
	}
	size, err := fileMiB(out)
	if err != nil {
		b.Fatal(err)
	}
	floorSize, err := fileMiB(floor(b))
	if err != nil {
		b.Fatal(err)
	}
	report(b, map[string]float64{"size_MiB": size, "floor_MiB": floorSize, "ratio": size / floorSize})
	verdict(b, "static binary MiB", size, "<", 10)
}

func fileMiB(path string) (float64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return float64(fi.Size()) / mib, nil
}
