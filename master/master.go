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
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/tunnel"
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
	// TokensDir holds the token registry (registry.go, tokens.json: the
	// data directory): tokens revoked there are refused, and their open
	// connections closed within about a second. Empty: nothing is
	// revocable but by a new signing key.
	TokensDir string
	// AuditDir holds the audit trail (audit.go: the data directory);
	// empty: none. AuditMaxBytes bounds it on disk (default
	// DefaultAuditMaxBytes); AuditMaxAge > 0 hides older records.
	AuditDir      string
	AuditMaxBytes int64
	AuditMaxAge   time.Duration
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
	// DialBackTimeout is how long a connection to an agent (a proxied
	// attach socket, a port forward) waits for the data connection the
	// agent dials back (docs/protocol.md, "Data connections") before it
	// goes through a stream of the agent's tunnel. Default
	// DefaultDialBackTimeout; negative: data connections are not used.
	DialBackTimeout time.Duration
	// SubscriptionsPerConn bounds the subscriptions of one client socket.
	// Default DefaultSubscriptionsPerConn.
	SubscriptionsPerConn int
	// TailBytes bounds the journal entries (bytes of their JSON) of one
	// machine kept in memory for subscribers; older ones are read from
	// the store. Default DefaultTailBytes.
	TailBytes int
	// TailTotalBytes bounds the in-memory tails of every machine
	// together: beyond, the largest tail loses its oldest half. Default
	// DefaultTailTotalBytes.
	TailTotalBytes int
	// MachineRate bounds what one machine's bootstrapper may push, bytes
	// of events per second over all its connections, so that one machine
	// cannot take the store from the others: beyond, the master reads
	// its connections more slowly (the bootstrapper spools). Default
	// DefaultMachineRate.
	MachineRate int
	// MachineBurst is how many bytes a machine may push at once above
	// MachineRate (at least MaxEventBytes). Default DefaultMachineBurst.
	MachineBurst int
	// Web, when set, serves the dashboard at / (see master/dashboard).
	Web http.Handler
	// AllowedHosts, when set, are the only names the master answers to
	// (the Host header; IP addresses and localhost are always allowed):
	// other requests get 421, which stops DNS rebinding (a page of
	// another site whose name resolves to the master). Entries are host
	// names without port, "*" allows any. Empty: any Host.
	AllowedHosts []string
	// AllowedOrigins are the origins of other sites' pages (scheme://host
	// [:port], "*" for any; see ParseAllowedOrigin) allowed to use the
	// endpoints clients use, with CORS (origin.go). Empty: the master's
	// own origin only.
	AllowedOrigins []string
}

// The defaults of Options, the one source of them (porthole-master's
// flags show them).
const (
	DefaultMaxEventBytes        = 1 << 20
	DefaultConnPendingBytes     = 1 << 20
	DefaultSubscriptionsPerConn = 1024
	DefaultTailBytes            = 1 << 20
	DefaultTailTotalBytes       = 64 << 20
	DefaultMachineRate          = 1 << 20
	DefaultMachineBurst         = 8 << 20
	DefaultPingInterval         = 30 * time.Second
	DefaultWriteTimeout         = 30 * time.Second
	DefaultDialBackTimeout      = tunnel.DefaultDialTimeout
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
	def(&o.TailBytes, DefaultTailBytes)
	def(&o.TailTotalBytes, DefaultTailTotalBytes)
	def(&o.MachineRate, DefaultMachineRate)
	def(&o.MachineBurst, DefaultMachineBurst)
	o.MachineBurst = max(o.MachineBurst, o.MaxEventBytes)
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.DialBackTimeout == 0 {
		o.DialBackTimeout = DefaultDialBackTimeout
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
	rates    *rateLimiter
	tickets  tickets
	metrics  *metrics
	revs     *revocations
	audit    *auditLog
	watched  chan struct{} // closed when the registry's watcher has ended

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
	st, err := newState(o.Store, o.Logger, o.TailBytes, o.TailTotalBytes)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	m := &Master{
		opts: o, log: o.Logger, state: st, signer: o.Signer,
		ctx: ctx, cancel: cancel,
	}
	m.revs = newRevocations(o.TokensDir)
	if _, err := m.revs.reload(); err != nil {
		cancel(err)
		st.close(context.Background())
		return nil, fmt.Errorf("token registry: %w", err)
	}
	if m.audit, err = openAudit(o.AuditDir, o.AuditMaxBytes, o.AuditMaxAge); err != nil {
		cancel(err)
		st.close(context.Background())
		return nil, fmt.Errorf("audit trail: %w", err)
	}
	m.watched = make(chan struct{})
	go func() {
		defer close(m.watched)
		m.revs.watch(ctx, func(names []string, err error) {
			if err != nil {
				m.log.Error("token registry not read: revocations since its last reading are not applied", "err", err)
				return
			}
			m.log.Warn("tokens revoked: their connections are closed", "names", names)
		})
	}()
	m.metrics = newMetrics(m)
	st.commitSeconds = m.metrics.commitSeconds
	m.agents = newAgents()
	m.rates = newRateLimiter(o.MachineRate, o.MachineBurst, time.Now)
	m.bins = newBinaries(o.BinariesDir)
	m.upgrader = websocket.Upgrader{
		ReadBufferSize:  4 << 10,
		WriteBufferSize: 16 << 10,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     nil, // set below: m.originAllowed
	}
	m.upgrader.CheckOrigin = m.originAllowed // machines' endpoints refuse any other origin before (checkOrigin)
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
	<-m.watched
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	var err error
	if !waitFor(ctx, done) {
		err = fmt.Errorf("connections still open: %w", context.Cause(ctx))
	}
	err = errors.Join(err, m.state.close(ctx))
	m.audit.close()
	return err
}

// route is one endpoint of the master: a ServeMux pattern and its handler.
type route struct {
	pattern string
	h       http.Handler
}

// routes are every endpoint of the master, the one list Handler serves
// (and the auth matrix test walks: an endpoint cannot be left out of it).
func (m *Master) routes() []route {
	// The prologue of every authenticated endpoint: guard (auth.go).
	// Machines are not browsers: a request with another origin's Origin
	// header is refused before anything else.
	ingest := m.guard(endpoint{access: machineOnly, check: checkOrigin, conn: true}, m.serveIngest)
	rs := []route{
		{"GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })},
		{"GET /api/websocket", ingest}, // Che's default endpoints for bootstrapper events
		{"GET /api/websocket-minor", ingest},
		{"GET /api/agent", m.guard(endpoint{access: machineOnly, check: both(checkOrigin, agentHeaders), conn: true}, m.serveAgent)},
		{"GET /api/rpc", m.guard(endpoint{access: reader, conn: true, cors: true}, m.serveRPC)},
		{"GET /api/runtimes", m.guard(endpoint{access: reader, cors: true}, m.serveRuntimes)},
		{"GET /api/runtimes/{rid}", m.guard(endpoint{access: reader, cors: true}, m.serveRuntime)},
		{"GET /api/runtimes/{rid}/machines/{name}", m.guard(endpoint{access: reader, cors: true}, m.serveMachine)},
		{"GET /api/runtimes/{rid}/machines/{name}/logs", m.guard(endpoint{access: reader, cors: true}, m.serveLogs)},
		{"/api/runtimes/{rid}/machines/{name}/agent/{path...}", m.guard(endpoint{access: clientOnly, check: m.checkClientOrigin, conn: true, cors: true}, m.serveAgentProxy)},
		{"/api/runtimes/{rid}/machines/{name}/ports/{port}/{path...}", m.guard(endpoint{access: clientOnly, conn: true}, m.servePort)},
		{"/api/runtimes/{rid}/machines/{name}/ports/{port}/" + siteKeyDir + "/{key}/{path...}", m.guard(endpoint{access: siteKey, conn: true}, m.servePort)},
		{"POST /api/tickets", m.guard(endpoint{access: clientOnly, check: notTicket, cors: true}, m.serveTicket)},
		{"GET /api/info", m.guard(endpoint{access: reader, cors: true}, m.serveInfo)},
		{"GET /metrics", m.guard(endpoint{access: clientOnly}, m.serveMetrics)},
		{"GET /api/audit", m.guard(endpoint{access: clientOnly}, m.serveAudit)},
		{"GET /agent-binaries/{platform}/{name}/{file}", http.HandlerFunc(m.bins.serve)},
	}
	if m.opts.Web != nil {
		rs = append(rs, route{"/", m.opts.Web}) // any method: "GET /" would conflict with the agent proxy's pattern
	}
	return rs
}

// Handler returns the master's HTTP handler: every endpoint on one address.
func (m *Master) Handler() http.Handler {
	mux := http.NewServeMux()
	cors := map[string]bool{} // the patterns of routes open to allowed origins
	for _, rt := range m.routes() {
		mux.Handle(rt.pattern, rt.h)
		if _, ok := rt.h.(corsHandler); ok {
			cors[rt.pattern] = true
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(m.opts.AllowedHosts) > 0 && !hostAllowed(r.Host, m.opts.AllowedHosts) {
			m.refuse(w, r, &httpError{http.StatusMisdirectedRequest, "host " + strconv.Quote(r.Host) + " is not one of the master's names (porthole-master -allowed-host)"})
			return
		}
		if r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
			m.preflight(w, r, mux, cors)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether host (a Host header, with or without port)
// is an IP address, localhost, or one of allowed.
func hostAllowed(host string, allowed []string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	if net.ParseIP(h) != nil || strings.EqualFold(h, "localhost") {
		return true
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(a, h) {
			return true
		}
	}
	return false
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
