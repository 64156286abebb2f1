//go:build faults

package faults

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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

const (
	rid  = "w:e:o" // the runtime of every machine
	wait = testutil.Wait
	// masterPing is the master's -ping, its default: it disconnects a
	// peer silent for two intervals, and a ping to a peer whose end is
	// gone gets a reset, so a connection left half-open by a fault (the
	// peer's FIN was dropped) is reaped within staleBound.
	masterPing = 30 * time.Second
	staleBound = 2*masterPing + 10*time.Second
)

// cluster is a porthole-master in the link's master namespace (on
// 10.213.0.1:8080, over a data directory that survives its restarts) and
// the machines' programs in the other namespace. The test reads the
// master through its API from inside the master's namespace, so faults
// on the link never hide what the master has.
type cluster struct {
	t    *testing.T
	link *link
	dir  string // the master's data
	// client is a client token; http reaches the master from its own
	// namespace.
	client string
	http   *http.Client
	// endpoint is where the machines reach the master: its address on
	// the link, or a proxy's (setEndpoint).
	endpoint string

	mu      sync.Mutex
	masters []*proc // every master started, the current one last
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	needHost(t)
	l := newLink(t)
	c := &cluster{t: t, link: l, dir: t.TempDir(), endpoint: fmt.Sprintf("%s:%d", masterIP, masterPort)}
	c.http = &http.Client{Timeout: wait, Transport: &http.Transport{DialContext: dialer(l.master)}}
	t.Cleanup(c.http.CloseIdleConnections)
	c.client = c.token("-client")
	return c
}

// masterURL is the master's base URL from its own namespace.
func (c *cluster) masterURL() string { return fmt.Sprintf("http://%s:%d", masterIP, masterPort) }

func (c *cluster) token(args ...string) string {
	c.t.Helper()
	// -init: the master may not have made its key yet.
	out, err := exec.Command(masterBin, append([]string{"token", "-init", "-data", c.dir}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			c.t.Fatalf("porthole-master token %q: %v: %s", args, err, ee.Stderr)
		}
		c.t.Fatalf("porthole-master token %q: %v", args, err)
	}
	return string(bytes.TrimSpace(out))
}

func (c *cluster) machineToken(name string) string {
	return c.token("-runtime-id", rid, "-machine-name", name)
}

// proc is a program run in a namespace (`ip netns exec NS PROGRAM`,
// which execs the program: the pid is the program's).
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr testutil.SyncBuffer
	done           chan struct{}
	code           int
}

// start runs bin with args in namespace ns, with env; the test's cleanup
// kills it and shows its output if the test failed.
func (c *cluster) start(name, ns string, env []string, stdin io.Reader, bin string, args ...string) *proc {
	c.t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	p.cmd.Env = env
	p.cmd.Stdin = stdin
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	c.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if c.t.Failed() {
			c.t.Logf("%s stdout:\n%.4000s\n%s stderr (last 8000 bytes):\n%s", name, p.stdout.String(), name, tail(p.stderr.String(), 8000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// exit waits at most d for p to exit and returns its status.
func (p *proc) exit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s", p.name, d)
		return -1
	}
}

// kill SIGKILLs p and waits for it.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// startMaster runs porthole-master (on the same data and port each
// time) and waits until it answers.
func (c *cluster) startMaster(extra ...string) *proc {
	c.t.Helper()
	c.mu.Lock()
	n := len(c.masters) + 1
	c.mu.Unlock()
	args := append([]string{"-listen", fmt.Sprintf("%s:%d", masterIP, masterPort), "-data", c.dir, "-log-level", "info",
		"-ping", masterPing.String()}, extra...)
	p := c.start(fmt.Sprintf("master#%d", n), c.link.master, testutil.CleanEnv(), nil, masterBin, args...)
	c.mu.Lock()
	c.masters = append(c.masters, p)
	c.mu.Unlock()
	testutil.WaitFor(c.t, "the master up", func() bool {
		select {
		case <-p.done:
			c.t.Fatalf("the master exited %d:\n%s", p.code, p.stderr.String())
		default:
		}
		resp, err := c.http.Get(c.masterURL() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// bootstrapper runs `porthole bootstrap` for machine name with one
// installer running script, pushing to the cluster's endpoint with a
// reconnect period of period seconds.
func (c *cluster) bootstrapper(name, script string, period int, extra ...string) *proc {
	c.t.Helper()
	cfg, err := json.Marshal([]map[string]string{{"id": "org.faults." + name, "script": script}})
	if err != nil {
		c.t.Fatal(err)
	}
	args := append([]string{"bootstrap", "-file", testutil.Config(c.t, string(cfg)),
		"-push-endpoint", "ws://" + c.endpoint + "/api/websocket", "-push-logs-endpoint", "ws://" + c.endpoint + "/api/websocket-minor",
		"-runtime-id", rid, "-machine-name", name, "-enable-auth", "-spool-dir", c.t.TempDir(),
		"-installer-timeout", "600", "-stop-grace", "500ms", "-logs-endpoint-reconnect-period", strconv.Itoa(period)}, extra...)
	return c.start("bootstrapper "+name, c.link.machines, testutil.CleanEnv("CHE_MACHINE_TOKEN="+c.machineToken(name)), nil, porthole, args...)
}

// agent runs `porthole agent` for machine name, serving only through the
// master's tunnel.
func (c *cluster) agent(name string) *proc {
	c.t.Helper()
	tok := filepath.Join(c.t.TempDir(), "machine.token")
	if err := os.WriteFile(tok, []byte(c.machineToken(name)), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return c.start("agent "+name, c.link.machines, testutil.CleanEnv(), nil, porthole, "agent", "-listen", "none",
		"-master", "ws://"+c.endpoint, "-machine-token-file", tok, "-runtime-id", rid, "-machine-name", name)
}

// exec runs `porthole exec` through the master, from the master's
// namespace, running argv in machine name's agent.
func (c *cluster) exec(name string, stdin io.Reader, flags []string, argv ...string) *proc {
	c.t.Helper()
	url := fmt.Sprintf("ws://%s:%d/api/runtimes/%s/machines/%s/agent", masterIP, masterPort, rid, name)
	args := append(append([]string{"exec", "-url", url}, flags...), "--")
	return c.start("exec on "+name, c.link.master, testutil.CleanEnv("PORTHOLE_TOKEN="+c.client), stdin, porthole, append(args, argv...)...)
}

// get GETs the master's path into v.
func (c *cluster) get(path string, v any) error {
	req, _ := http.NewRequest("GET", c.masterURL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.client)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// machine returns the master's document of machine name (nil if none).
func (c *cluster) machine(name string) *masterapi.Machine {
	var m masterapi.Machine
	if err := c.get("/api/runtimes/"+rid+"/machines/"+name, &m); err != nil {
		return nil
	}
	return &m
}

// logs reads machine name's whole journal, page by page.
func (c *cluster) logs(name string) []masterapi.Entry {
	c.t.Helper()
	var all []masterapi.Entry
	after := uint64(0)
	for {
		var page struct {
			Entries []masterapi.Entry `json:"entries"`
			Next    uint64            `json:"next"`
		}
		if err := c.get(fmt.Sprintf("/api/runtimes/%s/machines/%s/logs?after=%d", rid, name, after), &page); err != nil {
			c.t.Fatal(err)
		}
		all = append(all, page.Entries...)
		if len(page.Entries) == 0 || page.Next == after {
			return all
		}
		after = page.Next
	}
}

// stored returns how many log lines of machine name the master has
// committed (its last seq, which counts statuses too: a lower bound's
// worth for waiting).
func (c *cluster) seq(name string) uint64 {
	if m := c.machine(name); m != nil {
		return m.Seq
	}
	return 0
}

var logField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// handshakes counts, over every master started, the log records with
// message msg ("bootstrapper connected", "agent connected") of machine
// name, by path ("" for the agent's).
func (c *cluster) handshakes(msg, name string) map[string]int {
	c.mu.Lock()
	ms := append([]*proc(nil), c.masters...)
	c.mu.Unlock()
	n := map[string]int{}
	for _, m := range ms {
		for _, line := range strings.Split(m.stderr.String(), "\n") {
			f := map[string]string{}
			for _, kv := range logField.FindAllStringSubmatch(line, -1) {
				v := kv[2]
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
				f[kv[1]] = v
			}
			if f["msg"] == msg && f["machine"] == name {
				n[f["path"]]++
			}
		}
	}
	return n
}

// gates are files an installer's or a command's script waits for, so a
// test decides when each part of the output is printed.
type gates struct{ dir string }

func newGates(t *testing.T) gates { return gates{t.TempDir()} }

// wait is a shell command that returns once gate n is open.
func (g gates) wait(n int) string {
	return fmt.Sprintf("while [ ! -e %s/%d ]; do sleep 0.05; done", g.dir, n)
}

func (g gates) open(t *testing.T, n int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("%s/%d", g.dir, n), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lines is a shell script printing prefix-1 … prefix-n, in parts split at
// the given line numbers, waiting for gate i+1 before part i+1.
func lines(prefix string, n int, g gates, splits ...int) string {
	var b strings.Builder
	from := 1
	for i, s := range append(splits, n) {
		if i > 0 {
			b.WriteString(g.wait(i) + "; ")
		}
		fmt.Fprintf(&b, "seq -f '%s-%%.0f' %d %d; ", prefix, from, s)
		from = s + 1
	}
	b.WriteString("true")
	return b.String()
}

// want is lines' output.
func want(prefix string, n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%s-%d\n", prefix, i)
	}
	return b.String()
}

// checkLines checks that machine name's journal holds exactly its
// installer's lines prefix-1 … prefix-n, each once and in order, no
// loss reported, and that its statuses converged: every status once, in
// order, the installer and bootstrapper DONE, the machine STOPPED (its
// bootstrapper closed normally after DONE) and no bootstrapper connected.
func (c *cluster) checkLines(name, prefix string, n int) {
	c.t.Helper()
	es := c.logs(name)
	next := 1
	var statuses []string
	for _, e := range es {
		switch e.Type {
		case masterapi.EntryLog:
			if e.Lost > 0 || e.Partial {
				c.t.Fatalf("%s: entry %d: lost %d, partial %v: %+v", name, e.Seq, e.Lost, e.Partial, e)
			}
			if w := fmt.Sprintf("%s-%d", prefix, next); e.Text != w {
				c.t.Fatalf("%s: log entry %d is %q; want %q (every line once, in order)", name, e.Seq, e.Text, w)
			}
			next++
		case masterapi.EntryBootstrapper:
			statuses = append(statuses, "bootstrapper "+e.Status)
		case masterapi.EntryInstaller:
			statuses = append(statuses, "installer "+e.Status)
		}
	}
	if next-1 != n {
		c.t.Fatalf("%s: %d lines stored; want %d", name, next-1, n)
	}
	wantStatuses := []string{"bootstrapper " + che.StatusStarting, "installer " + che.StatusStarting, "installer " + che.StatusDone, "bootstrapper " + che.StatusDone}
	if fmt.Sprint(statuses) != fmt.Sprint(wantStatuses) {
		c.t.Fatalf("%s: statuses %q; want %q", name, statuses, wantStatuses)
	}
	// A connection the fault left half-open at the master holds the
	// machine's bootstrapper "connected" until the master reaps it.
	if !testutil.Eventually(staleBound, func() bool {
		m := c.machine(name)
		return m != nil && m.Status == masterapi.MachineStopped && !m.Bootstrapper.Connected
	}) {
		m := c.machine(name)
		c.t.Fatalf("%s: not STOPPED with no bootstrapper connected within %s of its bootstrapper's exit: status %s, bootstrapper %+v",
			name, staleBound, m.Status, m.Bootstrapper)
	}
	m := c.machine(name)
	if m.Bootstrapper.Status != che.StatusDone || len(m.Installers) != 1 || m.Installers[0].Status != che.StatusDone {
		c.t.Fatalf("%s: bootstrapper %+v, installers %+v; want DONE", name, m.Bootstrapper, m.Installers)
	}
}

// reconnectWaits returns the waits (next_in) a bootstrapper logged after
// each failed reconnection attempt.
func reconnectWaits(p *proc) []time.Duration {
	var ds []time.Duration
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if !strings.Contains(line, `msg="reconnect failed"`) {
			continue
		}
		for _, kv := range logField.FindAllStringSubmatch(line, -1) {
			if kv[1] == "next_in" {
				if d, err := time.ParseDuration(kv[2]); err == nil {
					ds = append(ds, d)
				}
			}
		}
	}
	return ds
}

// subscriber is a client's JSON-RPC socket to the master (from its
// namespace) recording machine notifications with the time they came.
type subscriber struct {
	conn    *jsonrpc2.Conn
	mu      sync.Mutex
	agent   []agentSeen // the agent's state in each machine notification, in order
	changed chan struct{}
}

type agentSeen struct {
	at        time.Time
	connected bool
}

func (c *cluster) subscribe(name string) *subscriber {
	c.t.Helper()
	d := websocket.Dialer{NetDialContext: dialer(c.link.master), HandshakeTimeout: wait}
	ws, resp, err := d.Dial(fmt.Sprintf("ws://%s:%d/api/rpc", masterIP, masterPort), http.Header{"Authorization": {"Bearer " + c.client}})
	if err != nil {
		c.t.Fatalf("dial /api/rpc: %v (%v)", err, resp)
	}
	s := &subscriber{changed: make(chan struct{})}
	h := func(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
		if req.Method != masterapi.NotifyMachine || req.Params == nil {
			return nil, nil
		}
		var n masterapi.MachineNotification
		if json.Unmarshal(*req.Params, &n) != nil || n.Machine == nil || n.Machine.Name != name {
			return nil, nil
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.agent = append(s.agent, agentSeen{time.Now(), n.Machine.Agent.Connected})
		close(s.changed)
		s.changed = make(chan struct{})
		return nil, nil
	}
	s.conn = jsonrpc2.NewConn(context.Background(), wsrpc.New(ws, wsrpc.Options{}), jsonrpc2.HandlerWithError(h))
	c.t.Cleanup(func() { s.conn.Close(); <-s.conn.DisconnectNotify() })
	if err := s.conn.Call(testutil.Ctx(c.t), masterapi.MethodRuntimeSubscribe, masterapi.SubscribeParams{RuntimeID: rid}, nil); err != nil {
		c.t.Fatalf("subscribe: %v", err)
	}
	return s
}

// agentState waits at most d for a notification after since whose agent
// is connected (or not) and returns when it came.
func (s *subscriber) agentState(t *testing.T, connected bool, since time.Time, d time.Duration) time.Time {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		for _, a := range s.agent {
			if a.connected == connected && !a.at.Before(since) {
				s.mu.Unlock()
				return a.at
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("no notification of the agent connected=%v within %s", connected, d)
		}
	}
}
