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
	"syscall"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

// serveRPCSocket serves the control socket.
func (a *Agent) serveRPCSocket(w http.ResponseWriter, r *http.Request, s *session) {
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
func (a *Agent) serveRPCPost(w http.ResponseWriter, r *http.Request, s *session) {
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
	// The call may be long (process.wait): the server's read and write
	// deadlines, set when the request arrived, would end it. No more is
	// read; the response gets WriteTimeout from the call's end.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	// The call ends with the request or with the agent.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	defer context.AfterFunc(r.Context(), cancel)()
	res, err := s.call(ctx, newCall(&req, nil))
	rc.SetWriteDeadline(time.Now().Add(a.opts.WriteTimeout))
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

// toRPCError puts an error of the process model on the wire: a
// *protocol.Error keeps its code; anything else is an internal error.
func toRPCError(err error) *jsonrpc2.Error {
	var e *protocol.Error
	if errors.As(err, &e) {
		return &jsonrpc2.Error{Code: int64(e.Code), Message: e.Message}
	}
	return &jsonrpc2.Error{Code: protocol.CodeInternalError, Message: err.Error()}
}

// errClosing refuses a request that arrives while its connection closes.
var errClosing = &protocol.Error{Code: protocol.CodeInternalError, Message: "connection closing"}

// call is one request as a method sees it.
type call struct {
	method string
	params json.RawMessage // "{}" when the request has none
	// conn is the control socket the request came on (nil for an HTTP
	// request): a subscription sends its events there. s.conn may not be
	// set yet when the first request arrives.
	conn *jsonrpc2.Conn
	// replied, when set, is closed once the reply is on the wire, so that
	// a subscription's events never precede it.
	replied <-chan struct{}
}

func newCall(req *jsonrpc2.Request, conn *jsonrpc2.Conn) *call {
	c := &call{method: req.Method, params: json.RawMessage("{}"), conn: conn}
	if req.Params != nil && string(*req.Params) != "null" {
		c.params = *req.Params
	}
	return c
}

// Handle implements jsonrpc2.Handler. It runs on the connection's read
// loop, so requests are handled in order; process.wait runs on a tracked
// goroutine so that it blocks nothing else.
func (s *session) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	c := newCall(req, conn)
	if req.Method == protocol.MethodWait {
		if !s.goTracked(func() { s.reply(conn, req, nil)(s.call(s.ctx, c)) }) {
			s.reply(conn, req, nil)(nil, errClosing)
		}
		return
	}
	var replied chan struct{}
	if req.Method == protocol.MethodSubscribe || req.Method == protocol.MethodPortsSubscribe {
		replied = make(chan struct{})
		c.replied = replied
	}
	s.reply(conn, req, replied)(s.call(ctx, c))
}

// reply returns a func that sends the result or error of req; replied,
// when set, is closed once the reply is on the wire.
func (s *session) reply(conn *jsonrpc2.Conn, req *jsonrpc2.Request, replied chan struct{}) func(any, error) {
	return func(res any, err error) {
		if replied != nil {
			defer close(replied)
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

type method func(s *session, ctx context.Context, c *call) (any, error)

// methods is the JSON-RPC method table.
var methods = map[string]method{
	protocol.MethodAgentInfo: func(s *session, _ context.Context, _ *call) (any, error) { return s.a.info(), nil },
	protocol.MethodStart:     (*session).start,
	protocol.MethodList:      (*session).list,
	protocol.MethodGet: withProcess(func(_ *session, _ context.Context, p *process, _ *call) (any, error) {
		return p.Info(true), nil
	}),
	protocol.MethodSignal: (*session).signal,
	protocol.MethodKill: withProcess(func(s *session, _ context.Context, p *process, _ *call) (any, error) {
		s.audit(protocol.MethodKill, "process", p.id)
		return protocol.Empty{}, p.Signal(syscall.SIGKILL)
	}),
	protocol.MethodResize:      (*session).resize,
	protocol.MethodCloseStdin:  withProcess((*session).closeStdin),
	protocol.MethodWrite:       (*session).write,
	protocol.MethodWait:        withProcess((*session).wait),
	protocol.MethodSubscribe:   (*session).subscribe,
	protocol.MethodUnsubscribe: withProcess((*session).unsubscribe),
	protocol.MethodRemove:      (*session).remove,

	protocol.MethodPortsList:        (*session).portsList,
	protocol.MethodPortsSubscribe:   (*session).portsSubscribe,
	protocol.MethodPortsUnsubscribe: (*session).portsUnsubscribe,
}

func (s *session) call(ctx context.Context, c *call) (any, error) {
	m, ok := methods[c.method]
	if !ok {
		return nil, protocol.Errorf(protocol.CodeMethodNotFound, "method %q not found", c.method)
	}
	return m(s, ctx, c)
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

// lookup resolves an id; on an attach socket an empty id is the attached
// process.
func (s *session) lookup(id string) (*process, error) {
	if id == "" {
		if s.proc != nil {
			return s.proc, nil
		}
		return nil, invalidParams("id is required")
	}
	return s.a.procs.get(id)
}

func withProcess(fn func(*session, context.Context, *process, *call) (any, error)) method {
	return func(s *session, ctx context.Context, c *call) (any, error) {
		var p protocol.IDParams
		if err := decodeParams("process", c.params, &p); err != nil {
			return nil, err
		}
		proc, err := s.lookup(p.ID)
		if err != nil {
			return nil, err
		}
		return fn(s, ctx, proc, c)
	}
}

func (s *session) start(_ context.Context, c *call) (any, error) {
	var sp protocol.StartParams
	if err := decodeParams(protocol.MethodStart, c.params, &sp); err != nil {
		return nil, err
	}
	p, err := s.a.procs.start(sp)
	if err != nil {
		s.audit(protocol.MethodStart, "argv", sp.Argv, "tty", sp.TTY, "err", err)
		return nil, err
	}
	s.audit(protocol.MethodStart, "process", p.id, "argv", p.argv, "tty", sp.TTY, "user", sp.User)
	return p.Info(false), nil
}

func (s *session) list(context.Context, *call) (any, error) {
	ps := s.a.procs.list()
	res := protocol.ListResult{Processes: make([]protocol.ProcessInfo, 0, len(ps))}
	for _, p := range ps {
		res.Processes = append(res.Processes, p.Info(true))
	}
	return res, nil
}

func (s *session) signal(_ context.Context, c *call) (any, error) {
	var sp protocol.SignalParams
	if err := decodeParams(protocol.MethodSignal, c.params, &sp); err != nil {
		return nil, err
	}
	sig, err := protocol.ParseSignal(sp.Signal)
	if err != nil {
		return nil, invalidParams("signal: %v", err)
	}
	p, err := s.lookup(sp.ID)
	if err != nil {
		return nil, err
	}
	s.audit(protocol.MethodSignal, "process", p.id, "signal", sp.Signal)
	return protocol.Empty{}, p.Signal(sig)
}

func (s *session) resize(_ context.Context, c *call) (any, error) {
	var rp protocol.ResizeParams
	if err := decodeParams(protocol.MethodResize, c.params, &rp); err != nil {
		return nil, err
	}
	p, err := s.lookup(rp.ID)
	if err != nil {
		return nil, err
	}
	return protocol.Empty{}, p.Resize(rp.WindowSize)
}

func (s *session) closeStdin(ctx context.Context, p *process, _ *call) (any, error) {
	if s.stream != nil {
		// In order after the stdin already received on this socket.
		return protocol.Empty{}, s.queueStdin(p, stdinItem{eof: true})
	}
	return protocol.Empty{}, s.directStdin(ctx, p.CloseStdin)
}

func (s *session) write(ctx context.Context, c *call) (any, error) {
	var wp protocol.WriteParams
	if err := decodeParams(protocol.MethodWrite, c.params, &wp); err != nil {
		return nil, err
	}
	if (wp.Text == "") == (len(wp.Data) == 0) {
		return nil, invalidParams("%s params: set exactly one of text and data", protocol.MethodWrite)
	}
	p, err := s.lookup(wp.ID)
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

func (s *session) wait(ctx context.Context, p *process, _ *call) (any, error) {
	select {
	case <-p.done:
		return p.Info(false), nil
	case <-ctx.Done():
		return nil, protocol.Errorf(protocol.CodeInternalError, "wait abandoned: %v", context.Cause(ctx))
	}
}

func (s *session) remove(_ context.Context, c *call) (any, error) {
	var ip protocol.IDParams
	if err := decodeParams(protocol.MethodRemove, c.params, &ip); err != nil {
		return nil, err
	}
	if ip.ID == "" {
		return nil, invalidParams("id is required")
	}
	return protocol.Empty{}, s.a.procs.remove(ip.ID)
}
