package agent

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

// parseOffsets reads ?stdout=N&stderr=N (and ?offset=N for stdout).
// Absent means 0: everything the ring still holds. "end" means only new
// output.
func parseOffsets(r *http.Request, p *process) ([3]*int64, error) {
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
func (a *Agent) serveAttach(w http.ResponseWriter, r *http.Request, s *session) {
	p, err := a.procs.get(r.PathValue("id"))
	if err != nil {
		s.finish(err)
		http.Error(w, toRPCError(err).Message, http.StatusNotFound)
		return
	}
	offs, err := parseOffsets(r, p)
	if err != nil {
		s.finish(err)
		http.Error(w, toRPCError(err).Message, http.StatusBadRequest)
		return
	}
	raw := slices.Contains(websocketProtocols(r), protocol.SubprotocolRaw) || r.URL.Query().Get("mode") == "raw"
	// ?hold=1: this viewer is never demoted (protocol.md §12): the
	// process waits for it however slowly it reads.
	hold := r.URL.Query().Get("hold") == "1"
	s.proc = p
	s.log = s.log.With("process", p.id)
	s.audit("attach", "raw", raw, "hold", hold)
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
		// Written now if the process takes it; queueStdin copies what
		// it queues (the stream reuses b).
		return s.queueStdin(p, stdinItem{data: data})
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
	// Running from the start: a wake-up while the view opens (the pump
	// may write at once, the session may end) only asks the first loop
	// to look again.
	av := &attachView{s: s}
	av.state.Store(viewRunning)
	// The session's end wakes the view: its own cancel does, and the
	// agent's shutdown through that cancel. Not context.AfterFunc on the
	// session's context, which would give every idle session a done
	// channel and a map of its context's children (about 0.5 KiB); the
	// agent's context has both already. The cancel comes first, so the
	// woken view sees the session ended.
	cancel := s.cancel
	s.cancel = func(cause error) {
		cancel(cause)
		av.wake()
	}
	av.stopCtx = context.AfterFunc(a.ctx, func() { s.cancel(context.Cause(a.ctx)) })
	opts := a.streamOptions(onInput)
	opts.RawText = raw
	// Keystrokes read without waking the runtime's monitor thread
	// (wsrpc read.go): an attach socket's reads are its stdin path.
	opts.ReadDirect = true
	// The end of the client's reads ends the session.
	opts.OnReadEnd = func(error) { s.cancel(errClientClosed) }
	var (
		sk       sink = frameSink{s}
		readDone <-chan struct{}
	)
	if raw {
		sk = rawSink{s}
		done := make(chan struct{})
		readDone = done
		opts.OnReadEnd = func(error) {
			s.cancel(errClientClosed)
			close(done) // the reads are over: endAttach waits for it
		}
		// While the client sends nothing, no goroutine waits for its
		// socket: the agent's poller does (wsrpc.ServeRaw).
		opts.Idle = &a.idle
	}
	s.stream = wsrpc.New(ws, opts)
	if raw {
		s.stream.ServeRaw() // until the socket ends
	} else {
		s.conn = jsonrpc2.NewConn(context.WithoutCancel(s.ctx), s.stream, s, jsonrpc2.SetLogger(quietLogger{s.log}))
		readDone = s.conn.DisconnectNotify()
	}
	// The handler returns now, so net/http's goroutine and buffers are
	// released; the viewer runs on a goroutine of its own while it has
	// something to send.
	av.readDone = readDone
	v, err := openView(s.ctx, p, offs, sk, av.wake, hold)
	if err != nil { // the offsets were checked: cannot happen
		av.stopCtx()
		go s.endAttach(err, readDone)
		return
	}
	av.v = v
	if hold {
		p.releaseStartHold() // this viewer holds the output now
	}
	go av.loop()
}

// attachView runs an attach socket's view on a goroutine only while it
// has something to do: while the viewer keeps up, its pump sends to it
// (the fast path) and no goroutine waits for it, so an idle attached
// terminal costs no goroutine beyond its socket's reader and its pump.
// A reader's wake-up (a delivery declined, the end of the stream) or the
// session's end starts one again.
type attachView struct {
	s        *session
	v        *view
	readDone <-chan struct{}
	stopCtx  func() bool
	state    atomic.Int32 // viewParked, viewRunning, viewRerun
}

const (
	viewParked = iota
	viewRunning
	viewRerun // woken while running: look again before parking
)

// wake makes sure the view runs (again); any goroutine, any lock held.
func (av *attachView) wake() {
	for {
		switch av.state.Load() {
		case viewParked:
			if av.state.CompareAndSwap(viewParked, viewRunning) {
				go av.loop()
				return
			}
		case viewRunning:
			if av.state.CompareAndSwap(viewRunning, viewRerun) {
				return
			}
		default:
			return
		}
	}
}

// loop runs the view until it parks or ends; only one runs at a time.
func (av *attachView) loop() {
	for {
		parked, err := av.v.run(true)
		if !parked {
			av.stopCtx()
			av.v.close()
			av.s.endAttach(err, av.readDone)
			return
		}
		if av.state.CompareAndSwap(viewRunning, viewParked) {
			return
		}
		av.state.Store(viewRunning) // woken meanwhile
	}
}

// closeWait bounds how long an attach socket waits for the client's
// answer to its close frame.
const closeWait = 5 * time.Second

// errClientClosed is the cause of a session whose client went away.
var errClientClosed = errors.New("client closed the connection")

// endAttach tears an attach session down once its view ended with err
// (nil: the process's exit was sent). The agent waits for it through the
// session's tracking.
func (s *session) endAttach(err error, readDone <-chan struct{}) {
	switch cause := context.Cause(s.ctx); {
	case err == nil:
		// exited was sent, then a close frame: the socket closes once the
		// client answered it (its read loop ended), at most closeWait
		// later. Closing at once, with the client's last frames unread,
		// resets the connection, and the reset could reach the client
		// before the exit status did.
		t := time.NewTimer(closeWait)
		select {
		case <-readDone:
		case <-t.C:
		}
		t.Stop()
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
