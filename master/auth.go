package master

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// httpError is a refusal: an HTTP status and a message naming what is
// wrong (never the token).
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// headerToken returns the Authorization header's token: "Bearer x" or,
// as Che's bootstrapper sends it, the raw token.
func headerToken(r *http.Request) string {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return h
}

// machineAuth authenticates a machine: its token in the Authorization
// header (raw or Bearer) or, as Che's master accepts it, ?token=.
func (m *Master) machineAuth(r *http.Request) (*Claims, *httpError) {
	tok := headerToken(r)
	if tok == "" {
		tok = r.URL.Query().Get("token")
	}
	if tok == "" {
		return nil, &httpError{http.StatusUnauthorized, "missing machine token: send it in the Authorization header"}
	}
	c, e := m.verify(tok)
	if e != nil {
		return nil, e
	}
	if c.Kind != KindMachine {
		return nil, &httpError{http.StatusForbidden, "a " + c.Kind + " token cannot push machine events; use a machine token (porthole-master token -runtime-id ID -machine-name NAME)"}
	}
	return c, nil
}

// clientAuth authenticates a client: a client token as Bearer (or raw)
// Authorization, or a ticket in ?ticket= (WebSocket URLs of browsers).
// A machine token is accepted where machine is true and returned for the
// caller to restrict (it reads only its own runtime).
func (m *Master) clientAuth(r *http.Request, machine bool) (*Claims, *httpError) {
	tok := headerToken(r)
	fromQuery := false
	if tok == "" {
		tok = r.URL.Query().Get("ticket")
		fromQuery = tok != ""
	}
	if tok == "" {
		if r.URL.Query().Has("token") {
			return nil, &httpError{http.StatusUnauthorized, "a token in the URL is refused: send it in the Authorization header, or get a ticket (POST /api/tickets) for ?ticket="}
		}
		return nil, &httpError{http.StatusUnauthorized, "missing client token: send Authorization: Bearer <token>, or ?ticket= on WebSocket URLs"}
	}
	c, e := m.verify(tok)
	if e != nil {
		return nil, e
	}
	if c.Kind == KindTicket && !m.tickets.use(c.ID, c.ExpiresAt.Time, time.Now()) {
		return nil, &httpError{http.StatusUnauthorized, "ticket already used: a ticket is valid once; get one per connection (POST /api/tickets)"}
	}
	switch {
	case fromQuery && c.Kind != KindTicket:
		return nil, &httpError{http.StatusUnauthorized, "?ticket= holds a " + c.Kind + " token: only tickets go in URLs (POST /api/tickets)"}
	case c.Kind == KindClient, c.Kind == KindTicket:
		return c, nil
	case c.Kind == KindMachine && machine:
		return c, nil
	}
	return nil, &httpError{http.StatusForbidden, "a " + c.Kind + " token cannot do this; use a client token (porthole-master token -client)"}
}

// siteAuth authenticates a browser's visit to a machine's server: the
// site key in the path, which opens only the machine and port it names.
// Nothing else is looked at: the page is sandboxed and sends no
// credentials (docs/security.md, Serving a machine's ports).
func (m *Master) siteAuth(r *http.Request) (*Claims, *httpError) {
	c, e := m.verify(r.PathValue("key"))
	if e != nil {
		return nil, &httpError{e.status, "this link to a machine's server is not valid (" + e.msg + "): open the server again from the dashboard"}
	}
	if c.Kind != KindSite {
		return nil, &httpError{http.StatusUnauthorized, "a " + c.Kind + " token is not a site key: open the server from the dashboard, or send the token as Authorization: Bearer to …/ports/PORT/PATH"}
	}
	if c.Runtime != r.PathValue("rid") || c.Machine != r.PathValue("name") || strconv.Itoa(c.Port) != r.PathValue("port") {
		return nil, &httpError{http.StatusForbidden, fmt.Sprintf("this site key opens port %d of machine %s of runtime %s only", c.Port, c.Machine, c.Runtime)}
	}
	return c, nil
}

// verify checks tok and that it is not revoked (registry.go).
func (m *Master) verify(tok string) (*Claims, *httpError) {
	c, err := m.signer.Verify(tok)
	if err != nil {
		return nil, &httpError{http.StatusUnauthorized, err.Error()}
	}
	if m.revs.isRevoked(c) {
		return nil, &httpError{http.StatusUnauthorized, "token " + c.Principal() + " (id " + c.revocable() + ") is revoked"}
	}
	return c, nil
}

// bound closes r's connection when c is revoked (registry.go) or expires
// (a ticket: when the token it was issued to expires), until the returned
// func is called.
func (m *Master) bound(r *http.Request, c *Claims) (release func()) {
	conn := connOf(r)
	untrack := m.revs.track(c, conn)
	exp := c.ExpiresAt
	if c.Kind == KindTicket || c.Kind == KindSite {
		exp = c.ParentExpires
	}
	if conn == nil || exp == nil {
		return untrack
	}
	// Not r nor c: a proxied WebSocket outlives its request, and the
	// timer would keep the request's parsed claims for the socket's life.
	path, principal := logPath(r), c.Principal()
	t := time.AfterFunc(time.Until(exp.Time), func() {
		m.log.Info("token expired: its connection is closed", "principal", principal, "path", path)
		conn.Close()
	})
	return func() { t.Stop(); untrack() }
}

// access is who may call an endpoint (docs/master.md, Endpoints).
type access int

const (
	// machineOnly: a machine token (Che's forms: raw or Bearer
	// Authorization, ?token=).
	machineOnly access = iota
	// clientOnly: a client token or a ticket.
	clientOnly
	// reader: a client token, a ticket, or a machine token, which reads
	// only its own runtime (see scope).
	reader
	// siteKey: a site key in the path ({key}), for the machine and port
	// of the path (siteAuth).
	siteKey
)

func (m *Master) authenticate(r *http.Request, a access) (*Claims, *httpError) {
	switch a {
	case machineOnly:
		return m.machineAuth(r)
	case clientOnly:
		return m.clientAuth(r, false)
	case siteKey:
		return m.siteAuth(r)
	default:
		return m.clientAuth(r, true)
	}
}

// endpoint is what the prologue of an authenticated handler checks.
type endpoint struct {
	access access
	// check, when set, refuses more (a header, the origin) once the
	// caller is known.
	check func(*http.Request, *Claims) *httpError
	// conn: the handler holds a connection (a WebSocket, a proxied
	// request), which Shutdown closes and waits for: refused with 503
	// once shutting down.
	conn bool
	// cors: pages of the origins -allow-origin lists may use it (origin.go):
	// its answers carry CORS headers for them, its preflights are answered.
	cors bool
}

// corsHandler is the handler of an endpoint with cors set.
type corsHandler struct{ http.HandlerFunc }

// authedFunc is an authenticated handler: c is who calls.
type authedFunc func(w http.ResponseWriter, r *http.Request, c *Claims)

// guard is the one prologue of the master's authenticated handlers: it
// authenticates the request, refuses what ep refuses (logged, never the
// token), registers a connection with Shutdown, then calls h.
func (m *Master) guard(ep endpoint, h authedFunc) http.Handler {
	f := func(w http.ResponseWriter, r *http.Request) {
		if ep.cors {
			m.corsHeaders(w, r) // an allowed page reads refusals too
		}
		c, e := m.authenticate(r, ep.access)
		if e == nil && ep.check != nil {
			e = ep.check(r, c)
		}
		if e != nil {
			m.refuse(w, r, e)
			return
		}
		if ep.conn {
			done, ok := m.track()
			if !ok {
				writeJSONError(w, http.StatusServiceUnavailable, ErrShutdown.Error())
				return
			}
			release := m.bound(r, c)
			end := func() { release(); done() }
			// A proxied WebSocket goes on after the handler returns
			// (tunnel.WithDetach); the connection stays tracked until
			// it ends.
			detached := false
			r = r.WithContext(tunnel.WithDetach(r.Context(), func() func() { detached = true; return end }))
			defer func() {
				if !detached {
					end()
				}
			}()
		}
		h(w, r, c)
	}
	if ep.cors {
		return corsHandler{f}
	}
	return http.HandlerFunc(f)
}

// scope is what a reader sees: a client every runtime without their
// internal servers; a machine only its own runtime (only), internal
// servers included.
func scope(c *Claims) (internal bool, only string) {
	if c.Kind == KindMachine {
		return true, c.Runtime
	}
	return false, ""
}

// refuse answers e and logs it with the request, never the token.
func (m *Master) refuse(w http.ResponseWriter, r *http.Request, e *httpError) {
	m.log.Warn("request refused", "path", logPath(r), "remote", r.RemoteAddr, "status", e.status, "reason", e.msg)
	m.metrics.requestRefused.WithLabelValues(statusLabel(e.status)).Inc()
	writeJSONError(w, e.status, e.msg)
}

// logPath is r's path for the log: a site key (…/~/KEY/…) replaced by
// "~/KEY", for it opens the site until it expires.
func logPath(r *http.Request) string {
	p := r.URL.Path
	i := strings.Index(p, "/~/")
	if i < 0 {
		return p
	}
	rest := p[i+3:]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		return p[:i] + "/~/KEY" + rest[j:]
	}
	return p[:i] + "/~/KEY"
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(masterapi.Error{Error: msg})
}

// checkOrigin refuses a browser's request from another origin.
func checkOrigin(r *http.Request, _ *Claims) *httpError {
	if !sameOrigin(r) {
		return &httpError{http.StatusForbidden, "Origin " + r.Header.Get("Origin") + " is not the master's"}
	}
	return nil
}

// sameOrigin lets browsers open WebSockets from the master's own pages
// only; clients that send no Origin (non-browsers) are not concerned.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// both runs check a, then b.
func both(a, b func(*http.Request, *Claims) *httpError) func(*http.Request, *Claims) *httpError {
	return func(r *http.Request, c *Claims) *httpError {
		if e := a(r, c); e != nil {
			return e
		}
		return b(r, c)
	}
}

// notTicket refuses a ticket where a client token is needed.
func notTicket(_ *http.Request, c *Claims) *httpError {
	if c.Kind == KindTicket {
		return &httpError{http.StatusForbidden, "a ticket cannot get another ticket"}
	}
	return nil
}

// tickets remembers the tickets used and not yet expired, so that each
// is accepted once.
type tickets struct {
	mu   sync.Mutex
	used map[string]time.Time // id → expiry
}

// use records ticket id, valid until exp, as used; false when it was
// already.
func (t *tickets) use(id string, exp, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.used[id]; ok {
		return false
	}
	if t.used == nil {
		t.used = map[string]time.Time{}
	}
	if len(t.used) >= 1024 && len(t.used)&(len(t.used)-1) == 0 { // now and then, forget the expired
		maps.DeleteFunc(t.used, func(_ string, e time.Time) bool { return e.Before(now) })
	}
	t.used[id] = exp
	return true
}

// serveTicket issues a ticket to a client (its token as Bearer).
func (m *Master) serveTicket(w http.ResponseWriter, r *http.Request, c *Claims) {
	if err := m.audit.record(masterapi.AuditEntry{Principal: c.Principal(), TokenID: c.revocable(), Remote: r.RemoteAddr, Action: "ticket"}); err != nil {
		m.log.Error("audit record not written", "err", err)
	}
	t, exp, err := m.signer.Ticket(time.Now(), c)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, masterapi.Ticket{Ticket: t, Expires: exp})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
