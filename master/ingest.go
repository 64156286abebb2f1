package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
)

// CodeForbidden answers an event for another machine than the token's.
const CodeForbidden = -32008

// serveIngest receives a bootstrapper's events (/api/websocket and
// /api/websocket-minor, as Che). Each event is checked against the
// machine token, deduplicated (bootId, endpoint, seq) and handed to the
// state. A ping is answered only once every event read before it is
// durable, so the bootstrapper's acknowledgement (docs/bootstrapper.md
// 5.2) means "stored".
func (m *Master) serveIngest(w http.ResponseWriter, r *http.Request) {
	c, e := m.machineAuth(r)
	if e != nil {
		m.refuse(w, r, e)
		return
	}
	done, ok := m.track()
	if !ok {
		writeJSONError(w, http.StatusServiceUnavailable, ErrShutdown.Error())
		return
	}
	defer done()
	ws, err := m.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	k := store.Key{Runtime: c.Runtime, Machine: c.Machine}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ic := &ingestConn{m: m, ws: ws, key: k, path: r.URL.Path, host: host,
		log: m.log.With("conn", "bootstrapper", "runtime", k.Runtime, "machine", k.Machine, "path", r.URL.Path, "remote", r.RemoteAddr)}
	ic.run()
}

type ingestConn struct {
	m    *Master
	ws   *websocket.Conn
	key  store.Key
	path string
	host string
	log  *slog.Logger

	gen     uint64 // the generation that makes the last accepted event durable
	pending int    // bytes accepted since the last wait for a commit
}

func (c *ingestConn) run() {
	m := c.m
	c.log.Info("bootstrapper connected")
	m.state.bootstrapperConn(c.key, true, false)
	ws := c.ws
	ws.SetReadLimit(int64(m.opts.MaxEventBytes))
	deadline := func() time.Time { return time.Now().Add(2*m.opts.PingInterval + time.Second) }
	ws.SetReadDeadline(deadline())
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(deadline()) })
	ws.SetPingHandler(func(data string) error {
		ws.SetReadDeadline(deadline())
		// The acknowledgement: everything read so far is durable first.
		if err := m.state.waitCommitted(c.gen); err != nil {
			return err
		}
		c.pending = 0
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(m.opts.WriteTimeout))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil
		}
		return err
	})

	// Owned goroutine: keepalive pings and the close at shutdown.
	stop := make(chan struct{})
	pinger := make(chan struct{})
	go func() {
		defer close(pinger)
		t := time.NewTicker(m.opts.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-m.ctx.Done():
				ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseGoingAway, ErrShutdown.Error()), time.Now().Add(time.Second))
				ws.Close()
				return
			case <-t.C:
				if ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(m.opts.WriteTimeout)) != nil {
					ws.Close()
					return
				}
			}
		}
	}()

	var endErr error
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			endErr = err
			break
		}
		ws.SetReadDeadline(deadline())
		if typ != websocket.TextMessage {
			c.reply(nil, protocol.CodeInvalidRequest, "binary frames are not accepted: send one JSON-RPC notification per text frame")
			continue
		}
		if err := c.handle(data); err != nil {
			endErr = err
			break
		}
	}
	close(stop)
	<-pinger
	ws.Close()
	var ce *websocket.CloseError
	normal := errors.As(endErr, &ce) && ce.Code == websocket.CloseNormalClosure
	if normal {
		// What was read is stored before the machine may turn STOPPED.
		m.state.waitCommitted(c.gen)
	}
	m.state.bootstrapperConn(c.key, false, normal)
	c.log.Info("bootstrapper disconnected", "err", endErr)
}

// frame is a bootstrapper frame decoded in one pass (encoding/json
// validates while it decodes): the JSON-RPC envelope with the params of
// every event method.
type frame struct {
	JSONRPC *string          `json:"jsonrpc"`
	ID      *json.RawMessage `json:"id"`
	Method  string           `json:"method"`
	Params  *event           `json:"params"`
}

// handle applies one frame; an error ends the connection.
func (c *ingestConn) handle(data []byte) error {
	var req frame
	if err := json.Unmarshal(data, &req); err != nil || (req.JSONRPC != nil && *req.JSONRPC != "2.0") {
		// Not a well-formed event: say precisely what is wrong.
		var generic struct {
			ID     *json.RawMessage `json:"id"`
			Method string           `json:"method"`
		}
		if derr := wsrpc.Decode(data, &generic); derr != nil {
			var re *wsrpc.Error
			if errors.As(derr, &re) {
				c.log.Warn("malformed frame refused", "err", re.Message)
				c.reply(re.ID, re.Code, re.Message)
				return nil
			}
			return derr
		}
		c.log.Warn("event refused", "method", generic.Method, "err", err)
		c.reply(generic.ID, protocol.CodeInvalidParams, fmt.Sprintf("%s: invalid params: %v", generic.Method, err))
		return nil
	}
	isRequest := req.ID != nil && string(*req.ID) != "null"
	switch req.Method {
	case methodBootstrapperStatus, methodInstallerStatus, methodInstallerLog, methodServerStatus:
	case "":
		return nil // a response: the master asked nothing, ignore
	default:
		if isRequest {
			c.reply(req.ID, protocol.CodeMethodNotFound, fmt.Sprintf("method %q not found: this endpoint receives bootstrapper events", req.Method))
		}
		return nil
	}
	if req.Params == nil {
		c.reply(req.ID, protocol.CodeInvalidParams, req.Method+": params missing")
		return nil
	}
	ev := req.Params
	if msg := check(req.Method, ev); msg != "" {
		c.log.Warn("event refused", "method", req.Method, "err", msg)
		c.reply(req.ID, protocol.CodeInvalidParams, req.Method+": "+msg)
		return nil
	}
	if rid := ev.runtimeID(); ev.MachineName != c.key.Machine || rid != c.key.Runtime {
		msg := fmt.Sprintf("%s: event for machine %q of runtime %q refused: the token is for machine %q of runtime %q",
			req.Method, ev.MachineName, rid, c.key.Machine, c.key.Runtime)
		c.log.Warn("event for another machine refused", "event_machine", ev.MachineName, "event_runtime", rid)
		c.reply(req.ID, CodeForbidden, msg)
		return nil
	}
	gen, _, err := c.m.state.ingest(c.key, c.path, c.host, req.Method, ev)
	if err != nil {
		return err
	}
	c.gen = gen
	c.pending += len(data)
	if c.pending >= c.m.opts.ConnPendingBytes {
		// Bounded per connection: a machine that floods waits for the
		// store instead of growing the master's memory.
		if err := c.m.state.waitCommitted(c.gen); err != nil {
			return err
		}
		c.pending = 0
	}
	if isRequest { // Che's bootstrapper sends notifications; answer a request anyway
		c.replyResult(req.ID)
	}
	return nil
}

// check returns what is wrong with an event's params, or "".
func check(method string, ev *event) string {
	switch {
	case ev.MachineName == "":
		return "machineName missing"
	case ev.RuntimeID.WorkspaceID == "":
		return "runtimeId.workspaceId missing"
	}
	switch method {
	case methodBootstrapperStatus:
		switch ev.Status {
		case "STARTING", "DONE", "FAILED":
		default:
			return fmt.Sprintf("status %q: want STARTING, DONE or FAILED", ev.Status)
		}
	case methodInstallerStatus:
		if ev.Installer == "" {
			return "installer missing"
		}
		switch ev.Status {
		case "STARTING", "RUNNING", "DONE", "FAILED":
		default:
			return fmt.Sprintf("status %q: want STARTING, RUNNING, DONE or FAILED", ev.Status)
		}
	case methodServerStatus:
		if ev.Installer == "" || ev.Server == "" {
			return "installer and server are required"
		}
		switch ev.Status {
		case "RUNNING", "STOPPED":
		default:
			return fmt.Sprintf("status %q: want RUNNING or STOPPED", ev.Status)
		}
	case methodInstallerLog:
		switch ev.Stream {
		case "STDOUT", "STDERR":
		default:
			return fmt.Sprintf("stream %q: want STDOUT or STDERR", ev.Stream)
		}
	}
	return ""
}

// reply sends a JSON-RPC error (id null for notifications and unreadable
// frames: JSON-RPC has no other way to answer them).
func (c *ingestConn) reply(id *json.RawMessage, code int, msg string) {
	resp := struct {
		JSONRPC string           `json:"jsonrpc"`
		ID      *json.RawMessage `json:"id"`
		Error   any              `json:"error"`
	}{"2.0", id, map[string]any{"code": code, "message": msg}}
	b, _ := json.Marshal(resp)
	c.ws.SetWriteDeadline(time.Now().Add(c.m.opts.WriteTimeout))
	if c.ws.WriteMessage(websocket.TextMessage, b) != nil {
		c.ws.Close()
	}
}

func (c *ingestConn) replyResult(id *json.RawMessage) {
	b, _ := json.Marshal(struct {
		JSONRPC string           `json:"jsonrpc"`
		ID      *json.RawMessage `json:"id"`
		Result  any              `json:"result"`
	}{"2.0", id, nil})
	c.ws.SetWriteDeadline(time.Now().Add(c.m.opts.WriteTimeout))
	if c.ws.WriteMessage(websocket.TextMessage, b) != nil {
		c.ws.Close()
	}
}
