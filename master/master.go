// Package master is porthole-master: it receives the statuses and logs of
// every machine's bootstrapper (Che's endpoints and events), keeps them in
// an embedded store, publishes them to clients (JSON-RPC subscriptions with
// replay, a JSON HTTP API, a web dashboard), hosts the agent binaries, and
// proxies terminal sessions to agents over the tunnels they open to it.
// See docs/master.md.
package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Options configure a Master. Zero values mean the documented defaults.
type Options struct {
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Store persists the state (required; master/store.Open).
	Store Store
	// Signer issues and verifies tokens (required; LoadSigner).
	Signer *Signer
	// Version is the build version, shown by the API and the dashboard.
	Version string
	// BinariesDir holds the binaries served at /agent-binaries/:
	// porthole-linux-amd64 and porthole-linux-arm64 (or porthole for the
	// master's own architecture). Empty: the master's executable's
	// directory.
	BinariesDir string
	// MaxEventBytes bounds every message a bootstrapper or client sends.
	// Default DefaultMaxEventBytes.
	MaxEventBytes int
	// ConnPendingBytes bounds what one bootstrapper connection may have
	// accepted and not yet committed; beyond, its reads wait for the
	// commit. Default DefaultConnPendingBytes.
	ConnPendingBytes int
	// PingInterval is the keepalive of every WebSocket the master
	// serves; a peer silent for two intervals is disconnected. Default
	// DefaultPingInterval.
	PingInterval time.Duration
	// WriteTimeout disconnects a peer that reads nothing for this long.
	// Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// SubscriptionsPerConn bounds the subscriptions of one client socket.
	// Default DefaultSubscriptionsPerConn.
	SubscriptionsPerConn int
	// Web, when set, serves the dashboard at / (see master/dashboard).
	Web http.Handler
}

// The defaults of Options, the one source of them (porthole-master's
// flags show them).
const (
	DefaultMaxEventBytes        = 1 << 20
	DefaultConnPendingBytes     = 1 << 20
	DefaultSubscriptionsPerConn = 1024
	DefaultPingInterval         = 30 * time.Second
	DefaultWriteTimeout         = 30 * time.Second
)

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxEventBytes, DefaultMaxEventBytes)
	def(&o.ConnPendingBytes, DefaultConnPendingBytes)
	def(&o.SubscriptionsPerConn, DefaultSubscriptionsPerConn)
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
}

// Master is porthole-master. Serve its Handler; Shutdown stops it.
type Master struct {
	opts     Options
	log      *slog.Logger
	state    *state
	signer   *Signer
	upgrader websocket.Upgrader
	agents   *agents
	bins     *binaries
	metrics  *metrics

	ctx    context.Context
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	wg     sync.WaitGroup // every connection's goroutines
}

// ErrShutdown is the cause given to connections closed by Shutdown.
var ErrShutdown = errors.New("porthole-master is shutting down")

// New returns a master over o.Store; it loads the state at once.
func New(o Options) (*Master, error) {
	if o.Store == nil || o.Signer == nil {
		return nil, errors.New("master: Options.Store and Options.Signer are required")
	}
	o.setDefaults()
	st, err := newState(o.Store, o.Logger)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	m := &Master{
		opts: o, log: o.Logger, state: st, signer: o.Signer,
		ctx: ctx, cancel: cancel,
	}
	m.metrics = newMetrics(m)
	st.commitSeconds = m.metrics.commitSeconds
	m.agents = newAgents()
	m.bins = newBinaries(o.BinariesDir)
	m.upgrader = websocket.Upgrader{
		ReadBufferSize:  4 << 10,
		WriteBufferSize: 16 << 10,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     sameOrigin,
	}
	return m, nil
}

// track registers the calling connection handler with Shutdown; done
// must be called when it returns. It fails once shutting down.
func (m *Master) track() (done func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return nil, false
	}
	m.wg.Add(1)
	return m.wg.Done, true
}

// Shutdown closes every connection (close code 1001: bootstrappers and
// agents reconnect to the next master), commits what was accepted, and
// waits for every goroutine, all within ctx: when ctx ends first (a
// connection that does not end, a store whose commits keep failing), it
// returns an error saying what was left. It does not close the Store.
func (m *Master) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.cancel(ErrShutdown)
	m.mu.Unlock()
	m.agents.closeAll()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	var err error
	if !waitFor(ctx, done) {
		err = fmt.Errorf("connections still open: %w", context.Cause(ctx))
	}
	return errors.Join(err, m.state.close(ctx))
}

// Handler returns the master's HTTP handler: every endpoint on one address.
func (m *Master) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	// The prologue of every authenticated endpoint: guard (auth.go).
	ingest := m.guard(endpoint{access: machineOnly, conn: true}, m.serveIngest)
	mux.Handle("GET /api/websocket", ingest) // Che's default endpoints for bootstrapper events
	mux.Handle("GET /api/websocket-minor", ingest)
	mux.Handle("GET /api/agent", m.guard(endpoint{access: machineOnly, check: agentHeaders, conn: true}, m.serveAgent))
	mux.Handle("GET /api/rpc", m.guard(endpoint{access: reader, conn: true}, m.serveRPC))
	mux.Handle("GET /api/runtimes", m.guard(endpoint{access: reader}, m.serveRuntimes))
	mux.Handle("GET /api/runtimes/{rid}", m.guard(endpoint{access: reader}, m.serveRuntime))
	mux.Handle("GET /api/runtimes/{rid}/machines/{name}", m.guard(endpoint{access: reader}, m.serveMachine))
	mux.Handle("GET /api/runtimes/{rid}/machines/{name}/logs", m.guard(endpoint{access: reader}, m.serveLogs))
	mux.Handle("/api/runtimes/{rid}/machines/{name}/agent/{path...}", m.guard(endpoint{access: clientOnly, check: checkOrigin, conn: true}, m.serveAgentProxy))
	mux.Handle("POST /api/tickets", m.guard(endpoint{access: clientOnly, check: notTicket}, m.serveTicket))
	mux.Handle("GET /api/info", m.guard(endpoint{access: reader}, m.serveInfo))
	mux.Handle("GET /metrics", m.guard(endpoint{access: clientOnly}, m.serveMetrics))
	mux.HandleFunc("GET /agent-binaries/{platform}/{name}/{file}", m.bins.serve)
	if m.opts.Web != nil {
		mux.Handle("/", m.opts.Web) // any method: "GET /" would conflict with the agent proxy's pattern
	}
	return mux
}

// waitFor waits for done to be closed, or ctx to end first (false).
func waitFor(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
	}
	select {
	case <-done: // both: done counts
		return true
	default:
		return false
	}
}
