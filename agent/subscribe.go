package agent

import (
	"context"
	"errors"

	"github.com/porthole-dev/porthole/protocol"
)

// subscribe follows a process on a control socket: its output, gaps, ends
// of streams and exit go out as events on the connection the request came
// on, after the reply. One subscription per process and connection, at
// most 64 per connection.
func (s *session) subscribe(_ context.Context, c *call) (any, error) {
	var sp protocol.SubscribeParams
	if err := decodeParams(protocol.MethodSubscribe, c.params, &sp); err != nil {
		return nil, err
	}
	if s.stream == nil || c.conn == nil {
		return nil, &protocol.Error{Code: protocol.CodeMethodNotFound, Message: "process.subscribe needs a WebSocket control socket"}
	}
	p, err := s.lookup(sp.ID)
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
		return nil, &protocol.Error{Code: protocol.CodeLimit, Message: "subscription limit reached: 64 per connection"}
	}
	subCtx, cancel := context.WithCancelCause(s.ctx)
	s.subs[p.id] = cancel
	s.mu.Unlock()
	sk := &eventSink{s: s, conn: c.conn, id: p.id}
	ok := s.goTracked(func() {
		defer func() {
			s.mu.Lock()
			delete(s.subs, p.id)
			s.mu.Unlock()
			cancel(nil)
		}()
		if c.replied != nil {
			select {
			case <-c.replied:
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
		return nil, errClosing
	}
	return protocol.Empty{}, nil
}

// unsubscribe ends the connection's subscription to p.
func (s *session) unsubscribe(_ context.Context, p *process, _ *call) (any, error) {
	s.mu.Lock()
	cancel, ok := s.subs[p.id]
	s.mu.Unlock()
	if !ok {
		return nil, invalidParams("not subscribed to process %s", p.id)
	}
	cancel(errors.New("unsubscribed"))
	return protocol.Empty{}, nil
}
