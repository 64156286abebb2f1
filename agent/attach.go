package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

// parseOffsets reads ?stdout=N&stderr=N (and ?offset=N for stdout).
// Absent means 0: everything the ring still holds. "end" means only new
// output.
func parseOffsets(r *http.Request, p *Process) ([3]*int64, error) {
	var offs [3]*int64
	q := r.URL.Query()
	for _, s := range []protocol.Stream{protocol.Stdout, protocol.Stderr} {
		out := p.Output(s)
		if out == nil {
			continue
		}
		v := q.Get(s.String())
		if v == "" && s == protocol.Stdout {
			v = q.Get("offset")
		}
		var off int64
		switch v {
		case "":
		case "end":
			_, off = out.Bounds()
		default:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return offs, invalidParams("%s offset %q: want a byte offset >= 0 or \"end\"", s, v)
			}
			if _, end := out.Bounds(); n > end {
				return offs, invalidParams("%s offset %d is beyond the end of the stream (%d bytes so far)", s, n, end)
			}
			off = n
		}
		offs[s] = &off
	}
	return offs, nil
}

// serveAttach attaches a client to a process: framed (porthole.attach.v1,
// the default) or raw (porthole.raw.v1, for stock terminal widgets).
func (a *Agent) serveAttach(w http.ResponseWriter, r *http.Request) {
	if e := a.authorize(r); e != nil {
		a.refuse(w, r, e)
		return
	}
	p, err := a.procs.get(r.PathValue("id"))
	if err != nil {
		http.Error(w, toRPCError(err).Message, http.StatusNotFound)
		return
	}
	offs, err := parseOffsets(r, p)
	if err != nil {
		http.Error(w, toRPCError(err).Message, http.StatusBadRequest)
		return
	}
	raw := slices.Contains(websocketProtocols(r), protocol.SubprotocolRaw) || r.URL.Query().Get("mode") == "raw"
	s := a.newSession(r, "attach")
	if s == nil {
		http.Error(w, ErrShutdown.Error(), http.StatusServiceUnavailable)
		return
	}
	s.proc = p
	s.log = s.log.With("process", p.id)
	onInput := func(b []byte) error {
		data := b
		if !raw {
			var err error
			if data, err = protocol.ParseInputFrame(b); err != nil {
				return err
			}
		}
		if len(data) == 0 || p.stdinClosed.Load() || p.hasExited() {
			// Typing into a finished process is no protocol error: the
			// bytes have nowhere to go, as on a real terminal.
			return nil
		}
		// The stream reuses b: queue a copy.
		return s.queueStdin(p, stdinItem{data: append([]byte(nil), data...)})
	}
	mode := protocol.SubprotocolAttach
	if raw {
		mode = protocol.SubprotocolRaw
	}
	ws, err := a.upgrade(w, r, mode)
	if err != nil {
		s.finish(err)
		return
	}
	opts := a.streamOptions(onInput)
	opts.RawText = raw
	// The end of the client's reads ends the session.
	opts.OnReadEnd = func(error) { s.cancel(errClientClosed) }
	s.stream = wsrpc.New(ws, opts)

	var (
		sk       sink = frameSink{s}
		readDone <-chan struct{}
	)
	if raw {
		sk = rawSink{s}
		done := make(chan struct{})
		readDone = done
		go func() { // owned by runAttach, which waits for readDone
			defer close(done)
			s.stream.ReadObject(nil) // returns only when the socket ends
		}()
	} else {
		s.conn = jsonrpc2.NewConn(context.WithoutCancel(s.ctx), s.stream, s, jsonrpc2.SetLogger(quietLogger{s.log}))
		readDone = s.conn.DisconnectNotify()
	}
	// The handler returns now, so net/http's goroutine and buffers are
	// released; the session goroutine is the viewer itself.
	go s.runAttach(p, offs, sk, readDone)
}

// errClientClosed is the cause of a session whose client went away.
var errClientClosed = errors.New("client closed the connection")

// runAttach is an attach session's own goroutine: it sends the process to
// the client, then tears the session down. The agent waits for it through
// the session's tracking.
func (s *session) runAttach(p *Process, offs [3]*int64, sk sink, readDone <-chan struct{}) {
	err := follow(s.ctx, p, offs, sk)
	switch cause := context.Cause(s.ctx); {
	case err == nil: // exited was sent; the sink closed the socket normally
	case cause == errClientClosed:
	case s.ctx.Err() != nil: // the agent is shutting down
		s.stream.CloseWith(protocol.CloseGoingAway, cause.Error())
	default:
		s.stream.CloseWith(protocol.CloseProtocolError, err.Error())
	}
	s.stream.Close()
	<-readDone
	s.closeStdinQueues() // the read loop is over
	s.finish(err)
}

// queueStdin hands stdin for p to this socket's writer for p, in order. It
// blocks while the queue is full (the process is not reading), which
// pushes back on the client's connection, until the session ends. Called
// only from the read loop.
func (s *session) queueStdin(p *Process, item stdinItem) error {
	switch {
	case item.eof && (p.stdinClosed.Load() || p.hasExited()):
		return nil // closing a closed stdin is done
	case p.hasExited():
		return &jsonrpc2.Error{Code: protocol.CodeNotRunning, Message: "process " + p.id + " has exited"}
	case p.stdinClosed.Load():
		return &jsonrpc2.Error{Code: protocol.CodeNotRunning, Message: "stdin of process " + p.id + " is closed"}
	}
	q, ok := s.stdin[p]
	if !ok {
		if s.stdin == nil {
			s.stdin = make(map[*Process]chan stdinItem)
		}
		q = make(chan stdinItem, s.a.opts.StdinQueue)
		s.stdin[p] = q
		log := s.log
		// The writer belongs to the process's lifetime: it ends when the
		// queue is closed and drained, or when the process's stdin is gone.
		s.a.procs.wg.Go(func() {
			for item := range q {
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
		})
	}
	select {
	case q <- item:
		return nil
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
}

// closeStdinQueues ends the writers once the read loop is over.
func (s *session) closeStdinQueues() {
	for p, q := range s.stdin {
		close(q)
		delete(s.stdin, p)
	}
}

func (s *session) subscribe(ctx context.Context, raw json.RawMessage) (any, error) {
	var sp protocol.SubscribeParams
	if err := decodeParams(protocol.MethodSubscribe, raw, &sp); err != nil {
		return nil, err
	}
	if s.stream == nil {
		return nil, &jsonrpc2.Error{Code: protocol.CodeMethodNotFound, Message: "process.subscribe needs a WebSocket control socket"}
	}
	p, err := s.process(sp.ID)
	if err != nil {
		return nil, err
	}
	var offs [3]*int64
	offs[protocol.Stdout], offs[protocol.Stderr] = sp.Stdout, sp.Stderr
	for _, st := range []protocol.Stream{protocol.Stdout, protocol.Stderr} {
		if offs[st] == nil || p.Output(st) == nil {
			continue
		}
		if _, end := p.Output(st).Bounds(); *offs[st] < 0 || *offs[st] > end {
			return nil, invalidParams("%s offset %d: want 0..%d", st, *offs[st], end)
		}
	}
	s.mu.Lock()
	if _, dup := s.subs[p.id]; dup {
		s.mu.Unlock()
		return nil, invalidParams("already subscribed to process %s on this connection", p.id)
	}
	const maxSubs = 64
	if len(s.subs) >= maxSubs {
		s.mu.Unlock()
		return nil, &jsonrpc2.Error{Code: protocol.CodeLimit, Message: "subscription limit reached: 64 per connection"}
	}
	subCtx, cancel := context.WithCancelCause(s.ctx)
	s.subs[p.id] = cancel
	s.mu.Unlock()
	ready, _ := ctx.Value(readyKey{}).(chan struct{})
	conn, _ := ctx.Value(connKey{}).(*jsonrpc2.Conn)
	if conn == nil {
		return nil, &jsonrpc2.Error{Code: protocol.CodeInternalError, Message: "no connection for events"}
	}
	sk := &eventSink{s: s, conn: conn, id: p.id}
	ok := s.goTracked(func() {
		defer func() {
			s.mu.Lock()
			delete(s.subs, p.id)
			s.mu.Unlock()
			cancel(nil)
		}()
		if ready != nil {
			select {
			case <-ready:
			case <-subCtx.Done():
				return
			}
		}
		if err := follow(subCtx, p, offs, sk); err != nil && subCtx.Err() == nil {
			s.log.Debug("subscription ended", "process", p.id, "err", err)
		}
	})
	if !ok {
		cancel(nil)
		return nil, &jsonrpc2.Error{Code: protocol.CodeInternalError, Message: "connection closing"}
	}
	return protocol.Empty{}, nil
}

func (s *session) unsubscribe(_ context.Context, p *Process, _ json.RawMessage) (any, error) {
	s.mu.Lock()
	cancel, ok := s.subs[p.id]
	s.mu.Unlock()
	if !ok {
		return nil, invalidParams("not subscribed to process %s", p.id)
	}
	cancel(errors.New("unsubscribed"))
	return protocol.Empty{}, nil
}
