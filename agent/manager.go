package agent

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/agent/ring"
	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/protocol"
)

// manager owns every process: it starts them through spawn, keeps exited
// ones for the retention period, and owns their goroutines.
type manager struct {
	opts *Options
	log  *slog.Logger
	env  []string // base environment of children

	wg     sync.WaitGroup // every process goroutine
	reaper reaper         // learns of every exit, on wg

	mu      sync.Mutex
	procs   map[string]*process
	timers  map[string]func() bool // retention timers' stops
	nextID  int
	closing bool

	stats stats // for metrics (metrics.go)
}

func newManager(o *Options) *manager {
	m := &manager{
		opts:   o,
		log:    o.Logger,
		env:    o.Env,
		procs:  make(map[string]*process),
		timers: make(map[string]func() bool),
	}
	m.reaper.wg = &m.wg
	return m
}

// start validates sp, then spawns the process.
func (m *manager) start(sp protocol.StartParams) (*process, error) {
	argv := sp.Argv
	if len(argv) == 0 {
		argv = []string{m.opts.Shell}
	}
	if argv[0] == "" {
		return nil, invalidParams("argv[0] is empty")
	}
	for i, kv := range sp.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, invalidParams("env[%d] %q: want KEY=VALUE", i, kv)
		}
	}
	size := sp.Size
	if sp.TTY {
		if size.Rows == 0 && size.Cols == 0 {
			size.Rows, size.Cols = protocol.DefaultRows, protocol.DefaultCols
		}
		if err := checkSize(size); err != nil {
			return nil, err
		}
	}
	if sp.Cwd != "" {
		if fi, err := os.Stat(sp.Cwd); err != nil || !fi.IsDir() {
			return nil, protocol.Errorf(protocol.CodeStartFailed, "cwd %q is not a directory", sp.Cwd)
		}
	}
	var cred *syscall.Credential
	if sp.User != "" {
		c, err := lookupCredential(sp.User)
		if err != nil {
			return nil, &protocol.Error{Code: protocol.CodeStartFailed, Message: err.Error()}
		}
		cred = c
	}
	env := mergeEnv(m.env, sp.Env, sp.TTY)

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return nil, &protocol.Error{Code: protocol.CodeLimit, Message: "agent is shutting down"}
	}
	if len(m.procs) >= m.opts.MaxProcesses && !m.evictOldestExitedLocked() {
		return nil, protocol.Errorf(protocol.CodeLimit, "process limit reached: %d processes (agent flag -max-processes)", m.opts.MaxProcesses)
	}
	c, err := spawn(spawnSpec{argv: argv, env: env, dir: sp.Cwd, cred: cred, tty: sp.TTY, size: size})
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeStartFailed, "start %q: %v", argv[0], err)
	}
	m.nextID++
	p := &process{
		id: strconv.Itoa(m.nextID), name: sp.Name, argv: argv, cwd: sp.Cwd, user: sp.User, tty: sp.TTY,
		child: c, pid: c.process.Pid, startedAt: time.Now(), size: size, done: make(chan struct{}),
	}
	ro := ring.Options{Max: m.opts.RingBytes, Stall: m.opts.StallTimeout, Clock: m.opts.Clock, OnDemote: func() { m.stats.stalls.Add(1) }}
	p.out[protocol.Stdout] = ring.New(ro)
	if !sp.TTY {
		p.out[protocol.Stderr] = ring.New(ro)
	}
	p.stats = &m.stats
	m.stats.started.Add(1)
	if sp.Hold {
		p.holdOutput(clock.Or(m.opts.Clock), StartHoldTimeout)
	}
	if m.opts.RecordDir != "" && sp.TTY {
		if rc, err := newRecorder(m.opts.RecordDir, p, m.opts, clock.Or(m.opts.Clock)); err != nil {
			m.log.Error("cannot record the session: it runs unrecorded", "id", p.id, "err", err)
		} else {
			p.rec = rc
			m.wg.Go(func() { rc.run(p.out[protocol.Stdout]) })
		}
	}
	m.procs[p.id] = p
	m.log.Info("process started", "id", p.id, "pid", p.pid, "argv0", argv[0], "tty", sp.TTY)
	p.run(&m.wg, &m.reaper, clock.Or(m.opts.Clock), m.opts.ExitDrain, func() { m.exited(p) })
	return p, nil
}

// mergeEnv overlays extra on base (later entries win). A terminal gets the
// TERM of the request, else xterm-256color (what xterm.js and most
// terminals speak): the agent's own TERM describes the agent's stdout, not
// the client's terminal.
func mergeEnv(base, extra []string, tty bool) []string {
	idx := make(map[string]int, len(base)+len(extra))
	var out []string
	if tty {
		base = slices.DeleteFunc(slices.Clone(base), func(kv string) bool { return strings.HasPrefix(kv, "TERM=") })
	}
	for _, kv := range slices.Concat(base, extra) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	if _, ok := idx["TERM"]; tty && !ok {
		out = append(out, "TERM=xterm-256color")
	}
	return out
}

func (m *manager) exited(p *process) {
	info := p.Info(false)
	m.log.Info("process exited", "id", p.id, "pid", p.pid, "status", exitReason(info))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing || m.opts.Retention < 0 {
		return
	}
	m.timers[p.id] = clock.Or(m.opts.Clock).AfterFunc(m.opts.Retention, func() { m.remove(p.id) })
}

// evictOldestExitedLocked drops the exited process that ended first.
func (m *manager) evictOldestExitedLocked() bool {
	var oldest *process
	for _, p := range m.procs {
		select {
		case <-p.done:
		default:
			continue
		}
		if oldest == nil || p.exitedBefore(oldest) {
			oldest = p
		}
	}
	if oldest == nil {
		return false
	}
	m.removeLocked(oldest.id)
	return true
}

func (p *process) exitedBefore(q *process) bool {
	p.mu.Lock()
	a := p.exitedAt
	p.mu.Unlock()
	q.mu.Lock()
	b := q.exitedAt
	q.mu.Unlock()
	return a.Before(b)
}

func (m *manager) get(id string) (*process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.procs[id]; ok {
		return p, nil
	}
	return nil, notFound(id)
}

func (m *manager) list() []*process {
	m.mu.Lock()
	ps := make([]*process, 0, len(m.procs))
	for _, p := range m.procs {
		ps = append(ps, p)
	}
	m.mu.Unlock()
	slices.SortFunc(ps, func(a, b *process) int {
		if c := cmp.Compare(len(a.id), len(b.id)); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	return ps
}

func (m *manager) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.procs)
}

// remove forgets an exited process whose output has ended.
func (m *manager) remove(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.procs[id]
	if !ok {
		return notFound(id)
	}
	select {
	case <-p.done:
	default:
		return &protocol.Error{Code: protocol.CodeStillRunning, Message: "process " + id + " is still running (or still draining its output); kill it first"}
	}
	m.removeLocked(id)
	return nil
}

func (m *manager) removeLocked(id string) {
	if stop, ok := m.timers[id]; ok {
		stop()
		delete(m.timers, id)
	}
	delete(m.procs, id)
}

// shutdown hangs up every running process group (SIGHUP, then SIGTERM),
// waits for them up to grace, then kills what is left and waits for all
// process goroutines.
func (m *manager) shutdown(ctx context.Context, grace time.Duration) {
	m.mu.Lock()
	m.closing = true
	for id, stop := range m.timers {
		stop()
		delete(m.timers, id)
	}
	ps := make([]proc.Target, 0, len(m.procs))
	for _, p := range m.procs {
		ps = append(ps, stopping{p})
	}
	m.mu.Unlock()

	proc.Stop(ctx, grace, ps, syscall.SIGHUP, syscall.SIGTERM)
	m.wg.Wait()
}

// stopping is a process as proc.Stop sees it: signals go to its process
// group; killing it also releases writers blocked on its rings, so that
// it can be done.
type stopping struct{ p *process }

func (s stopping) Signal(sig syscall.Signal) error {
	err := s.p.Signal(sig)
	if sig == syscall.SIGKILL {
		s.p.stop()
	}
	return err
}

// Wait returns once the process has exited and its output has ended.
func (s stopping) Wait(ctx context.Context) error {
	select {
	case <-s.p.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
