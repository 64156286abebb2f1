package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// Headers an agent announces itself with on /api/agent (the others are
// internal/tunnel's).
const (
	// HeaderAddress, optional: the host the machine's servers are
	// reached on, when not the address the agent connects from.
	HeaderAddress      = "X-Porthole-Address"
	HeaderRuntimeID    = tunnel.HeaderRuntimeID
	HeaderMachineName  = tunnel.HeaderMachineName
	HeaderAgentVersion = tunnel.HeaderAgentVersion
)

// agents are the tunnels of connected agents, one per machine: a second
// tunnel for a machine is refused while the first answers its keepalive,
// and replaces it only once it does not (serveAgent).
type agents struct {
	mu sync.Mutex
	by map[store.Key]*tunnel.Session
}

func newAgents() *agents { return &agents{by: map[store.Key]*tunnel.Session{}} }

func (a *agents) get(k store.Key) *tunnel.Session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.by[k]
}

// replace makes s k's tunnel if old (nil: none) still is.
func (a *agents) replace(k store.Key, old, s *tunnel.Session) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.by[k] != old {
		return false
	}
	a.by[k] = s
	return true
}

// remove forgets s if it is still k's tunnel.
func (a *agents) remove(k store.Key, s *tunnel.Session) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.by[k] != s {
		return false
	}
	delete(a.by, k)
	return true
}

func (a *agents) closeAll() {
	a.mu.Lock()
	all := make([]*tunnel.Session, 0, len(a.by))
	for _, s := range a.by {
		all = append(all, s)
	}
	a.mu.Unlock()
	for _, s := range all {
		s.Close()
	}
}

// agentHeaders refuses an agent announcing another runtime or machine
// than its token's.
func agentHeaders(r *http.Request, c *Claims) *httpError {
	if rid := r.Header.Get(HeaderRuntimeID); rid != "" && rid != c.Runtime {
		return &httpError{http.StatusForbidden, HeaderRuntimeID + " " + rid + " is not the token's runtime " + c.Runtime}
	}
	if name := r.Header.Get(HeaderMachineName); name != "" && name != c.Machine {
		return &httpError{http.StatusForbidden, HeaderMachineName + " " + name + " is not the token's machine " + c.Machine}
	}
	return nil
}

// agentProbeTimeout is how long the live tunnel of a machine has to
// answer a keepalive ping when a second tunnel for the machine arrives.
var agentProbeTimeout = 5 * time.Second

// serveAgent accepts an agent's tunnel: its machine token says which
// machine it is; the announced runtime id and machine name, when sent,
// must match it (agentHeaders). A machine has one tunnel: a second one is
// refused (409, logged) while the first answers a keepalive ping within
// agentProbeTimeout, so that a leaked machine token cannot take over (or
// share) the live agent's terminals; it replaces a first one that does
// not answer (an agent reconnecting after its network dropped).
//
// The same endpoint takes the agent's data connections (Upgrade:
// porthole-data; serveAgentData), authenticated the same way.
func (m *Master) serveAgent(w http.ResponseWriter, r *http.Request, c *Claims) {
	k := store.Key{Runtime: c.Runtime, Machine: c.Machine}
	if strings.EqualFold(r.Header.Get("Upgrade"), tunnel.UpgradeData) {
		m.serveAgentData(w, r, k)
		return
	}
	log := m.log.With("conn", "agent", "runtime", k.Runtime, "machine", k.Machine, "remote", r.RemoteAddr)
	old := m.agents.get(k)
	if old != nil && old.Alive(agentProbeTimeout) {
		m.refuse(w, r, &httpError{http.StatusConflict, "machine " + k.Machine + " of runtime " + k.Runtime +
			" already has a live agent tunnel (from " + old.RemoteAddr().String() + "): a second one is refused"})
		return
	}
	sess, err := tunnel.AcceptWith(w, r, tunnel.AcceptOptions{
		Upgrader: &m.upgrader, DialTimeout: max(m.opts.DialBackTimeout, 0), Logger: log,
		OnPath: func(data bool) {
			if data {
				m.metrics.proxiedVia.WithLabelValues("data").Inc()
			} else {
				m.metrics.proxiedVia.WithLabelValues("stream").Inc()
			}
		},
	})
	if err != nil {
		log.Warn("agent tunnel refused", "err", err)
		return
	}
	if !m.agents.replace(k, old, sess) {
		log.Warn("agent tunnel refused: another tunnel of the machine connected meanwhile")
		sess.Close()
		return
	}
	if old != nil {
		log.Warn("agent tunnel replaced: the previous one did not answer its keepalive", "previous", old.RemoteAddr().String())
		old.Close()
	}
	addr := r.Header.Get(HeaderAddress)
	if addr == "" {
		addr, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	m.state.agentConn(k, &masterapi.AgentState{Connected: true, Version: r.Header.Get(HeaderAgentVersion),
		Protocol: r.Header.Get(tunnel.HeaderProtocol), Via: masterapi.ViaTunnel, Since: time.Now()}, addr)
	log.Info("agent connected", "version", r.Header.Get(HeaderAgentVersion))
	watchCtx, stopWatch := context.WithCancel(m.ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		m.watchPorts(watchCtx, k, sess, r.Header.Get(tunnel.HeaderProtocol), log)
	}()
	select {
	case <-sess.Done():
	case <-m.ctx.Done():
		sess.Close()
	}
	stopWatch()
	<-watched // no report of this agent's ports after it is gone
	if m.agents.remove(k, sess) {
		m.state.agentConn(k, nil, "")
	}
	log.Info("agent disconnected")
}

// serveAgentData takes a data connection of machine k's agent (its
// machine token authenticated it, as its tunnel's): one its live tunnel
// asked for (tunnel.Session.AcceptData). Others are refused, logged, with
// the reason: no live tunnel, an unknown id (another machine's, or
// made up), one used or expired. The connection stays tracked (Shutdown
// waits for it, revoking the token closes it) until it closes.
func (m *Master) serveAgentData(w http.ResponseWriter, r *http.Request, k store.Key) {
	sess := m.agents.get(k)
	if sess == nil {
		m.refuse(w, r, &httpError{http.StatusConflict, "machine " + k.Machine + " of runtime " + k.Runtime + " has no agent tunnel: a data connection belongs to one"})
		return
	}
	var de *tunnel.DataError
	if err := sess.AcceptData(w, r); errors.As(err, &de) {
		m.refuse(w, r, &httpError{de.Status, de.Reason})
	} else if err != nil {
		m.log.Warn("agent data connection failed", "runtime", k.Runtime, "machine", k.Machine, "remote", r.RemoteAddr, "err", err)
	}
}

// noMachine is the refusal of a path naming a machine the master does not
// know (a typo): 404 naming the runtime's machines, or the runtimes.
func (m *Master) noMachine(k store.Key) *httpError {
	var known []string
	if rts := m.state.runtimes(false, k.Runtime); len(rts) == 1 {
		for _, mv := range rts[0].Machines {
			known = append(known, mv.Name)
		}
		return &httpError{http.StatusNotFound, fmt.Sprintf("no machine %s in runtime %s (known: %s)", k.Machine, k.Runtime, strings.Join(known, ", "))}
	}
	for _, rt := range m.state.runtimes(false, "") {
		known = append(known, rt.ID)
	}
	if len(known) == 0 {
		known = []string{"none"}
	}
	return &httpError{http.StatusNotFound, fmt.Sprintf("no machine %s: no runtime %s (known: %s)", k.Machine, k.Runtime, strings.Join(known, ", "))}
}

// watchPorts keeps k's listening ports (its document's Ports) as its
// agent reports them, subscribed with ports.subscribe on a control socket
// through the tunnel sess, until ctx ends or the socket closes. An agent
// older than protocol 1.1 reports none.
func (m *Master) watchPorts(ctx context.Context, k store.Key, sess *tunnel.Session, proto string, log *slog.Logger) {
	if !protocol.AtLeast(proto, "1.1") {
		log.Info("the agent does not report its listening ports (protocol " + proto + " < 1.1)")
		return
	}
	c, err := client.Dial(ctx, client.Options{URL: "ws://agent.tunnel", Dialer: sess.Dialer()})
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("listening ports not watched: control socket through the tunnel", "err", err)
		}
		return
	}
	defer c.Close()
	if err := c.SubscribePorts(ctx, func(ps []protocol.ListeningPort) { m.state.agentPorts(k, ps) }); err != nil {
		if ctx.Err() == nil {
			log.Warn("listening ports not watched: ports.subscribe", "err", err)
		}
		return
	}
	select {
	case <-ctx.Done():
	case <-c.Done():
	}
}

// serveAgentProxy forwards a client's request to a machine's agent
// through its tunnel: /api/runtimes/{rid}/machines/{name}/agent/PATH is
// the agent's /PATH (its control socket, attach sockets, HTTP JSON-RPC),
// byte for byte, so offsets, reattach, exit statuses and resizes behave
// as on a direct connection.
func (m *Master) serveAgentProxy(w http.ResponseWriter, r *http.Request, c *Claims) {
	k := store.Key{Runtime: r.PathValue("rid"), Machine: r.PathValue("name")}
	if err := checkKey(k.Runtime, k.Machine); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	sess := m.agents.get(k)
	if sess == nil && m.state.machineView(k, true) == nil {
		e := m.noMachine(k)
		writeJSONError(w, e.status, e.msg)
		return
	}
	if sess == nil {
		writeJSONError(w, http.StatusBadGateway, "the agent of machine "+k.Machine+" of runtime "+k.Runtime+" is not connected")
		return
	}
	// What the agent answers runs on the master's origin: sandboxed, so
	// an agent's HTML cannot script the dashboard or read its token (the
	// policy of the response, if any, applies too: both are enforced).
	w.Header().Set("Content-Security-Policy", "sandbox")
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = "/"+r.PathValue("path"), ""
	// Who the master authenticated, for the agent's own audit log lines;
	// the agent believes it only through the tunnel.
	r2.Header.Set(protocol.HeaderPrincipal, c.Principal())
	m.auditProxied(r2, c, k.Runtime, k.Machine, r2.URL.Path)
	m.metrics.proxiedTotal.Inc()
	m.metrics.proxied.Inc()
	// A WebSocket is proxied on after this returns (guard's
	// tunnel.WithDetach): the gauge counts it until it ends.
	detached := false
	if outer := tunnel.DetachFrom(r2.Context()); outer != nil {
		r2 = r2.WithContext(tunnel.WithDetach(r2.Context(), func() func() {
			detached = true
			end := outer()
			return func() { m.metrics.proxied.Dec(); end() }
		}))
	}
	sess.Proxy("").ServeHTTP(w, r2)
	if !detached {
		m.metrics.proxied.Dec()
	}
}
