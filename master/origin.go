package master

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/porthole-dev/porthole/protocol"
)

// Browser origins. The master's own pages (the dashboard) are on its
// origin. Pages of other origins listed in Options.AllowedOrigins
// (porthole-master -allow-origin: an IDE embedding porthole terminals)
// may also use the endpoints clients use with a token or a ticket: the
// live socket, the reading API, tickets and the agent proxy (its
// WebSockets and POST /v1/rpc). Their answers carry CORS headers for such
// an origin, and their preflights are answered. The other endpoints stay
// same-origin: the machines' (ingest, tunnel: machines are not
// browsers), the audit trail and the metrics (admin views), and the
// ports proxy (sandboxed pages, "Origin: null"). The master has no
// cookie: every endpoint wants a token in Authorization or a ticket in
// the URL, which a page of another origin has only if it was given one.

// ParseAllowedOrigin checks one -allow-origin value: "*", or an origin
// (scheme://host[:port], http or https, no path), returned without a
// trailing slash.
func ParseAllowedOrigin(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q is not an origin: want scheme://host[:port] (http or https, no path), or * for any", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

// originAllowed reports whether a client's request may come from its
// Origin: none (not a browser), the master's own, or an allowed one.
func (m *Master) originAllowed(r *http.Request) bool {
	return sameOrigin(r) || m.foreignAllowed(r)
}

// foreignAllowed reports whether r has another origin's Origin that
// Options.AllowedOrigins lists.
func (m *Master) foreignAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || sameOrigin(r) {
		return false
	}
	for _, a := range m.opts.AllowedOrigins {
		if a == "*" || strings.EqualFold(a, o) {
			return true
		}
	}
	return false
}

// checkClientOrigin refuses a browser's request from an origin that is
// neither the master's nor allowed.
func (m *Master) checkClientOrigin(r *http.Request, _ *Claims) *httpError {
	if !m.originAllowed(r) {
		return &httpError{http.StatusForbidden, "Origin " + r.Header.Get("Origin") + " is not the master's nor allowed (porthole-master -allow-origin)"}
	}
	return nil
}

// corsHeaders lets an allowed page of another origin read the answer.
func (m *Master) corsHeaders(w http.ResponseWriter, r *http.Request) {
	if !m.foreignAllowed(r) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
	h.Add("Vary", "Origin")
}

// preflight answers a CORS preflight (OPTIONS with
// Access-Control-Request-Method) for an endpoint whose route has cors
// set, from an allowed origin; any other is refused with 403.
func (m *Master) preflight(w http.ResponseWriter, r *http.Request, mux *http.ServeMux, cors map[string]bool) {
	r2 := r.Clone(r.Context())
	r2.Method = r.Header.Get("Access-Control-Request-Method")
	if _, pattern := mux.Handler(r2); !cors[pattern] {
		m.refuse(w, r, &httpError{http.StatusForbidden, "no cross-origin requests to " + r.URL.Path})
		return
	}
	if !m.foreignAllowed(r) {
		m.refuse(w, r, &httpError{http.StatusForbidden, "Origin " + r.Header.Get("Origin") + " is not allowed (porthole-master -allow-origin)"})
		return
	}
	m.corsHeaders(w, r)
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "GET, POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, "+protocol.HeaderProtocol)
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}
