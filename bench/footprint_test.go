package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
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

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/protocol"
)

const idleSessions = 1000

// BenchmarkIdleSessions: the resident memory of an agent process (the
// static binary, as deployed) when idle, and with 1,000 TTY sessions
// (`sleep 3600`, which prints nothing), each with a client attached. The
// children's memory is their own and not counted. Each figure is the
// median of three VmRSS readings.
func BenchmarkIdleSessions(b *testing.B) {
	ctx := benchCtx(b, 5*time.Minute)
	if err := checkPTYs(idleSessions + 50); err != nil {
		b.Skip(err)
	}
	if err := raiseNOFILE(4*idleSessions + 1000); err != nil {
		b.Skip(err)
	}
	bin := porthole(b)
	ag, err := startAgentProcess(ctx, bin, "-max-processes", strconv.Itoa(idleSessions+100))
	if err != nil {
		b.Fatal(err)
	}
	defer ag.stop(b)

	time.Sleep(500 * time.Millisecond)
	idle, idleThreads, err := ag.rss(3, 200*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}

	c, err := client.Dial(ctx, client.Options{URL: ag.url})
	if err != nil {
		b.Fatal(err)
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
	for _, p := range procs {
		ag.children = append(ag.children, p.Info().PID)
	}
	if err != nil {
		b.Fatalf("after %d sessions: %v", len(procs), err)
	}
	b.Logf("%d sessions started and attached in %v", len(procs), time.Since(t0).Round(time.Millisecond))
	if err := waitProcesses(ctx, c, idleSessions); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second) // let the agent settle: no work is pending
	busy, busyThreads, err := ag.rss(3, 500*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	idleMiB := float64(idle) / 1024
	busyMiB := float64(busy) / 1024
	perSession := float64(busy-idle) / idleSessions
	b.Logf("agent VmRSS: idle %d KiB (%d threads); with %d sessions %d KiB (%d threads)", idle, idleThreads, idleSessions, busy, busyThreads)
	report(b, map[string]float64{
		"idle_RSS_MiB":    idleMiB,
		"rss_1000_MiB":    busyMiB,
		"KiB_per_session": perSession,
		"threads_1000":    float64(busyThreads),
	})
	verdict(b, "idle agent RSS MiB", idleMiB, "<=", 8)
	verdict(b, "KiB per idle session", perSession, "<=", 32)
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

// agentProcess is a porthole agent run as its own process.
type agentProcess struct {
	cmd      *exec.Cmd
	url      string
	stderr   *bytes.Buffer
	exited   chan struct{}
	children []int // pids of the sessions, killed should the agent fail to
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startAgentProcess runs `porthole agent` on a free loopback port without
// a token and waits until /healthz answers.
func startAgentProcess(ctx context.Context, bin string, args ...string) (*agentProcess, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args = append([]string{"agent", "-listen", addr, "-insecure-no-auth", "-log-level", "warn", "-grace", "2s"}, args...)
	cmd := exec.Command(bin, args...)
	ap := &agentProcess{cmd: cmd, url: "ws://" + addr, stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout = ap.stderr
	cmd.Stderr = ap.stderr
	cmd.Env = os.Environ()
	// Should this process die, the agent shuts down and takes its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(ap.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return ap, nil
			}
		}
		select {
		case <-ap.exited:
			return nil, fmt.Errorf("agent exited: %s", ap.stderr)
		case <-ctx.Done():
			ap.kill()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ap.kill()
			return nil, fmt.Errorf("agent not healthy after 15s: %v", err)
		}
	}
}

// rss returns the median of n VmRSS readings (KiB), taken every, and the
// thread count at the last.
func (ap *agentProcess) rss(n int, every time.Duration) (kib int64, threads int, err error) {
	var xs []float64
	for i := range n {
		if i > 0 {
			time.Sleep(every)
		}
		st, err := procStatus(ap.cmd.Process.Pid)
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

// stop shuts the agent down with SIGTERM (it hangs up and kills its
// children); if it does not exit in time it and its children are killed.
func (ap *agentProcess) stop(b *testing.B) {
	ap.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ap.exited:
	case <-time.After(20 * time.Second):
		b.Errorf("agent did not exit 20s after SIGTERM; killing it and its %d children", len(ap.children))
		ap.kill()
	}
	// No session may outlive the benchmark.
	for _, pid := range ap.children {
		if pid > 0 && syscall.Kill(-pid, 0) == nil {
			b.Errorf("session process group %d outlived the agent; killing it", pid)
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	if ap.cmd.ProcessState != nil && !ap.cmd.ProcessState.Success() {
		b.Logf("agent exit: %v; stderr:\n%s", ap.cmd.ProcessState, ap.stderr)
	}
}

func (ap *agentProcess) kill() {
	ap.cmd.Process.Kill()
	<-ap.exited
	for _, pid := range ap.children {
		if pid > 0 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

// startSleepers starts n TTY `sleep 3600` sessions, each attached, with a
// few requests in flight at a time.
func startSleepers(ctx context.Context, c *client.Client, n int) ([]*client.Process, error) {
	const workers = 8
	var (
		mu    sync.Mutex
		procs []*client.Process
		first error
	)
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range next {
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				p, err := c.Start(sctx, protocol.StartParams{Argv: []string{"sleep", "3600"}, TTY: true})
				cancel()
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if p != nil {
					procs = append(procs, p)
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
	return procs, first
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
// -ldflags "-s -w") of cmd/porthole, against the 10 MiB target.
func BenchmarkBinarySize(b *testing.B) {
	ctx := benchCtx(b, 5*time.Minute)
	out := filepath.Join(b.TempDir(), "porthole")
	if err := staticBuild(ctx, out); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	size := float64(fi.Size()) / mib
	const target = 10.0
	report(b, map[string]float64{"size_MiB": size, "target_MiB": target, "ratio": size / target})
	verdict(b, "static binary MiB", size, "<", target)
}
