package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"syscall"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

// session is one client connection: a control socket, an attach socket, or
// a single HTTP request. It owns the goroutines it starts.
type session struct {
	a      *Agent
	seq    uint64
	log    *slog.Logger
	stream *wsrpc.Stream // nil for HTTP requests
	conn   *jsonrpc2.Conn
	ctx    context.Context
	cancel context.CancelCauseFunc

	// proc is the attached process (attach sockets).
	proc *Process
	// stdin holds one ordered queue per process this socket writes to
	// (stdin frames, process.write, process.closeStdin), so a process that
	// does not read blocks neither this socket's other requests nor anyone
	// else, until its queue is full. Used only by the read loop.
	stdin map[*Process]chan stdinItem

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	subs   map[string]context.CancelCauseFunc
}

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
	s.log = a.log.With("conn", s.seq, "kind", kind, "remote", r.RemoteAddr)
	return s
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

func (a *Agent) upgrade(w http.ResponseWriter, r *http.Request, subprotocols ...string) (*websocket.Conn, error) {
	u := a.upgrader
	u.Subprotocols = subprotocols
	h := http.Header{}
	h.Set(protocol.HeaderProtocol, protocol.Version)
	h.Set(protocol.HeaderAgentVersion, a.opts.Version)
	return u.Upgrade(w, r, h)
}

func (a *Agent) streamOptions(onBinary func([]byte) error) wsrpc.Options {
	return wsrpc.Options{
		Limit:        int64(a.opts.MaxMessageBytes),
		OnBinary:     onBinary,
		PingInterval: a.opts.PingInterval,
		WriteTimeout: a.opts.WriteTimeout,
		Clock:        a.opts.Clock,
	}
}

// serveRPCSocket serves the control socket.
func (a *Agent) serveRPCSocket(w http.ResponseWriter, r *http.Request) {
	if e := a.authorize(r); e != nil {
		a.refuse(w, r, e)
		return
	}
	s := a.newSession(r, "rpc")
	if s == nil {
		http.Error(w, ErrShutdown.Error(), http.StatusServiceUnavailable)
		return
	}
	ws, err := a.upgrade(w, r, protocol.SubprotocolRPC)
	if err != nil {
		s.finish(err)
		return
	}
	s.stream = wsrpc.New(ws, a.streamOptions(nil))
	s.log.Debug("connected")
	// The hello goes out before any reply can.
	s.stream.WriteObject(notification(protocol.EventHello, a.info()))
	// jsonrpc2 closes the stream abruptly when its context ends; the
	// session closes it itself, with a close code and the cause.
	s.conn = jsonrpc2.NewConn(context.WithoutCancel(s.ctx), s.stream, s, jsonrpc2.SetLogger(quietLogger{s.log}))
	select {
	case <-s.conn.DisconnectNotify():
	case <-s.ctx.Done():
		s.stream.CloseWith(protocol.CloseGoingAway, context.Cause(s.ctx).Error())
		<-s.conn.DisconnectNotify()
	}
	s.closeStdinQueues()
	s.finish(errors.New("disconnected"))
}

func notification(method string, params any) any {
	return struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  any    `json:"params"`
	}{"2.0", method, params}
}

type quietLogger struct{ log *slog.Logger }

func (l quietLogger) Printf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

// serveRPCPost serves one JSON-RPC request per HTTP POST, for browsers
// and scripts that need no events (resize from a web page, curl).
func (a *Agent) serveRPCPost(w http.ResponseWriter, r *http.Request) {
	if !a.cors(w, r) {
		return
	}
	if e := a.authorize(r); e != nil {
		a.refuse(w, r, e)
		return
	}
	s := a.newSession(r, "http")
	if s == nil {
		http.Error(w, ErrShutdown.Error(), http.StatusServiceUnavailable)
		return
	}
	defer s.finish(errors.New("request done"))
	w.Header().Set("Content-Type", "application/json")
	writeResp := func(status int, resp any) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(resp)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(a.opts.MaxMessageBytes)+1))
	if err != nil {
		writeResp(http.StatusBadRequest, errorResponse(nil, protocol.CodeParseError, "reading body: "+err.Error()))
		return
	}
	if len(body) > a.opts.MaxMessageBytes {
		writeResp(http.StatusRequestEntityTooLarge, errorResponse(nil, protocol.CodeTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes", a.opts.MaxMessageBytes)))
		return
	}
	var req jsonrpc2.Request
	if err := wsrpc.Decode(body, &req); err != nil {
		var re *wsrpc.Error
		if errors.As(err, &re) {
			writeResp(http.StatusBadRequest, errorResponse(re.ID, re.Code, re.Message))
			return
		}
		writeResp(http.StatusBadRequest, errorResponse(nil, protocol.CodeInvalidRequest, err.Error()))
		return
	}
	// The call ends with the request or with the agent.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	defer context.AfterFunc(r.Context(), cancel)()
	res, err := s.call(ctx, &req)
	if req.Notif {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	id, _ := json.Marshal(req.ID)
	rid := json.RawMessage(id)
	if err != nil {
		e := toRPCError(err)
		writeResp(http.StatusOK, errorResponse(&rid, int(e.Code), e.Message))
		return
	}
	writeResp(http.StatusOK, struct {
		JSONRPC string           `json:"jsonrpc"`
		ID      *json.RawMessage `json:"id"`
		Result  any              `json:"result"`
	}{"2.0", &rid, res})
}

func errorResponse(id *json.RawMessage, code int, msg string) any {
	return struct {
		JSONRPC string           `json:"jsonrpc"`
		ID      *json.RawMessage `json:"id"`
		Error   jsonrpc2.Error   `json:"error"`
	}{"2.0", id, jsonrpc2.Error{Code: int64(code), Message: msg}}
}

func toRPCError(err error) *jsonrpc2.Error {
	var e *jsonrpc2.Error
	if errors.As(err, &e) {
		return e
	}
	return &jsonrpc2.Error{Code: protocol.CodeInternalError, Message: err.Error()}
}

// Handle implements jsonrpc2.Handler. It runs on the connection's read
// loop, so requests are handled in order; process.wait runs on a tracked
// goroutine so that it blocks nothing else.
func (s *session) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if req.Method == protocol.MethodWait {
		if !s.goTracked(func() { s.reply(conn, req, nil)(s.call(s.ctx, req)) }) {
			s.reply(conn, req, nil)(nil, &jsonrpc2.Error{Code: protocol.CodeInternalError, Message: "connection closing"})
		}
		return
	}
	var ready chan struct{}
	if req.Method == protocol.MethodSubscribe {
		ready = make(chan struct{})
		ctx = context.WithValue(ctx, readyKey{}, ready)
		ctx = context.WithValue(ctx, connKey{}, conn) // s.conn may not be set yet
	}
	s.reply(conn, req, ready)(s.call(ctx, req))
}

type (
	readyKey struct{}
	connKey  struct{}
)

// reply returns a func that sends the result or error of req; ready, when
// set, is closed once the reply is on the wire, so that subscription
// events never precede it.
func (s *session) reply(conn *jsonrpc2.Conn, req *jsonrpc2.Request, ready chan struct{}) func(any, error) {
	return func(res any, err error) {
		if ready != nil {
			defer close(ready)
		}
		if req.Notif {
			if err != nil {
				s.log.Debug("notification failed", "method", req.Method, "err", err)
			}
			return
		}
		if err != nil {
			conn.ReplyWithError(s.ctx, req.ID, toRPCError(err))
			return
		}
		conn.Reply(s.ctx, req.ID, res)
	}
}

type method func(s *session, ctx context.Context, params json.RawMessage) (any, error)

// methods is the JSON-RPC method table.
var methods map[string]method

func init() {
	methods = map[string]method{
		protocol.MethodAgentInfo: func(s *session, _ context.Context, _ json.RawMessage) (any, error) { return s.a.info(), nil },
		protocol.MethodStart:     (*session).start,
		protocol.MethodList:      (*session).list,
		protocol.MethodGet: withProcess(func(_ *session, _ context.Context, p *Process, _ json.RawMessage) (any, error) {
			return p.Info(true), nil
		}),
		protocol.MethodSignal: (*session).signal,
		protocol.MethodKill: withProcess(func(_ *session, _ context.Context, p *Process, _ json.RawMessage) (any, error) {
			return protocol.Empty{}, p.Signal(syscall.SIGKILL)
		}),
		protocol.MethodResize:      (*session).resize,
		protocol.MethodCloseStdin:  withProcess((*session).closeStdin),
		protocol.MethodWrite:       (*session).write,
		protocol.MethodWait:        withProcess((*session).wait),
		protocol.MethodSubscribe:   (*session).subscribe,
		protocol.MethodUnsubscribe: withProcess((*session).unsubscribe),
		protocol.MethodRemove:      (*session).remove,
	}
}

func (s *session) call(ctx context.Context, req *jsonrpc2.Request) (any, error) {
	m, ok := methods[req.Method]
	if !ok {
		return nil, &jsonrpc2.Error{Code: protocol.CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", req.Method)}
	}
	params := json.RawMessage("{}")
	if req.Params != nil && string(*req.Params) != "null" {
		params = *req.Params
	}
	return m(s, ctx, params)
}

// decodeParams decodes strictly: an unknown field is an error that names it.
func decodeParams(method string, raw json.RawMessage, v any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return invalidParams("%s params: %v", method, err)
	}
	return nil
}

// process resolves an id; on an attach socket an empty id is the attached
// process.
func (s *session) process(id string) (*Process, error) {
	if id == "" {
		if s.proc != nil {
			return s.proc, nil
		}
		return nil, invalidParams("id is required")
	}
	return s.a.procs.get(id)
}

func withProcess(fn func(*session, context.Context, *Process, json.RawMessage) (any, error)) method {
	return func(s *session, ctx context.Context, raw json.RawMessage) (any, error) {
		var p protocol.IDParams
		if err := decodeParams("process", raw, &p); err != nil {
			return nil, err
		}
		proc, err := s.process(p.ID)
		if err != nil {
			return nil, err
		}
		return fn(s, ctx, proc, raw)
	}
}

func (s *session) start(_ context.Context, raw json.RawMessage) (any, error) {
	var sp protocol.StartParams
	if err := decodeParams(protocol.MethodStart, raw, &sp); err != nil {
		return nil, err
	}
	p, err := s.a.procs.start(sp)
	if err != nil {
		return nil, err
	}
	return p.Info(false), nil
}

func (s *session) list(context.Context, json.RawMessage) (any, error) {
	ps := s.a.procs.list()
	res := protocol.ListResult{Processes: make([]protocol.ProcessInfo, 0, len(ps))}
	for _, p := range ps {
		res.Processes = append(res.Processes, p.Info(true))
	}
	return res, nil
}

func (s *session) signal(_ context.Context, raw json.RawMessage) (any, error) {
	var sp protocol.SignalParams
	if err := decodeParams(protocol.MethodSignal, raw, &sp); err != nil {
		return nil, err
	}
	sig, err := protocol.ParseSignal(sp.Signal)
	if err != nil {
		return nil, invalidParams("signal: %v", err)
	}
	p, err := s.process(sp.ID)
	if err != nil {
		return nil, err
	}
	return protocol.Empty{}, p.Signal(sig)
}

func (s *session) resize(_ context.Context, raw json.RawMessage) (any, error) {
	var rp protocol.ResizeParams
	if err := decodeParams(protocol.MethodResize, raw, &rp); err != nil {
		return nil, err
	}
	p, err := s.process(rp.ID)
	if err != nil {
		return nil, err
	}
	return protocol.Empty{}, p.Resize(rp.WindowSize)
}

func (s *session) closeStdin(ctx context.Context, p *Process, _ json.RawMessage) (any, error) {
	if s.stream != nil {
		// In order after the stdin already received on this socket.
		return protocol.Empty{}, s.queueStdin(p, stdinItem{eof: true})
	}
	return protocol.Empty{}, s.directStdin(ctx, p.CloseStdin)
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
		return &jsonrpc2.Error{Code: protocol.CodeInternalError, Message: "stopped waiting for the process to read its stdin: " + context.Cause(ctx).Error()}
	}
}

func (s *session) write(ctx context.Context, raw json.RawMessage) (any, error) {
	var wp protocol.WriteParams
	if err := decodeParams(protocol.MethodWrite, raw, &wp); err != nil {
		return nil, err
	}
	if (wp.Text == "") == (len(wp.Data) == 0) {
		return nil, invalidParams("%s params: set exactly one of text and data", protocol.MethodWrite)
	}
	p, err := s.process(wp.ID)
	if err != nil {
		return nil, err
	}
	data := wp.Data
	if wp.Text != "" {
		data = []byte(wp.Text)
	}
	if s.stream != nil {
		return protocol.Empty{}, s.queueStdin(p, stdinItem{data: data})
	}
	return protocol.Empty{}, s.directStdin(ctx, func() error { return p.WriteStdin(data) })
}

func (s *session) wait(ctx context.Context, p *Process, _ json.RawMessage) (any, error) {
	select {
	case <-p.done:
		return p.Info(false), nil
	case <-ctx.Done():
		return nil, &jsonrpc2.Error{Code: protocol.CodeInternalError, Message: "wait abandoned: " + context.Cause(ctx).Error()}
	}
}

func (s *session) remove(_ context.Context, raw json.RawMessage) (any, error) {
	var ip protocol.IDParams
	if err := decodeParams(protocol.MethodRemove, raw, &ip); err != nil {
		return nil, err
	}
	if ip.ID == "" {
		return nil, invalidParams("id is required")
	}
	return protocol.Empty{}, s.a.procs.remove(ip.ID)
}
