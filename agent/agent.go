// Package agent serves processes and terminals over WebSocket: it starts
// them (PTY or pipes), keeps their output in per-stream rings addressed by
// byte offset, and lets any number of clients attach, detach and reattach
// exactly where they left off. Control is JSON-RPC 2.0; see
// docs/protocol.md for the wire contract.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

// Options configure an Agent. Zero values mean the documented defaults.
type Options struct {
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Token is the shared secret every request must present. Empty is
	// refused unless InsecureNoAuth is set.
	Token          string
	InsecureNoAuth bool
	// AllowedOrigins lists browser origins ("https://ide.example.com") that
	// may open WebSockets besides the agent's own; "*" allows any.
	// Requests without an Origin header (non-browsers) are always allowed.
	AllowedOrigins []string
	// Version is the build version reported to clients.
	Version string
	// Shell runs when a start request has no argv. Default $SHELL, else /bin/sh.
	Shell string
	// Env is the base environment of children. Default: the agent's own,
	// without PORTHOLE_TOKEN and PORTHOLE_MACHINE_TOKEN.
	Env []string
	// MaxProcesses bounds retained processes, running and exited. Default
	// DefaultMaxProcesses (512).
	MaxProcesses int
	// RingBytes is each output stream's ring size (scrollback). Default
	// DefaultRingBytes (1 MiB).
	RingBytes int
	// StallTimeout is how long a viewer that stops reading may hold a
	// process back before it is demoted. Default DefaultStallTimeout (1s).
	StallTimeout time.Duration
	// Retention is how long exited processes are kept. Default
	// DefaultRetention (10m); negative keeps them until removed.
	Retention time.Duration
	// ExitDrain bounds how long output is still read after the process
	// exited while a background child holds its terminal or pipes. Default 1s.
	ExitDrain time.Duration
	// MaxMessageBytes bounds every WebSocket message and HTTP body. Default
	// DefaultMaxMessageBytes (1 MiB).
	MaxMessageBytes int
	// StdinQueue bounds the stdin frames queued per attached client while
	// the process does not read. Default 64.
	StdinQueue int
	// PingInterval is the keepalive period. Default DefaultPingInterval (15s).
	PingInterval time.Duration
	// WriteTimeout disconnects a client that reads nothing for this long. Default 30s.
	WriteTimeout time.Duration
	// Clock measures the stall bound, the exit drain and the retention
	// of exited processes, and paces
	// keepalive pings; nil is the real clock. Tests set a fake one.
	Clock clock.Clock
	// PortPollInterval is how often a ports.subscribe subscription reads
	// the listening sockets. Default DefaultPortPollInterval (2s).
	PortPollInterval time.Duration
	// PortScope says which listening sockets ports.list and
	// ports.subscribe report: PortsAll (the default: the whole network
	// namespace) or PortsOwn (those of the agent's process tree).
	PortScope string
	// WebDir, when set, is served at / without authentication: static
	// pages such as the xterm.js terminal (web/terminal, built by npm).
	// Pages hold no secret; they ask for the token.
	WebDir string
	// RecordDir, when set, records every TTY process's session there, an
	// asciicast v2 file each (record.go), bounded by RecordMax (default
	// DefaultRecordMax); with RecordInput, what is typed too.
	RecordDir   string
	RecordMax   int64
	RecordInput bool
	// Extensions add routes to the agent's handler (Che's agents, package
	// agent/cheapi). See Extension.
	Extensions []Extension
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Shell == "" {
		o.Shell = os.Getenv("SHELL")
		if o.Shell == "" {
			o.Shell = "/bin/sh"
		}
	}
	if o.Env == nil {
		o.Env = proc.ChildEnv(os.Environ())
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxProcesses, DefaultMaxProcesses)
	def(&o.RingBytes, DefaultRingBytes)
	def(&o.MaxMessageBytes, DefaultMaxMessageBytes)
	def(&o.StdinQueue, 64)
	defDur(&o.StallTimeout, DefaultStallTimeout)
	if o.RecordMax <= 0 {
		o.RecordMax = DefaultRecordMax
	}
	defDur(&o.Retention, DefaultRetention)
	defDur(&o.ExitDrain, time.Second)
	defDur(&o.PingInterval, DefaultPingInterval)
	defDur(&o.WriteTimeout, 30*time.Second)
	defDur(&o.PortPollInterval, DefaultPortPollInterval)
	if o.PortScope == "" {
		o.PortScope = PortsAll
	}
}

// Agent is the exec agent. Serve its Handler; call Shutdown to stop.
type Agent struct {
	opts     Options
	log      *slog.Logger
	procs    *manager
	upgrader websocket.Upgrader

	// connWG tracks every session; Shutdown waits for them.
	mu      sync.Mutex
	closing bool
	connWG  sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelCauseFunc
	connSeq uint64
	// idle holds the raw attach sockets that have nothing to read, with
	// one goroutine for all of them (wsrpc.ServeRaw).
	idle wsrpc.Poller

	// extRoutes are the extensions' routes, built once by New.
	extRoutes map[string]http.Handler
}

// ErrNoToken is returned by New when no token is configured.
var ErrNoToken = errors.New("no token: set PORTHOLE_TOKEN or -token-file (or -insecure-no-auth for a trusted loopback test)")

// New returns an agent. It starts nothing until requests arrive.
func New(o Options) (*Agent, error) {
	if o.Token == "" && !o.InsecureNoAuth {
		return nil, ErrNoToken
	}
	o.setDefaults()
	if o.PortScope != PortsAll && o.PortScope != PortsOwn {
		return nil, fmt.Errorf("port scope %q: want %q or %q", o.PortScope, PortsAll, PortsOwn)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	a := &Agent{
		opts: o,
		log:  o.Logger,
		ctx:  ctx, cancel: cancel,
	}
	a.procs = newManager(&a.opts)
	a.extRoutes = make(map[string]http.Handler)
	for _, ext := range o.Extensions {
		for pattern, h := range ext(a) {
			a.extRoutes[pattern] = h
		}
	}
	a.upgrader = websocket.Upgrader{
		// A small read buffer, held by every socket for its life: a frame's
		// header (at most 14 bytes) and a control frame (at most 125) are
		// read through it; a larger payload, of any size, is read past it
		// into the reader's own buffer (bufio reads straight into a
		// destination larger than its buffer). Write buffers come from a
		// pool and are held only while a message is written, so an idle
		// connection holds little.
		ReadBufferSize:  256,
		WriteBufferSize: 64 << 10,
		WriteBufferPool: &sync.Pool{},
		// Origins are checked before the upgrade, with a clear 403.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return a, nil
}

// route is one endpoint: a ServeMux pattern and its handler.
type route struct {
	pattern string
	h       http.HandlerFunc
}

// routes are every endpoint of the agent, the one list Handler serves
// (and the auth matrix test walks).
func (a *Agent) routes() []route {
	post := a.guard("http", a.serveRPCPost)
	rs := []route{
		{"GET /healthz", a.serveHealth},
		{"GET /v1/rpc", a.guard("rpc", a.serveRPCSocket)},
		{"POST /v1/rpc", func(w http.ResponseWriter, r *http.Request) {
			if a.cors(w, r) {
				post(w, r)
			}
		}},
		{"OPTIONS /v1/rpc", a.servePreflight},
		{"GET /v1/processes/{id}/attach", a.guard("attach", a.serveAttach)},
		{"GET /v1/processes/{id}/recording", a.guard("recording", a.serveRecording)},
		{"GET /v1/ports/{port}/forward", a.guard("forward", a.serveForward)},
		{"GET /v1/files/archive", a.guard("archive", a.serveArchive)},
		{"GET /v1/files/extract", a.guard("extract", a.serveExtract)},
	}
	if a.opts.WebDir != "" {
		rs = append(rs, route{"GET /", webHandler(a.opts.WebDir).ServeHTTP})
	}
	for pattern, h := range a.extRoutes {
		rs = append(rs, route{pattern, h.ServeHTTP})
	}
	return rs
}

// Handler returns the agent's HTTP handler: the control socket, the
// one-shot HTTP JSON-RPC endpoint, attach sockets and the health check.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.routes() {
		mux.Handle(rt.pattern, rt.h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// On refusals too; a 101 gets them from upgrade().
		w.Header().Set(protocol.HeaderProtocol, protocol.Version)
		w.Header().Set(protocol.HeaderAgentVersion, a.opts.Version)
		mux.ServeHTTP(w, r)
	})
}

func (a *Agent) info() protocol.AgentInfo {
	return protocol.AgentInfo{
		Version: a.opts.Version, ProtocolVersion: protocol.Version, PID: os.Getpid(),
		Processes: a.procs.count(), MaxProcesses: a.opts.MaxProcesses,
		RingBytes: a.opts.RingBytes, MaxMessageBytes: a.opts.MaxMessageBytes,
	}
}

func (a *Agent) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// ErrShutdown is the cause given to connections closed by Shutdown.
var ErrShutdown = errors.New("agent is shutting down")

// Shutdown closes every connection (close code 1001), hangs up every
// process, waits up to grace for them to exit, kills the rest, and waits
// for every goroutine the agent started.
func (a *Agent) Shutdown(ctx context.Context, grace time.Duration) {
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	// Every session watches its context and closes its own socket with
	// 1001 and the cause.
	a.cancel(ErrShutdown)
	// Connections first: once they are gone nothing can add work for the
	// processes; then the processes and their goroutines.
	a.connWG.Wait()
	a.idle.Wait() // nothing is parked once the sessions ended
	a.procs.shutdown(ctx, grace)
}

// track registers a session; it fails once Shutdown has begun.
func (a *Agent) track(s *session) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	a.connSeq++
	s.seq = a.connSeq
	a.connWG.Add(1)
	return true
}

func (a *Agent) untrack(s *session) {
	a.connWG.Done()
}
