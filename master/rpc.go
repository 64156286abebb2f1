package master

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// serveRPC serves a client's JSON-RPC socket.
func (m *Master) serveRPC(w http.ResponseWriter, r *http.Request, c *Claims) {
	ws, err := m.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	stream := wsrpc.New(ws, wsrpc.Options{Limit: int64(m.opts.MaxEventBytes), PingInterval: m.opts.PingInterval, WriteTimeout: m.opts.WriteTimeout})
	cs := &clientSession{m: m, claims: c, subs: map[string]context.CancelFunc{},
		log: m.log.With("conn", "client", "remote", r.RemoteAddr, "principal", c.Principal())}
	cs.ctx, cs.cancel = context.WithCancel(m.ctx)
	conn := jsonrpc2.NewConn(context.WithoutCancel(cs.ctx), stream, jsonrpc2.HandlerWithError(cs.handle), jsonrpc2.SetLogger(slog.NewLogLogger(cs.log.Handler(), slog.LevelDebug)))
	select {
	case <-conn.DisconnectNotify():
	case <-m.ctx.Done():
		stream.CloseWith(protocol.CloseGoingAway, ErrShutdown.Error())
		<-conn.DisconnectNotify()
	}
	cs.cancel()
	cs.wg.Wait()
}

type clientSession struct {
	m      *Master
	claims *Claims
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // subscriptions

	mu   sync.Mutex
	subs map[string]context.CancelFunc
	next int
}

func (cs *clientSession) handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
	internal, only := scope(cs.claims)
	switch req.Method {
	case masterapi.MethodRuntimeList:
		return cs.m.state.runtimes(internal, only), nil
	case masterapi.MethodRuntimeSubscribe:
		var p masterapi.SubscribeParams
		if err := params(req, &p); err != nil {
			return nil, err
		}
		if p.RuntimeID == "" {
			return nil, invalidParams("runtimeId missing (a runtime id, or \"*\" for every runtime)")
		}
		if p.RuntimeID != "*" {
			if err := CheckRuntimeID(p.RuntimeID); err != nil {
				return nil, invalidParams("runtimeId: " + err.Error())
			}
		}
		if only != "" && p.RuntimeID != only {
			return nil, &jsonrpc2.Error{Code: masterapi.CodeForbidden, Message: "a machine token subscribes only to its own runtime " + strconv.Quote(only)}
		}
		return cs.subscribe(conn, p, internal)
	case masterapi.MethodRuntimeUnsubscribe:
		var p masterapi.UnsubscribeParams
		if err := params(req, &p); err != nil {
			return nil, err
		}
		cs.mu.Lock()
		cancel, ok := cs.subs[p.Subscription]
		delete(cs.subs, p.Subscription)
		cs.mu.Unlock()
		if !ok {
			return nil, &jsonrpc2.Error{Code: protocol.CodeNotFound, Message: "subscription " + strconv.Quote(p.Subscription) + " not found"}
		}
		cancel()
		return struct{}{}, nil
	}
	return nil, &jsonrpc2.Error{Code: protocol.CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", req.Method)}
}

func params(req *jsonrpc2.Request, v any) error {
	if req.Params == nil {
		return invalidParams(req.Method + ": params missing")
	}
	dec := json.NewDecoder(bytesReader(*req.Params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidParams(fmt.Sprintf("%s: invalid params: %v", req.Method, err))
	}
	return nil
}

func invalidParams(msg string) error {
	return &jsonrpc2.Error{Code: protocol.CodeInvalidParams, Message: msg}
}

func (cs *clientSession) subscribe(conn *jsonrpc2.Conn, p masterapi.SubscribeParams, internal bool) (any, error) {
	cs.mu.Lock()
	if len(cs.subs) >= cs.m.opts.SubscriptionsPerConn {
		cs.mu.Unlock()
		return nil, &jsonrpc2.Error{Code: protocol.CodeLimit, Message: fmt.Sprintf("%d subscriptions on this socket: the limit", len(cs.subs))}
	}
	cs.next++
	id := "s" + strconv.Itoa(cs.next)
	ctx, cancel := context.WithCancel(cs.ctx)
	cs.subs[id] = cancel
	cs.mu.Unlock()
	sub := &subscription{cs: cs, conn: conn, id: id, p: p, internal: internal, logs: p.Logs == nil || *p.Logs,
		cursor: map[store.Key]uint64{}, sentRev: map[store.Key]uint64{}}
	// The starting point is fixed now, before the reply: what happens
	// after the reply is never missed.
	live := p.After == nil && p.Since == nil && !p.All
	for _, ref := range cs.m.state.watch(p.RuntimeID) {
		switch {
		case live:
			sub.cursor[ref.key] = ref.seq
		case p.After != nil:
			sub.cursor[ref.key] = after(&p, ref.key)
		}
	}
	cs.wg.Add(1)
	cs.m.metrics.subscriptions.Inc() // before the reply: a scrape after it counts this one
	go func() {
		defer cs.wg.Done()
		defer cancel()
		defer cs.m.metrics.subscriptions.Dec()
		sub.run(ctx)
	}()
	return masterapi.SubscribeResult{Subscription: id}, nil
}

// after returns p's replay cursor of k.
func after(p *masterapi.SubscribeParams, k store.Key) uint64 {
	if v, ok := p.After[k.Runtime+"/"+k.Machine]; ok {
		return v
	}
	return p.After[k.Machine]
}

type subscription struct {
	cs       *clientSession
	conn     *jsonrpc2.Conn
	id       string
	p        masterapi.SubscribeParams
	internal bool
	logs     bool
	cursor   map[store.Key]uint64
	sentRev  map[store.Key]uint64
}

// run sends the subscription's notifications until ctx ends or the
// socket fails. It reads committed state only and keeps its own cursor
// per machine, so a slow client never holds anything back: it falls
// behind and catches up from the store.
func (sub *subscription) run(ctx context.Context) {
	st := sub.cs.m.state
	for {
		changed := st.changes()
		for _, ref := range st.watch(sub.p.RuntimeID) {
			if ref.rev != sub.sentRev[ref.key] {
				n := masterapi.MachineNotification{Subscription: sub.id, Machine: view(ref.doc, sub.internal)}
				if err := sub.conn.Notify(ctx, masterapi.NotifyMachine, n); err != nil {
					return
				}
				sub.sentRev[ref.key] = ref.rev
			}
			if err := sub.sendEntries(ctx, ref); err != nil {
				if !errors.Is(err, context.Canceled) {
					sub.cs.log.Debug("subscription ended", "subscription", sub.id, "err", err)
				}
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func (sub *subscription) sendEntries(ctx context.Context, ref machineRef) error {
	if _, known := sub.cursor[ref.key]; !known && sub.p.After != nil {
		// A machine that appeared after the subscription.
		sub.cursor[ref.key] = after(&sub.p, ref.key)
	}
	for sub.cursor[ref.key] < ref.seq {
		batch := make([]json.RawMessage, 0, masterapi.EntriesPerNotification)
		last := sub.cursor[ref.key]
		err := sub.cs.m.state.entries(ctx, ref.key, last, masterapi.EntriesPerNotification, func(seq uint64, data []byte) bool {
			last = seq
			if (!sub.logs || sub.p.Since != nil) && skip(data, sub.logs, sub.p.Since) {
				return true
			}
			batch = append(batch, json.RawMessage(append([]byte(nil), data...)))
			return true
		})
		if err != nil {
			return err
		}
		if last == sub.cursor[ref.key] {
			return nil // nothing more committed (or kept)
		}
		sub.cursor[ref.key] = last
		if len(batch) == 0 {
			continue
		}
		n := masterapi.EntriesNotification{Subscription: sub.id, RuntimeID: ref.key.Runtime, MachineName: ref.key.Machine, Entries: batch}
		if err := sub.conn.Notify(ctx, masterapi.NotifyEntries, n); err != nil {
			return err
		}
	}
	return nil
}

// skip reports whether a subscription filters the entry out: logs when
// it does not want them, entries older than since.
func skip(data []byte, logs bool, since *time.Time) bool {
	var e struct {
		Type string    `json:"type"`
		Time time.Time `json:"time"`
	}
	json.Unmarshal(data, &e)
	if !logs && e.Type == masterapi.EntryLog {
		return true
	}
	return since != nil && e.Time.Before(*since)
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
