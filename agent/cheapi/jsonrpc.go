package cheapi

// che-go-jsonrpc's framing, as Che's exec-agent and che-machine-exec speak
// it (docs/che-compatibility.md, ../che-protocols.md section 1): one
// object per text frame, binary frames skipped, no batches, a missing
// "jsonrpc" taken as "2.0", no id on parse errors, a "connected" hello.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/clock"
)

// JSON-RPC error codes of Che's agents.
const (
	codeParse          = -32700
	codeInvalidRequest = -32600
	codeNoMethod       = -32601
	codeInvalidParams  = -32602
	codeInternal       = -32603
	// Exec-agent's own.
	codeProcessAPI = 100
	codeNoProcess  = 101
	codeNotAlive   = 102
	closePolicy    = 1008
	closeGoingAway = 1001
	closeNormal    = 1000
	closeInternal  = 1011
	closeTooBig    = 1009
)

// rpcError is an error answer.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *rpcError) Error() string { return e.Message }

func errorf(code int, format string, args ...any) *rpcError {
	return &rpcError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// request is one incoming message.
type request struct {
	JSONRPC *string         `json:"jsonrpc"`
	Method  string          `json:"method"`
	ID      json.RawMessage `json:"id"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// notification reports whether the request expects no answer: Che's
// tunnel takes an absent or null id, or "", as a notification.
func (r *request) notification() bool {
	id := bytes.TrimSpace(r.ID)
	return len(id) == 0 || string(id) == "null" || string(id) == `""`
}

// tunnel is one JSON-RPC connection on /connect ("tunnel-N"). Everything
// it sends goes through one bounded queue, in order: answers, events of
// the exec-agent's processes and machine-exec's broadcasts. A peer that
// lets the queue stay full for the agent's write timeout is disconnected
// (1008).
type tunnel struct {
	s    *server
	id   string
	c    *conn
	sess *session

	out  chan []byte
	quit chan struct{}
	once sync.Once
	// why is the close frame the writer sends when it stops (quit).
	whyMu sync.Mutex
	why   *websocket.CloseError
}

// serveConnect serves GET /connect.
func (s *server) serveConnect(w http.ResponseWriter, r *http.Request, sess *session) {
	c, err := s.upgrade(w, r, sess)
	if err != nil {
		sess.end(err)
		return
	}
	t := &tunnel{s: s, c: c, sess: sess, out: make(chan []byte, s.opts.Queue), quit: make(chan struct{})}
	s.mu.Lock()
	s.seq++
	t.id = "tunnel-" + strconv.Itoa(s.seq)
	sess.log = sess.log.With("tunnel", t.id)
	s.tunnels[t.id] = t
	s.mu.Unlock()

	writerDone := make(chan struct{})
	go func() { defer close(writerDone); t.writer() }()
	t.notify("connected", struct {
		Time    time.Time `json:"time"`
		Channel string    `json:"channel"`
		Tunnel  string    `json:"tunnel"`
		Text    string    `json:"text"`
	}{time.Now(), t.id, t.id, "Hello!"})

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		t.readLoop()
	}()
	select {
	case <-readDone:
	case <-writerDone: // a failed write, or a stop (a queue overflow)
	case <-sess.ctx.Done():
		// At once, not after the queue: a client that does not read
		// must not hold up the agent's shutdown.
		c.closeWith(closeGoingAway, context.Cause(sess.ctx).Error())
		c.close()
	}
	t.stop(0, "")
	<-writerDone
	c.awaitPeerClose(readDone)
	c.close()
	<-readDone
	s.mu.Lock()
	delete(s.tunnels, t.id)
	s.mu.Unlock()
	s.dropSubscriber(t)
	sess.end(errors.New("disconnected"))
}

// stop ends the writer; code > 0 is sent as a close frame after the queued
// messages.
func (t *tunnel) stop(code int, reason string) {
	t.whyMu.Lock()
	if t.why == nil && code > 0 {
		t.why = &websocket.CloseError{Code: code, Text: reason}
	}
	t.whyMu.Unlock()
	t.once.Do(func() { close(t.quit) })
}

func (t *tunnel) writer() {
	for {
		var b []byte
		select {
		case b = <-t.out:
		case <-t.quit:
			// Drain what was queued before the stop, then the close frame.
			select {
			case b = <-t.out:
			default:
				t.whyMu.Lock()
				why := t.why
				t.whyMu.Unlock()
				if why != nil {
					t.c.closeWith(why.Code, why.Text)
				}
				return
			}
		}
		if t.c.write(websocket.TextMessage, b) != nil {
			return
		}
	}
}

// send queues one message. While the queue is full it waits (pushing
// back on the process whose events these are, through the agent's flow
// control), at most the agent's write timeout, after which the client is
// disconnected (policy violation, 1008).
func (t *tunnel) send(b []byte) {
	select {
	case t.out <- b:
		return
	case <-t.quit:
		return
	default:
	}
	o := t.s.a.Settings()
	stop := clock.Or(o.Clock).AfterFunc(o.WriteTimeout, func() {
		t.sess.log.Warn("client does not read: closing", "queued", len(t.out))
		t.stop(closePolicy, fmt.Sprintf("client too slow: %d messages queued for %s", cap(t.out), o.WriteTimeout))
	})
	defer stop()
	select {
	case t.out <- b:
	case <-t.quit:
	}
}

func (t *tunnel) sendJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		t.sess.log.Error("encode", "err", err)
		return
	}
	t.send(b)
}

func (t *tunnel) notify(method string, params any) {
	t.sendJSON(struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  any    `json:"params"`
	}{"2.0", method, params})
}

func (t *tunnel) reply(id json.RawMessage, result any) {
	t.sendJSON(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  any             `json:"result"`
	}{"2.0", id, result})
}

// replyError answers an error; a nil id is omitted, as Che does.
func (t *tunnel) replyError(id json.RawMessage, e *rpcError) {
	t.sendJSON(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id,omitempty"`
		Error   *rpcError       `json:"error"`
	}{"2.0", id, e})
}

// readLoop handles the messages in order, each to its end (every handler
// is quick: starting, signalling, copying a log).
func (t *tunnel) readLoop() {
	for {
		typ, b, err := t.c.read()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) && errors.Is(err, websocket.ErrReadLimit) {
				t.stop(closeTooBig, fmt.Sprintf("message exceeds the limit of %d bytes (agent flag -max-message)", t.s.a.Settings().MaxMessageBytes))
			}
			return
		}
		if typ != websocket.TextMessage {
			continue // Che's tunnel skips other frames
		}
		t.handle(b)
	}
}

func (t *tunnel) handle(b []byte) {
	var req request
	if err := json.Unmarshal(b, &req); err != nil {
		t.replyError(nil, &rpcError{codeParse, "Error while parsing request"})
		return
	}
	if req.JSONRPC != nil && *req.JSONRPC != "2.0" {
		t.replyError(nil, errorf(codeInvalidRequest, "Version %s is not supported, please use 2.0", *req.JSONRPC))
		return
	}
	if req.Method == "" {
		if req.Result != nil || req.Error != nil {
			return // a response to a request the agent never sends
		}
		if !req.notification() {
			t.replyError(compact(req.ID), errorf(codeInvalidRequest, "Invalid request: no method"))
		}
		return
	}
	notif := req.notification()
	var id json.RawMessage
	if !notif {
		id = compact(req.ID)
	}
	h, ok := t.s.methods()[req.Method]
	if !ok {
		if !notif {
			t.replyError(id, errorf(codeNoMethod, "No such method %s", req.Method))
		}
		return
	}
	if err := checkParams(req.Params); err != nil {
		if !notif {
			t.replyError(id, err)
		}
		return
	}
	result, after, err := h(t, req.Params)
	if err != nil {
		if !notif {
			var re *rpcError
			if !errors.As(err, &re) {
				re = &rpcError{codeInternal, err.Error()}
			}
			t.replyError(id, re)
		}
		return
	}
	if !notif {
		t.reply(id, result)
	}
	if after != nil {
		after()
	}
}

// checkParams applies Che's params rules: they must be present (Che:
// -32700 "Couldn't parse params"); null is refused with a clear error,
// where Che's exec-agent crashes.
func checkParams(p json.RawMessage) *rpcError {
	p = bytes.TrimSpace(p)
	switch {
	case len(p) == 0:
		return &rpcError{codeParse, "Couldn't parse params"}
	case string(p) == "null":
		return &rpcError{codeInvalidParams, "params must be an object, not null"}
	}
	return nil
}

// decodeParams decodes params into v; any mismatch is Che's -32700.
func decodeParams(p json.RawMessage, v any) error {
	if err := json.Unmarshal(p, v); err != nil {
		return &rpcError{codeParse, "Couldn't parse params"}
	}
	return nil
}

func compact(id json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, id) != nil {
		return id
	}
	return buf.Bytes()
}

// handler answers a request: its result, and optionally what to do once
// the answer is queued (events that follow it, such as process_started).
type handler func(t *tunnel, params json.RawMessage) (result any, after func(), err error)

// methods are the exec-agent's and che-machine-exec's methods: their
// names do not overlap, so one /connect serves both.
func (s *server) methods() map[string]handler {
	return methodTable
}

var methodTable map[string]handler

func init() {
	methodTable = map[string]handler{
		"process.start":            execStart,
		"process.kill":             execKill,
		"process.subscribe":        execSubscribe,
		"process.unsubscribe":      execUnsubscribe,
		"process.updateSubscriber": execUpdateSubscriber,
		"process.getLogs":          execGetLogs,
		"process.getProcess":       execGetProcess,
		"process.getProcesses":     execGetProcesses,
		"create":                   meCreate,
		"check":                    meCheck,
		"resize":                   meResize,
		"listContainers":           meListContainers,
	}
}

// broadcast sends a notification to every tunnel (che-machine-exec's
// onExecExit and onExecError go to all).
func (s *server) broadcast(method string, params any) {
	s.mu.Lock()
	ts := make([]*tunnel, 0, len(s.tunnels))
	for _, t := range s.tunnels {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	for _, t := range ts {
		t.notify(method, params)
	}
}

func (s *server) tunnel(id string) *tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tunnels[id]
}
