package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"

	"github.com/porthole-dev/porthole/protocol"
)

// defaultUpgrader is Accept's upgrader when none is given. Agents send no
// Origin header, so gorilla's same-origin check passes them.
var defaultUpgrader = websocket.Upgrader{
	HandshakeTimeout: 30 * time.Second,
	ReadBufferSize:   bufferSize,
	WriteBufferSize:  bufferSize,
}

// Session is the master's end of one agent's tunnel.
type Session struct {
	ys        *yamux.Session
	conn      *muxConn
	transport *http.Transport
	violation atomic.Bool // the agent opened a stream
	// dataRetries counts requests sent again over a stream after their
	// data connection failed before the agent answered.
	dataRetries atomic.Int64
	dial        dialState // data connections (data.go)
}

// AcceptOptions configure AcceptWith. Zero values mean the documented
// defaults.
type AcceptOptions struct {
	// Upgrader upgrades the tunnel's request; nil means a default one. Its
	// write buffer is replaced by the tunnel's pooled one.
	Upgrader *websocket.Upgrader
	// DialTimeout, when > 0, makes the session carry proxied protocol
	// switches over data connections the agent dials back (data.go), when
	// the agent announces them: the caller
	// must then pass the agent's data handshakes to AcceptData. It is how
	// long a request waits for its data connection before it goes through
	// a stream of the tunnel instead (DefaultDialTimeout is a sensible
	// value). 0: everything goes through streams.
	DialTimeout time.Duration
	// OnPath, if set, is called for every proxied protocol switch: data
	// is true when it is carried by a data connection, false by a stream
	// of the tunnel.
	OnPath func(data bool)
	// Logger receives the session's logs (a data connection that failed);
	// nil discards them.
	Logger *slog.Logger
}

// Accept upgrades r, an agent's tunnel request the caller has already
// authenticated, to a WebSocket and returns the session over it. up may be
// nil for a default upgrader; its write buffer is replaced by the tunnel's
// pooled one (writeBufferPool). On failure the upgrader has answered r.
// The session lives until Close, or until the agent goes away or stops
// answering keepalives; the caller's handler may return at once.
func Accept(w http.ResponseWriter, r *http.Request, up *websocket.Upgrader) (*Session, error) {
	return AcceptWith(w, r, AcceptOptions{Upgrader: up})
}

// AcceptWith is Accept with options: o.DialTimeout > 0 enables data
// connections, with agents that announce them (HeaderFeatures).
func AcceptWith(w http.ResponseWriter, r *http.Request, o AcceptOptions) (*Session, error) {
	up := o.Upgrader
	if up == nil {
		up = &defaultUpgrader
	}
	u := *up
	u.WriteBufferSize, u.WriteBufferPool = writeBufferSize, writeBufferPool
	ws, err := u.Upgrade(w, r, nil)
	if err != nil {
		return nil, fmt.Errorf("tunnel: upgrade: %w", err)
	}
	c := newMuxConn(ws)
	cfg := yamuxConfig(nil)
	// The agent only accepts streams: one it opens is refused (see
	// refuseStreams), and at most one waits meanwhile (yamux resets the
	// others), so an agent cannot make the master buffer streams.
	cfg.AcceptBacklog = 1
	ys, err := yamux.Client(c, cfg)
	if err != nil { // only for an invalid config
		c.Close()
		return nil, err
	}
	s := &Session{ys: ys, conn: c}
	s.dial.onPath, s.dial.log = o.OnPath, o.Logger
	if s.dial.log == nil {
		s.dial.log = slog.New(slog.DiscardHandler)
	}
	if o.DialTimeout > 0 && hasFeature(r.Header, FeatureData) {
		s.dial.timeout = o.DialTimeout
	}
	s.dial.pending, s.dial.gone, s.dial.conns = map[string]chan *dataConn{}, map[string]string{}, map[*dataConn]struct{}{}
	s.dial.ctx, s.dial.cancel = context.WithCancel(context.Background())
	s.transport = &http.Transport{
		// Every connection is a new stream; the address is ignored.
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			st, err := s.ys.OpenStream()
			if err != nil {
				return nil, s.closedError(err)
			}
			return st, nil
		},
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	go s.refuseStreams()
	return s, nil
}

// ErrClosed is the error of a request through a tunnel that has ended.
var ErrClosed = errors.New("agent tunnel closed: the agent is not connected")

func (s *Session) closedError(err error) error {
	if s.violation.Load() {
		return ErrAgentOpenedStream
	}
	if s.ys.IsClosed() {
		if cause := s.conn.err(); cause != nil && !errors.Is(cause, io.EOF) && !errors.Is(cause, net.ErrClosed) {
			return fmt.Errorf("%w (%v)", ErrClosed, cause)
		}
		return ErrClosed
	}
	return fmt.Errorf("agent tunnel: %w", err)
}

// ErrAgentOpenedStream is why a session ended whose agent opened a
// stream: the master opens them, never the agent (a protocol violation,
// which would otherwise make the master buffer what the agent sends).
var ErrAgentOpenedStream = errors.New("agent tunnel closed: the agent opened a stream (only the master opens streams)")

// refuseStreams ends the session when the agent opens a stream.
func (s *Session) refuseStreams() {
	st, err := s.ys.AcceptStream()
	if err != nil {
		s.closeData() // the session ended: its data connections too
		return
	}
	s.violation.Store(true)
	st.Close()
	s.Close()
}

// Alive reports whether the agent answers a keepalive ping within
// timeout: false once the session has ended or when the ping goes
// unanswered (the session is then closed).
func (s *Session) Alive(timeout time.Duration) bool {
	if s.ys.IsClosed() {
		return false
	}
	pong := make(chan error, 1)
	go func() {
		_, err := s.ys.Ping()
		pong <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-pong:
		if err == nil {
			return true
		}
	case <-t.C:
	}
	s.Close()
	return false
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.ys.CloseChan() }

// Close ends the session, every stream in it and every data connection
// of it.
func (s *Session) Close() error {
	err := s.ys.Close()
	s.closeData()
	s.transport.CloseIdleConnections()
	return err
}

// Dialer returns a WebSocket dialer whose every connection is a new
// stream of the tunnel (the URL's host is ignored): for the master's own
// requests to the agent, such as a port forward per request of a
// machine's server (servePort). They are trusted as the proxied ones are.
// Streams, not data connections: a stream opens without a round trip,
// which short connections need more than a kernel socket.
func (s *Session) Dialer() *websocket.Dialer {
	return &websocket.Dialer{NetDialContext: s.transport.DialContext, HandshakeTimeout: 10 * time.Second,
		ReadBufferSize: bufferSize, WriteBufferSize: bufferSize}
}

// hasFeature reports whether h's HeaderFeatures lists f.
func hasFeature(h http.Header, f string) bool {
	for _, v := range h.Values(HeaderFeatures) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), f) {
				return true
			}
		}
	}
	return false
}

// RemoteAddr is the agent's address as the master sees it.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Proxy returns a handler that forwards requests under prefix to the
// agent, with prefix removed from the path: with prefix "/m/agent",
// "/m/agent/v1/rpc?x=1" reaches the agent as "/v1/rpc?x=1". WebSocket
// upgrades pass through, byte for byte, copied with buffers taken from a
// pool only while bytes flow (upgrade.go): an idle one holds none. The
// client's credentials for the master are not
// forwarded: the Authorization, Cookie and Origin headers, token
// subprotocols (porthole.token.*) and the ticket and token query
// parameters are removed; so is any Set-Cookie of the agent's response. A
// path outside prefix, or one the tunnel serves itself on the agent
// (/.porthole/tunnel/…), gets 404; a request while or once the tunnel is down
// gets 502 naming the cause.
func (s *Session) Proxy(prefix string) http.Handler {
	prefix = strings.TrimSuffix(prefix, "/")
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { rewrite(pr, prefix) },
		Transport:     s.transport,
		FlushInterval: -1, // terminal output must not wait in a buffer
		ModifyResponse: func(resp *http.Response) error {
			// The agent runs inside a workspace: it sets no cookie on
			// the master's origin.
			resp.Header.Del("Set-Cookie")
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			http.Error(w, s.closedError(err).Error(), http.StatusBadGateway)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := trimPrefix(r.URL.Path, prefix)
		if !ok {
			http.Error(w, fmt.Sprintf("path %q is not under %q", r.URL.Path, prefix), http.StatusNotFound)
			return
		}
		if strings.HasPrefix(rest, tunnelPaths) {
			http.Error(w, fmt.Sprintf("path %q is the tunnel's own (%s…): not proxied", rest, tunnelPaths), http.StatusNotFound)
			return
		}
		if s.ys.IsClosed() {
			http.Error(w, s.closedError(nil).Error(), http.StatusBadGateway)
			return
		}
		if r.Method == http.MethodGet && r.ContentLength == 0 && upgradeType(r.Header) != "" {
			s.proxyUpgrade(w, r, prefix)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// tunnelPaths are the paths the tunnel serves itself on the agent
// (DialPath): never proxied.
const tunnelPaths = "/.porthole/tunnel/"

// trimPrefix removes prefix from path at a segment boundary; the result
// starts with "/".
func trimPrefix(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix)
	switch {
	case !ok:
		return "", false
	case rest == "":
		return "/", true
	case rest[0] != '/':
		return "", false
	}
	return rest, true
}

// rewrite turns the client's request into the agent's.
func rewrite(pr *httputil.ProxyRequest, prefix string) {
	out := pr.Out
	out.URL.Scheme, out.URL.Host, out.Host = "http", "agent.tunnel", ""
	out.URL.Path, _ = trimPrefix(pr.In.URL.Path, prefix)
	out.URL.RawPath = ""
	if raw := pr.In.URL.RawPath; raw != "" {
		escaped := (&url.URL{Path: prefix}).EscapedPath()
		if rest, ok := trimPrefix(raw, escaped); ok {
			out.URL.RawPath = rest
		}
	}
	if q := out.URL.Query(); q.Has("ticket") || q.Has("token") {
		q.Del("ticket")
		q.Del("token")
		out.URL.RawQuery = q.Encode()
	}
	h := out.Header
	h.Del("Authorization")
	h.Del("Cookie")
	h.Del("Origin")
	if vs := h.Values("Sec-WebSocket-Protocol"); len(vs) > 0 {
		var keep []string
		for _, v := range vs {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" && !strings.HasPrefix(p, protocol.TokenSubprotocolPrefix) {
					keep = append(keep, p)
				}
			}
		}
		h.Del("Sec-WebSocket-Protocol")
		if len(keep) > 0 {
			h.Set("Sec-WebSocket-Protocol", strings.Join(keep, ", "))
		}
	}
}
