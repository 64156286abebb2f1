package agent

import (
	"context"
	"log/slog"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

// session is one client connection: a control socket, an attach socket, or
// a single HTTP request. It owns the goroutines it starts.
type session struct {
	a   *Agent
	seq uint64
	log *slog.Logger
	// principal is who the session acts for (auth.go principal): the
	// audit trail's "who".
	principal string
	stream    *wsrpc.Stream // nil for HTTP requests
	conn      *jsonrpc2.Conn
	ctx       context.Context
	cancel    context.CancelCauseFunc

	// proc is the attached process (attach sockets).
	proc *process
	// stdin holds one ordered queue per process this socket writes to
	// (stdin frames, process.write, process.closeStdin), so a process that
	// does not read blocks neither this socket's other requests nor anyone
	// else, until its queue is full. Used only by the read loop.
	stdin map[*process]*stdinQueue

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	subs   map[string]context.CancelCauseFunc
}

// stdinItem is one write to a process's stdin, or its end.
type stdinItem struct {
	data []byte
	eof  bool
}

func (a *Agent) newSession(r *http.Request, kind string) *session {
	ctx, cancel := context.WithCancelCause(a.ctx)
	s := &session{a: a, ctx: ctx, cancel: cancel, subs: make(map[string]context.CancelCauseFunc)}
	if !a.track(s) {
		cancel(ErrShutdown)
		return nil
	}
	s.principal = principal(r)
	s.log = a.log.With("conn", s.seq, "kind", kind, "remote", r.RemoteAddr, "principal", s.principal)
	return s
}

// audit logs one audited action of the session (docs/operations.md,
// Audit): msg "audit", the action, and args (the process, its argv, the
// signal); the session's logger adds who and from where.
func (s *session) audit(action string, args ...any) {
	s.log.Info("audit", append([]any{"action", action}, args...)...)
}

// upgrade completes a WebSocket handshake with the agent's headers.
func (a *Agent) upgrade(w http.ResponseWriter, r *http.Request, subprotocols ...string) (*websocket.Conn, error) {
	return a.upgradeWith(a.upgrader, w, r, subprotocols...)
}

func (a *Agent) upgradeWith(u websocket.Upgrader, w http.ResponseWriter, r *http.Request, subprotocols ...string) (*websocket.Conn, error) {
	return a.upgradeHeader(u, w, r, http.Header{}, subprotocols...)
}

func (a *Agent) upgradeHeader(u websocket.Upgrader, w http.ResponseWriter, r *http.Request, h http.Header, subprotocols ...string) (*websocket.Conn, error) {
	u.Subprotocols = subprotocols
	h.Set(protocol.HeaderProtocol, protocol.Version)
	h.Set(protocol.HeaderAgentVersion, a.opts.Version)
	return u.Upgrade(w, r, h)
}

// streamOptions are the options of every session's socket.
func (a *Agent) streamOptions(onBinary func([]byte) error) wsrpc.Options {
	return wsrpc.Options{
		Limit:        int64(a.opts.MaxMessageBytes),
		OnBinary:     onBinary,
		PingInterval: a.opts.PingInterval,
		WriteTimeout: a.opts.WriteTimeout,
		Clock:        a.opts.Clock,
	}
}

// goTracked runs fn on a goroutine the session waits for; it refuses once
// the session is closing.
func (s *session) goTracked(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Go(fn)
	return true
}

// finish cancels everything the session started and waits for it.
func (s *session) finish(cause error) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel(cause)
	s.wg.Wait()
	if s.stream != nil {
		s.stream.Close()
	}
	s.a.untrack(s)
	s.log.Debug("connection closed", "cause", cause)
}

// queueStdin hands stdin for p to this socket's writer for p, in order. It
// blocks while the queue is full (the process is not reading), which
// pushes back on the client's connection, until the session ends. Called
// only from the read loop.
//
// The fast path: when nothing of this socket's is queued for p, the
// bytes are written to the terminal or pipe right here, without waiting
// (process.tryWriteStdin); only what the process does not take at once
// is queued, for a writer goroutine that runs while the queue is not
// empty. A keystroke thus goes from the socket's reader to the PTY with
// no hand-off, and an idle socket holds no writer.
func (s *session) queueStdin(p *process, item stdinItem) error {
	switch {
	case item.eof && (p.stdinClosed.Load() || p.hasExited()):
		return nil // closing a closed stdin is done
	case p.hasExited():
		return exitedError(p.id)
	case p.stdinClosed.Load():
		return stdinClosedError(p.id)
	}
	q, ok := s.stdin[p]
	if !ok {
		if s.stdin == nil {
			s.stdin = make(map[*process]*stdinQueue)
		}
		q = &stdinQueue{space: make(chan struct{}, 1)}
		s.stdin[p] = q
	}
	for {
		q.mu.Lock()
		if !item.eof && !q.running && len(q.items) == 0 {
			q.mu.Unlock()
			n, err := p.tryWriteStdin(item.data)
			if err != nil {
				s.log.Debug("stdin", "process", p.id, "err", err)
				return nil
			}
			if n == len(item.data) {
				return nil
			}
			item.data = item.data[n:]
			q.mu.Lock() // still empty and idle: only this goroutine adds
		}
		if len(q.items) < s.a.opts.StdinQueue {
			if !item.eof {
				item.data = append([]byte(nil), item.data...) // the stream reuses it
			}
			q.items = append(q.items, item)
			if !q.running {
				q.running = true
				log := s.log
				// The writer belongs to the process's lifetime: it ends
				// when the queue is empty, or the process's stdin is gone.
				s.a.procs.wg.Go(func() { q.write(p, log) })
			}
			q.mu.Unlock()
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		}
	}
}

// stdinQueue is what one socket has for one process's stdin and the
// process has not taken yet, at most Options.StdinQueue writes.
type stdinQueue struct {
	mu      sync.Mutex
	items   []stdinItem
	running bool          // a writer goroutine runs
	space   chan struct{} // cap 1: the writer took an item
}

// write writes the queue out in order, blocking while the process does
// not read, and ends when the queue is empty.
func (q *stdinQueue) write(p *process, log *slog.Logger) {
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			q.items = nil
			q.running = false
			q.mu.Unlock()
			return
		}
		item := q.items[0]
		q.items[0] = stdinItem{}
		q.items = q.items[1:]
		q.mu.Unlock()
		select {
		case q.space <- struct{}{}:
		default:
		}
		var err error
		if item.eof {
			err = p.CloseStdin()
		} else {
			err = p.WriteStdin(item.data)
		}
		if err != nil {
			log.Debug("stdin", "process", p.id, "err", err)
		}
	}
}

// closeStdinQueues forgets the queues once the read loop is over; their
// writers finish what is queued.
func (s *session) closeStdinQueues() {
	clear(s.stdin)
}

// directStdin runs a stdin operation of an HTTP request. The write itself
// may block while the process does not read; it runs on a goroutine owned
// by the process's lifetime, so that the request (and the agent's shutdown)
// can give up waiting for it.
func (s *session) directStdin(ctx context.Context, op func() error) error {
	done := make(chan error, 1)
	s.a.procs.wg.Go(func() { done <- op() })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return protocol.Errorf(protocol.CodeInternalError, "stopped waiting for the process to read its stdin: %v", context.Cause(ctx))
	}
}
