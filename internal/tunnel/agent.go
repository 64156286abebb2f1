package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"

	"github.com/porthole-dev/porthole/internal/backoff"
	"github.com/porthole-dev/porthole/internal/clock"
)

// AgentOptions configure Serve. Zero values mean the documented defaults.
type AgentOptions struct {
	// URL is the master's tunnel endpoint, ws:// or wss://, e.g.
	// wss://master.example.com/api/agent.
	URL string
	// Header is sent with every handshake: Authorization and the
	// X-Porthole-* identification headers. It is never logged.
	Header http.Header
	// Handler serves the requests the master sends through the tunnel.
	Handler http.Handler
	// Trust marks the context of every request served through the tunnel,
	// e.g. agent.TrustedContext (the master authenticated the client). Nil
	// leaves requests unmarked: the handler then checks them as usual.
	Trust func(context.Context) context.Context
	// Logger receives connection logs; nil discards them.
	Logger *slog.Logger
	// TLSConfig is used for wss:// URLs; nil means the system roots.
	TLSConfig *tls.Config
	// MinBackoff and MaxBackoff bound the wait between attempts (package
	// internal/backoff): after the n-th consecutive failure (from 0) the
	// wait is uniform in [0, min(MaxBackoff, MinBackoff·2^n)) (full
	// jitter). A tunnel that stayed up stableAfter (5s) resets the count.
	// Defaults 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Clock measures the waits and how long a tunnel stayed up; nil means
	// the system clock.
	Clock clock.Clock
	// Rand is the jitter's random source: a uniform int64 in [0, n); nil
	// means math/rand/v2.
	Rand func(n int64) int64
	// OnState, if set, is called with true once a tunnel is up and with
	// false once it is down and everything served through it has ended.
	OnState func(connected bool)
	// NoDataConns: the agent does not announce data connections
	// (HeaderFeatures), so the master proxies everything through the
	// tunnel's streams, as with agents older than data connections.
	NoDataConns bool
}

// stableAfter is how long a tunnel must have been up for the backoff to
// start over; a tunnel that ends sooner counts as a failed attempt, so a
// master that accepts and drops at once is not redialled in a loop.
const stableAfter = 5 * time.Second

// shutdownTimeout bounds how long Serve waits for the requests of a
// tunnel that has ended; the streams are gone, so they end quickly.
const shutdownTimeout = 10 * time.Second

// HandshakeError is the master's refusal of the tunnel handshake.
type HandshakeError struct {
	Status int
	// Body is the start of the master's response body (at most 512 bytes).
	Body string
}

func (e *HandshakeError) Error() string {
	msg := fmt.Sprintf("master refused the tunnel: %d %s", e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Permanent reports whether retrying is unlikely to help without a change
// on either side: the token was refused (401) or does not match the
// machine (403).
func (e *HandshakeError) Permanent() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// Serve keeps a tunnel to the master open until ctx ends and serves
// o.Handler through it. A tunnel that ends after being up for a while is
// redialled within o.MinBackoff (jittered, so agents dropped together do
// not return together); failed attempts and tunnels that end sooner back
// off with full jitter up to o.MaxBackoff, and a 401 or 403 from the
// master (a token problem) waits between half and all of o.MaxBackoff. Every failure is logged with its status and the master's
// message, never the token. Serve returns ctx's error once ctx has ended
// and every goroutine it started has ended, or at once an error for
// invalid options.
func Serve(ctx context.Context, o AgentOptions) error {
	u, err := url.Parse(o.URL)
	if err != nil {
		return fmt.Errorf("tunnel: master url: %w", err)
	}
	if (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("tunnel: master url %q: want ws://HOST/PATH or wss://HOST/PATH", redact(u))
	}
	if o.Handler == nil {
		return errors.New("tunnel: no handler")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	log := o.Logger.With("master", redact(u))
	o.Header = o.Header.Clone()
	if o.Header == nil {
		o.Header = http.Header{}
	}
	if !o.NoDataConns {
		o.Header.Set(HeaderFeatures, FeatureData)
	}
	d := &websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: 30 * time.Second,
		TLSClientConfig:  o.TLSConfig,
		ReadBufferSize:   bufferSize,
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  writeBufferPool,
	}
	b := backoff.New(backoff.Options{First: o.MinBackoff, Max: o.MaxBackoff, Stable: stableAfter, Clock: o.Clock, Rand: o.Rand})
	for {
		up, err := serveOnce(ctx, d, &o, log, b.Connected)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var wait time.Duration
		var he *HandshakeError
		switch {
		case errors.As(err, &he) && he.Permanent():
			wait = b.Period()
			log.Error("master refused the tunnel; check the machine token, runtime id and machine name", "status", he.Status, "reason", he.Body, "retry_in", wait)
		case up:
			wait = b.Next()
			if b.Failures() == 1 {
				log.Warn("tunnel down; reconnecting", "err", err, "retry_in", wait)
			} else {
				log.Warn("tunnel down soon after connecting", "err", err, "retry_in", wait, "failures", b.Failures())
			}
		default:
			wait = b.Next()
			log.Warn("cannot reach the master", "err", err, "retry_in", wait, "failures", b.Failures())
		}
		if b.Wait(ctx, wait) != nil {
			return ctx.Err()
		}
	}
}

// serveOnce dials the master and serves the tunnel until it ends or ctx
// does; connected is called once the tunnel is up. up reports whether the
// tunnel was established; err says why it ended.
func serveOnce(ctx context.Context, d *websocket.Dialer, o *AgentOptions, log *slog.Logger, connected func()) (up bool, err error) {
	// gorilla honours ctx only while connecting, not during the
	// handshake: close the connection if ctx ends before the handshake is
	// done.
	dd := *d
	var stop func() bool
	dd.NetDialContext = func(dctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		if err == nil {
			stop = context.AfterFunc(ctx, func() { c.Close() })
		}
		return c, err
	}
	ws, resp, err := dd.DialContext(ctx, o.URL, o.Header)
	if stop != nil && !stop() && err == nil {
		ws.Close() // ctx ended just as the handshake completed
		return false, ctx.Err()
	}
	if err != nil {
		if resp != nil {
			return false, &HandshakeError{Status: resp.StatusCode, Body: readBody(resp)}
		}
		return false, err
	}
	c := newMuxConn(ws)
	sess, err := yamux.Server(c, yamuxConfig(log))
	if err != nil { // only for an invalid config
		c.Close()
		return false, err
	}
	connected()
	log.Info("tunnel up", "remote", ws.RemoteAddr().String())
	if o.OnState != nil {
		o.OnState(true)
		defer o.OnState(false)
	}
	// Data connections (agentdata.go) are served beside the tunnel, and
	// end with it.
	ds, err := newDataServer(o, log)
	if err != nil { // the URL was checked: cannot happen
		sess.Close()
		return true, err
	}
	srv := &http.Server{
		Handler:           ds.handler(),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if o.Trust != nil {
		srv.ConnContext = func(ctx context.Context, _ net.Conn) context.Context { return o.Trust(ctx) }
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sess) }()
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-sess.CloseChan():
		if err = c.err(); err == nil {
			err = errors.New("yamux session ended (keepalive timeout or protocol error)")
		}
	case serr := <-served: // not expected while the session lives
		served <- serr
		err = fmt.Errorf("serving the tunnel: %w", serr)
	}
	// Closing the session ends every stream, and closing the data
	// server every data connection: requests in progress see their
	// connection fail and end; Shutdown waits for them.
	sess.Close()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	ds.close(sctx)
	if srv.Shutdown(sctx) != nil {
		srv.Close()
	}
	<-served
	return true, err
}

// readBody returns the start of a refusal's body, as valid UTF-8 on one
// line.
func readBody(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	s := strings.ToValidUTF8(string(b), string(utf8.RuneError))
	return strings.Join(strings.Fields(s), " ")
}

// redact returns u without user info and query, which may hold secrets.
func redact(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.Fragment = nil, "", ""
	return v.String()
}
