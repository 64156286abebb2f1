package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// serveIngest receives a bootstrapper's events (/api/websocket and
// /api/websocket-minor, as Che). Each event is checked against the
// machine token, deduplicated (bootId, endpoint, seq) and handed to the
// state. A ping is answered only once every event read before it is
// durable, so the bootstrapper's acknowledgement (docs/bootstrapper.md
// 5.2) means "stored".
//
// The handshake's response says what the master accepts (che.HeaderMaxMessage,
// che.HeaderCapabilities), so that a porthole bootstrapper never sends a
// frame the master refuses. One that comes anyway (Che's bootstrapper, or
// another limit since) is read past, answered with a JSON-RPC error and
// journaled as a lost line (tooLarge): the next ping acknowledges past it,
// so it cannot stop the stream. Only a frame above wsrpc.HardLimitFactor
// times the limit closes the connection (1009).
func (m *Master) serveIngest(w http.ResponseWriter, r *http.Request, c *Claims) {
	hdr := http.Header{}
	hdr.Set(che.HeaderMaxMessage, strconv.Itoa(m.opts.MaxEventBytes))
	hdr.Set(che.HeaderCapabilities, che.CapServerStatus)
	ws, err := m.upgrader.Upgrade(w, r, hdr)
	if err != nil {
		return // the upgrader answered
	}
	k := store.Key{Runtime: c.Runtime, Machine: c.Machine}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ic := &ingestConn{m: m, key: k, path: r.URL.Path, host: host,
		log: m.log.With("conn", "bootstrapper", "runtime", k.Runtime, "machine", k.Machine, "path", r.URL.Path, "remote", r.RemoteAddr)}
	ic.stream = wsrpc.New(ws, wsrpc.Options{
		Limit:        int64(m.opts.MaxEventBytes),
		OnTooLarge:   ic.tooLarge,
		PingInterval: m.opts.PingInterval,
		WriteTimeout: m.opts.WriteTimeout,
		Decode:       ic.decode,
		OnBinary: func([]byte) error {
			ic.stream.WriteError(nil, protocol.CodeInvalidRequest, "binary frames are not accepted: send one JSON-RPC notification per text frame")
			return nil
		},
	})
	ic.run()
}

type ingestConn struct {
	m      *Master
	stream *wsrpc.Stream
	key    store.Key
	path   string
	host   string
	log    *slog.Logger

	// Owned by the reading goroutine (run, and the ping handler it runs).
	gen     uint64 // the generation that makes the last accepted event durable
	pending int    // bytes accepted since the last window boundary
	// prevGen makes durable everything accepted before the last window
	// boundary (see handle).
	prevGen uint64
	// lastAt is the time of the last event read: a refused frame's entry
	// takes it, so that it is journaled where the frame came.
	lastAt time.Time
}

func (c *ingestConn) run() {
	m := c.m
	c.log.Info("bootstrapper connected")
	m.state.bootstrapperConn(c.key, true, false)
	// The acknowledgement: everything read so far is durable first.
	c.stream.AckPings(func() error {
		if err := m.state.waitCommitted(c.gen); err != nil {
			return err
		}
		c.pending, c.prevGen = 0, c.gen
		return nil
	})
	closed := make(chan struct{})
	stopClose := context.AfterFunc(m.ctx, func() {
		defer close(closed)
		c.stream.CloseWith(protocol.CloseGoingAway, ErrShutdown.Error())
	})
	var endErr error
	for {
		var f frame
		if endErr = c.stream.ReadObject(&f); endErr != nil {
			break
		}
		if endErr = c.handle(&f); endErr != nil {
			break
		}
	}
	if !stopClose() {
		<-closed
	}
	c.stream.Close()
	var ce *websocket.CloseError
	normal := errors.As(endErr, &ce) && ce.Code == websocket.CloseNormalClosure
	if normal {
		// What was read is stored before the machine may turn STOPPED.
		m.state.waitCommitted(c.gen)
	}
	m.state.bootstrapperConn(c.key, false, normal)
	c.log.Info("bootstrapper disconnected", "err", endErr)
}

// tooLarge journals a frame above the limit, read past unparsed, as one
// lost line (its seq is unknown: a frame resent after a broken connection
// is counted again).
func (c *ingestConn) tooLarge(size int64) {
	c.log.Warn("event above the limit refused", "bytes", size, "limit", c.m.opts.MaxEventBytes)
	c.m.metrics.ingestRefused.Inc()
	c.throttle(int(min(size, int64(c.m.opts.MaxEventBytes)))) // refused bytes count too; a shutdown ends the reads anyway
	gen, err := c.m.state.refused(c.key, c.lastAt, size, int64(c.m.opts.MaxEventBytes))
	if err == nil {
		c.gen = max(c.gen, gen)
	}
}

// frame is a bootstrapper frame decoded in one pass (encoding/json
// validates while it decodes): the JSON-RPC envelope with the params of
// every event method, and the size of the text it came from.
type frame struct {
	JSONRPC *string          `json:"jsonrpc"`
	ID      *json.RawMessage `json:"id"`
	Method  string           `json:"method"`
	Params  *che.Event       `json:"params"`
	size    int
}

// decode reads one text frame into v, a *frame (wsrpc.Options.Decode).
// What is not a well-formed event gets a *wsrpc.Error saying precisely
// what is wrong, which the stream answers (id null when unknown) before
// reading on.
func (c *ingestConn) decode(data []byte, v any) error {
	f := v.(*frame)
	err := json.Unmarshal(data, f)
	if err == nil && (f.JSONRPC == nil || *f.JSONRPC == "2.0") {
		f.size = len(data)
		return nil
	}
	var generic struct {
		ID     *json.RawMessage `json:"id"`
		Method string           `json:"method"`
	}
	if derr := wsrpc.Decode(data, &generic); derr != nil {
		var re *wsrpc.Error
		if errors.As(derr, &re) {
			c.log.Warn("malformed frame refused", "err", re.Message)
		}
		return derr
	}
	c.log.Warn("event refused", "method", generic.Method, "err", err)
	return &wsrpc.Error{ID: generic.ID, Code: protocol.CodeInvalidParams, Message: fmt.Sprintf("%s: invalid params: %v", generic.Method, err)}
}

// handle applies one frame; an error ends the connection.
func (c *ingestConn) handle(f *frame) error {
	isRequest := f.ID != nil && string(*f.ID) != "null"
	switch {
	case f.Method == "":
		return nil // a response: the master asked nothing, ignore
	case !che.Known(f.Method):
		if isRequest {
			c.stream.WriteError(f.ID, protocol.CodeMethodNotFound, fmt.Sprintf("method %q not found: this endpoint receives bootstrapper events", f.Method))
		}
		return nil
	case f.Params == nil:
		c.stream.WriteError(f.ID, protocol.CodeInvalidParams, f.Method+": params missing")
		return nil
	}
	ev := f.Params
	if err := che.Validate(f.Method, ev); err != nil {
		c.log.Warn("event refused", "method", f.Method, "err", err)
		c.stream.WriteError(f.ID, protocol.CodeInvalidParams, f.Method+": "+err.Error())
		return nil
	}
	if rid := ev.RuntimeID.String(); ev.MachineName != c.key.Machine || rid != c.key.Runtime {
		msg := fmt.Sprintf("%s: event for machine %q of runtime %q refused: the token is for machine %q of runtime %q",
			f.Method, ev.MachineName, rid, c.key.Machine, c.key.Runtime)
		c.log.Warn("event for another machine refused", "event_machine", ev.MachineName, "event_runtime", rid)
		c.stream.WriteError(f.ID, masterapi.CodeForbidden, msg)
		return nil
	}
	if err := c.throttle(f.size); err != nil {
		return err
	}
	if !ev.Time.IsZero() {
		c.lastAt = ev.Time
	}
	gen, _, err := c.m.state.ingest(c.key, c.path, c.host, f.Method, ev)
	if err != nil {
		return err
	}
	c.gen = max(c.gen, gen)
	c.pending += f.size
	c.m.metrics.ingestEvents.Inc()
	c.m.metrics.ingestBytes.Add(float64(f.size))
	if c.pending >= c.m.opts.ConnPendingBytes/2 {
		// Bounded per connection: a machine that floods waits for the
		// store instead of growing the master's memory. The bound is two
		// windows of half of it: at the end of one, the reads wait for
		// the commit of the one before, so the next window is read while
		// this one is committed (waiting for this one would stop the
		// reads for every commit, the group commit's delay included).
		if err := c.m.state.waitCommitted(c.prevGen); err != nil {
			return err
		}
		c.pending, c.prevGen = 0, c.gen
	}
	if isRequest { // Che's bootstrapper sends notifications; answer a request anyway
		c.stream.WriteObject(result{"2.0", f.ID, nil}) // a failed write ends the reads
	}
	return nil
}

// throttle waits while the machine pushes faster than
// Options.MachineRate (rate.go), or until the master shuts down.
func (c *ingestConn) throttle(n int) error {
	d := c.m.rates.take(c.key, n)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.m.ctx.Done():
		return errClosed
	}
}

// result is a JSON-RPC response with a null result.
type result struct {
	JSONRPC string           `json:"jsonrpc"`
	ID      *json.RawMessage `json:"id"`
	Result  any              `json:"result"`
}
