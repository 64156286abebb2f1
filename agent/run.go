package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

// Defaults of Options and ServeOptions. The command line shows them as
// its flag defaults, so they are written only here.
const (
	DefaultMaxProcesses    = 512
	DefaultRingBytes       = 1 << 20
	DefaultMaxMessageBytes = 1 << 20
	DefaultRetention       = 10 * time.Minute
	DefaultStallTimeout    = time.Second
	// StartHoldTimeout bounds how long a process started with hold
	// (StartParams.Hold) keeps its output for a held attach that has
	// not come (its client died between start and attach): then its
	// output drains as with no viewer.
	StartHoldTimeout    = 30 * time.Second
	DefaultPingInterval = 15 * time.Second
	DefaultGrace        = 5 * time.Second
)

// MasterOptions say how the agent reaches porthole-master, which it
// serves through a tunnel it keeps open (see package internal/tunnel).
type MasterOptions struct {
	// URL is the master, ws://HOST[:PORT] or wss://HOST[:PORT]; the tunnel
	// goes to URL/api/agent.
	URL string
	// Token is the machine token. It is sent with every handshake and
	// never logged.
	Token string
	// RuntimeID (workspace:env:owner) and MachineName name this machine;
	// the master checks them against the token's claims.
	RuntimeID, MachineName string
	// TLS is used for a wss:// URL; nil: the system's roots.
	TLS *tls.Config
}

// ServeOptions say where an agent serves and how it stops.
type ServeOptions struct {
	// Listener, if set, serves the agent directly. Serve closes it.
	Listener net.Listener
	// Master, if set, also serves the agent through porthole-master.
	// Either Listener or Master must be set.
	Master *MasterOptions
	// Grace is how long children get after SIGHUP and SIGTERM at shutdown
	// before they are killed. Default DefaultGrace.
	Grace time.Duration
	// HeaderTimeout, ReadTimeout and IdleTimeout bound the listener's
	// connections (see their defaults, DefaultHeaderTimeout...); Options'
	// WriteTimeout bounds the writing of a response (a long call's is
	// bounded from the call's end). Upgraded WebSockets are bound by none
	// of them, but by their keepalive.
	HeaderTimeout, ReadTimeout, IdleTimeout time.Duration
	// MaxPendingConns bounds the listener's connections that are not in a
	// request: beyond it the oldest is closed. Default
	// DefaultMaxPendingConns, and at most a quarter of RLIMIT_NOFILE.
	MaxPendingConns int
	// MetricsListener, if set, serves MetricsHandler at /metrics, without
	// authentication (porthole agent -metrics-listen). Serve closes it.
	MetricsListener net.Listener
}

// RunOptions configure Run: the agent and where it serves.
type RunOptions struct {
	Options
	ServeOptions
}

// Run builds an agent (New) and serves it until ctx ends (Serve).
func Run(ctx context.Context, o RunOptions) error {
	a, err := New(o.Options)
	if err != nil {
		if o.Listener != nil {
			o.Listener.Close()
		}
		return err
	}
	return a.Serve(ctx, o.ServeOptions)
}

// Serve serves a on o.Listener and through o.Master until ctx ends, then
// shuts down in order: the agent first (connections closed, children hung
// up, the grace period, the rest killed; see Shutdown), then the tunnel,
// then the listener's HTTP server, which by then have nothing left to wait
// for. It returns nil after a shutdown asked for by ctx, or the error that
// ended serving early. Call it at most once.
func (a *Agent) Serve(ctx context.Context, o ServeOptions) error {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	var tun *tunnel.AgentOptions
	if o.Master != nil {
		var err error
		if tun, err = a.tunnelOptions(o.Master); err != nil {
			if o.Listener != nil {
				o.Listener.Close()
			}
			return err
		}
	}
	if o.Listener == nil && tun == nil {
		return errors.New("agent: nothing to serve on: no listener and no master")
	}

	var srv *http.Server
	served := make(chan error, 1)
	if o.Listener != nil {
		srv = a.server(o)
		go func() { served <- srv.Serve(o.Listener) }()
	}
	if o.MetricsListener != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.MetricsHandler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: DefaultReadTimeout, WriteTimeout: a.opts.WriteTimeout, IdleTimeout: DefaultIdleTimeout, ErrorLog: slog.NewLogLogger(a.log.With("component", "metrics").Handler(), slog.LevelDebug)}
		mserved := make(chan struct{})
		go func() { defer close(mserved); msrv.Serve(o.MetricsListener) }()
		defer func() { msrv.Close(); <-mserved }()
	}
	tunCtx, stopTunnel := context.WithCancel(context.Background())
	defer stopTunnel()
	tunneled := make(chan error, 1)
	if tun != nil {
		go func() { tunneled <- tunnel.Serve(tunCtx, *tun) }()
	}
	var err error
	select {
	case err = <-served:
		srv = nil // already ended
	case err = <-tunneled: // only for invalid options
		tun = nil
	case <-ctx.Done():
		a.log.Info("shutting down", "grace", o.Grace)
	}
	// The agent first: it refuses new requests, ends every session (also
	// long HTTP calls such as process.wait, and those through the tunnel)
	// and gives children their grace period; then the tunnel and the
	// server have nothing left to wait for.
	actx, cancel := context.WithTimeout(context.Background(), o.Grace+5*time.Second)
	defer cancel()
	a.Shutdown(actx, o.Grace)
	if tun != nil {
		stopTunnel()
		<-tunneled
	}
	if srv != nil {
		sctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		srv.Shutdown(sctx)
		if serr := <-served; err == nil && !errors.Is(serr, http.ErrServerClosed) {
			err = serr
		}
	}
	return err
}

// tunnelOptions builds the tunnel to the master: its URL, and the
// handshake headers the master checks against the machine token.
//
// The protocol version goes in X-Porthole-Protocol, which the master
// records; Porthole-Protocol, which the agent reads on client requests,
// is not sent: the master reads no version from it.
func (a *Agent) tunnelOptions(m *MasterOptions) (*tunnel.AgentOptions, error) {
	u, err := url.Parse(m.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("agent: master %q: want ws://HOST[:PORT] or wss://HOST[:PORT]", m.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/agent"
	h := http.Header{}
	h.Set("Authorization", "Bearer "+m.Token)
	h.Set(tunnel.HeaderRuntimeID, m.RuntimeID)
	h.Set(tunnel.HeaderMachineName, m.MachineName)
	h.Set(tunnel.HeaderAgentVersion, a.opts.Version)
	h.Set(tunnel.HeaderProtocol, protocol.Version)
	return &tunnel.AgentOptions{
		URL:       u.String(),
		Header:    h,
		Handler:   a.Handler(),
		Trust:     TrustedContext,
		Logger:    a.log.With("component", "tunnel"),
		TLSConfig: m.TLS,
	}, nil
}

// server is the listener's HTTP server, with o's timeouts and limit.
func (a *Agent) server(o ServeOptions) *http.Server {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.HeaderTimeout, DefaultHeaderTimeout)
	def(&o.ReadTimeout, DefaultReadTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	if o.MaxPendingConns <= 0 {
		o.MaxPendingConns = DefaultMaxPendingConns
	}
	limit := newPendingLimit(effectiveMaxPending(o.MaxPendingConns), a.log)
	return &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: o.HeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      a.opts.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		ConnState:         limit.connState,
		ErrorLog:          slog.NewLogLogger(a.log.With("component", "http").Handler(), slog.LevelDebug),
	}
}
