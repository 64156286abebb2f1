package agent

// The agent's process machinery as extensions see it: adapters that speak
// another wire (Che's terminal and exec agents, package agent/cheapi)
// start processes in the agent's one table and read their output through
// the one viewer loop (follow), so they add no second process table and
// no second output path.

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/protocol"
)

// Extension adds routes to the agent's handler. New calls it once, with
// the agent; the patterns it returns (http.ServeMux patterns, such as
// "GET /pty") are served next to the agent's own, directly and through
// porthole-master's tunnel. An extension authenticates its requests with
// Authorize and tracks its connections with Session.
type Extension func(a *Agent) map[string]http.Handler

// Process is a process of the agent's table, for extensions.
type Process struct{ p *process }

// Start starts a process as the start method does.
func (a *Agent) Start(sp protocol.StartParams) (*Process, error) {
	p, err := a.procs.start(sp)
	if err != nil {
		return nil, err
	}
	return &Process{p}, nil
}

// Lookup returns the process with id, or false once the agent forgot it
// (never started, or removed after its retention).
func (a *Agent) Lookup(id string) (*Process, bool) {
	p, err := a.procs.get(id)
	if err != nil {
		return nil, false
	}
	return &Process{p}, true
}

// Processes returns the agent's processes, ordered by id.
func (a *Agent) Processes() []*Process {
	ps := a.procs.list()
	out := make([]*Process, len(ps))
	for i, p := range ps {
		out[i] = &Process{p}
	}
	return out
}

// ID is the agent's id of the process ("1", "2", ...).
func (p *Process) ID() string { return p.p.id }

// PID is the process's OS pid.
func (p *Process) PID() int { return p.p.pid }

// Info returns a snapshot of the process.
func (p *Process) Info() protocol.ProcessInfo { return p.p.Info(false) }

// Done is closed once the process has exited and its output has ended.
func (p *Process) Done() <-chan struct{} { return p.p.done }

// Signal signals the process group while the process runs.
func (p *Process) Signal(sig syscall.Signal) error { return p.p.Signal(sig) }

// Resize sets the terminal size of a TTY process.
func (p *Process) Resize(s protocol.WindowSize) error { return p.p.Resize(s) }

// CloseStdin half-closes the process's stdin (^D on a terminal).
func (p *Process) CloseStdin() error { return p.p.CloseStdin() }

// Ext returns the extension state stored with SetExt, or nil.
func (p *Process) Ext() any {
	if v := p.p.ext.Load(); v != nil {
		return *v
	}
	return nil
}

// SetExt stores an extension's state with the process; it is dropped
// with the process. It reports false, storing nothing, if some state was
// stored already.
func (p *Process) SetExt(v any) bool { return p.p.ext.CompareAndSwap(nil, &v) }

// WriteStdin writes b to the process's stdin. The write may block while
// the process does not read; it runs on a goroutine the agent owns, so
// the caller can give up when ctx ends (and the agent's shutdown is never
// held by it).
func (a *Agent) WriteStdin(ctx context.Context, p *Process, b []byte) error {
	done := make(chan error, 1)
	a.procs.wg.Go(func() { done <- p.p.WriteStdin(b) })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Viewer receives a process's life from Follow, in order: output, gaps
// and ends of streams, then the exit.
type Viewer interface {
	// Output gets bytes of stream s at offset off; b is valid only during
	// the call.
	Output(s protocol.Stream, off int64, b []byte) error
	// Gap reports bytes [from, to) of s lost before they were read.
	Gap(s protocol.Stream, from, to int64) error
	// EOF reports the end of stream s.
	EOF(s protocol.Stream, off int64) error
	// Exited gets the final state once the process is done.
	Exited(protocol.ProcessInfo) error
}

// Follow sends the process's output from the given offsets (nil: that
// stream is not followed) and then its exit to v, through the agent's one
// viewer loop, until the process is done or ctx ends.
func (p *Process) Follow(ctx context.Context, stdout, stderr *int64, v Viewer) error {
	var offs [3]*int64
	offs[protocol.Stdout], offs[protocol.Stderr] = stdout, stderr
	return follow(ctx, p.p, offs, viewerSink{v})
}

type viewerSink struct{ v Viewer }

func (viewerSink) started(protocol.ProcessInfo) error { return nil }
func (s viewerSink) output(st protocol.Stream, off int64, frame []byte) error {
	return s.v.Output(st, off, frame[protocol.OutputHeaderLen:])
}
func (s viewerSink) gap(st protocol.Stream, from, to int64) error { return s.v.Gap(st, from, to) }
func (s viewerSink) eof(st protocol.Stream, off int64) error      { return s.v.EOF(st, off) }
func (s viewerSink) exited(info protocol.ProcessInfo) error       { return s.v.Exited(info) }

// Authorize checks a request of an extension as the agent checks its own
// (protocol version, Origin, token; requests through the master's tunnel
// pass the last two), with tok as the presented token. An empty tok falls
// back to the agent's own places (Authorization: Bearer, the token
// subprotocol). It returns 0 when the request may go on, else the HTTP
// status and message to refuse it with (the refusal is logged, never the
// token).
func (a *Agent) Authorize(r *http.Request, tok string) (int, string) {
	if err := protocol.CheckVersion(r.Header.Get(protocol.HeaderProtocol)); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	if isTrusted(r) {
		return 0, ""
	}
	if e := a.checkOrigin(r); e != nil {
		a.refuseLog(r, e)
		return e.status, e.msg
	}
	if a.opts.InsecureNoAuth {
		return 0, ""
	}
	if tok == "" {
		var ok bool
		if tok, ok = requestToken(r); !ok {
			e := &httpError{http.StatusUnauthorized, "missing token: send ?token=<token>, Authorization: <token> or Authorization: Bearer <token>"}
			a.refuseLog(r, e)
			return e.status, e.msg
		}
	}
	if !tokenEqual(tok, a.opts.Token) {
		e := &httpError{http.StatusUnauthorized, "invalid token"}
		a.refuseLog(r, e)
		return e.status, e.msg
	}
	return 0, ""
}

func (a *Agent) refuseLog(r *http.Request, e *httpError) {
	a.log.Warn("request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "status", e.status, "reason", e.msg)
}

// Session registers a connection of an extension with the agent: ctx
// ends when the agent shuts down (its cause is ErrShutdown), and the
// agent's Shutdown waits until end is called. It fails with ErrShutdown
// once the agent is shutting down.
func (a *Agent) Session(r *http.Request, kind string) (ctx context.Context, end func(cause error), err error) {
	s := a.newSession(r, kind)
	if s == nil {
		return nil, nil, ErrShutdown
	}
	return s.ctx, s.finish, nil
}

// Go runs fn on a goroutine the agent's shutdown waits for; ctx ends when
// the agent shuts down.
func (a *Agent) Go(fn func(ctx context.Context)) {
	a.procs.wg.Go(func() { fn(a.ctx) })
}

// Settings returns the agent's options with their defaults applied (an
// extension's limits and keepalives follow the agent's), without the
// token: extensions check it with Authorize.
func (a *Agent) Settings() Options {
	o := a.opts
	o.Token = ""
	return o
}

// Logger is the agent's logger.
func (a *Agent) Logger() *slog.Logger { return a.log }

// ExitReason describes how a process ended ("exit code 3", "killed by
// signal KILL"), as the agent's close frames say it.
func ExitReason(info protocol.ProcessInfo) string { return exitReason(info) }

// IncompleteUTF8 returns how many trailing bytes of b begin a UTF-8
// character that the next bytes may complete (0 to 3): what a writer of
// text frames carries to the next frame.
func IncompleteUTF8(b []byte) int { return incompleteTail(b) }

// HangUp hangs up the process as closing its terminal would: SIGHUP to
// its group and, on a terminal, to every process of its session (such as
// the job an interactive shell runs in a group of its own), then the
// terminal itself is closed, so that reads of the hung-up terminal end
// (bash, hung up while it waits for input, acts on the signal only once
// a read returns). Output after the hang-up is not read. Processes that
// left the session (setsid, daemons) are not hung up, as on a real
// terminal.
func (p *Process) HangUp() error {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	if p.p.exited {
		return exitedError(p.p.id)
	}
	err := proc.Group(p.p.pid).Signal(syscall.SIGHUP)
	if p.p.tty {
		for _, pid := range sessionMembers(p.p.pid) {
			unix.Kill(pid, unix.SIGHUP)
		}
		p.p.child.master.Close() // the pump ends; run closes it again, harmlessly
	}
	return err
}

// sessionMembers lists the processes of session sid (from /proc).
func sessionMembers(sid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == sid {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		// After "(comm)": state ppid pgrp session ...
		if f := bytes.Fields(stat[i+1:]); len(f) > 3 && string(f[3]) == strconv.Itoa(sid) {
			out = append(out, pid)
		}
	}
	return out
}
