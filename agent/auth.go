package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/porthole-dev/porthole/protocol"
)

// httpError is a refusal before any upgrade: a status and a message that
// never contains the token.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

type trustedKey struct{}

// principal is who a request acts for: the name the master passed, on a
// request through the tunnel; else "agent token" (the agent's one
// credential).
func principal(r *http.Request) string {
	if isTrusted(r) {
		if p := r.Header.Get(protocol.HeaderPrincipal); p != "" {
			return p
		}
		return "master"
	}
	return "agent token"
}

// TrustedContext marks ctx as the context of requests whose client was
// authenticated before they reached the agent: those the master sends
// through the agent's outbound tunnel (internal/tunnel), where the
// master checked the client's credentials and removed them. The agent
// skips the token and Origin checks for such requests; the protocol
// version is still checked. Only the server that owns the connection can
// set a request's context, so a client cannot mark its own request.
func TrustedContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, trustedKey{}, true)
}

func isTrusted(r *http.Request) bool {
	v, _ := r.Context().Value(trustedKey{}).(bool)
	return v
}

// authorize checks, in order: the protocol version, the Origin against the
// allow-list, and the token. Nothing starts or attaches without passing.
// Trusted requests (TrustedContext) pass the last two.
func (a *Agent) authorize(r *http.Request) *httpError {
	if err := protocol.CheckVersion(r.Header.Get(protocol.HeaderProtocol)); err != nil {
		return &httpError{http.StatusBadRequest, err.Error()}
	}
	if isTrusted(r) {
		return nil
	}
	if err := a.checkOrigin(r); err != nil {
		return err
	}
	if a.opts.InsecureNoAuth {
		return nil
	}
	tok, ok := requestToken(r)
	if !ok {
		return &httpError{http.StatusUnauthorized, "missing token: send Authorization: Bearer <token>, or the WebSocket subprotocol " + protocol.TokenSubprotocolPrefix + "<base64url token>"}
	}
	if !tokenEqual(tok, a.opts.Token) {
		return &httpError{http.StatusUnauthorized, "invalid token"}
	}
	return nil
}

// tokenEqual compares in constant time, also with respect to length.
func tokenEqual(got, want string) bool {
	g := sha256.Sum256([]byte(got))
	w := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// requestToken finds the token in the Authorization header or, for
// browsers, in a WebSocket subprotocol.
func requestToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && tok != "" {
			return strings.TrimSpace(tok), true
		}
		return "", false
	}
	for _, p := range websocketProtocols(r) {
		if enc, ok := strings.CutPrefix(p, protocol.TokenSubprotocolPrefix); ok {
			b, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil {
				return "", false
			}
			return string(b), true
		}
	}
	return "", false
}

func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// checkOrigin refuses cross-site WebSocket hijacking: a browser request
// must come from the agent's own origin or an allowed one. Trusted
// requests pass: the master checked the origin.
func (a *Agent) checkOrigin(r *http.Request) *httpError {
	origin := r.Header.Get("Origin")
	if origin == "" || isTrusted(r) {
		return nil
	}
	u, err := url.Parse(origin)
	if err == nil && strings.EqualFold(u.Host, r.Host) && (!a.opts.InsecureNoAuth || literalHost(r.Host)) {
		return nil
	}
	for _, o := range a.opts.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return nil
		}
	}
	return &httpError{http.StatusForbidden, fmt.Sprintf("origin %q is not allowed (agent flag -allow-origin)", origin)}
}

// literalHost reports whether host (host[:port], from the Host header)
// is an IP address or localhost: a name no DNS rebinding can take. A
// page of evil.example whose name is made to resolve to the agent sends
// Origin and Host both evil.example, which looks same-origin; without a
// token (-insecure-no-auth) nothing else would stop it, so there the
// same-origin rule holds only for such hosts.
func literalHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return net.ParseIP(h) != nil || strings.EqualFold(h, "localhost")
}

// cors lets pages on allowed origins call POST /v1/rpc (resize from a
// browser terminal on another origin). It reports whether the request may
// go on.
func (a *Agent) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if e := a.checkOrigin(r); e != nil {
		a.refuse(w, r, e)
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	return true
}

// servePreflight answers CORS preflights for POST /v1/rpc.
func (a *Agent) servePreflight(w http.ResponseWriter, r *http.Request) {
	if !a.cors(w, r) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, "+protocol.HeaderProtocol)
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

func (a *Agent) refuse(w http.ResponseWriter, r *http.Request, e *httpError) {
	a.log.Warn("request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "status", e.status, "reason", e.msg)
	http.Error(w, e.msg, e.status)
}

// guard is the prologue of every endpoint that needs the token: authorize
// the request (a refusal is logged without the token), then open a session
// the agent tracks (503 once it is shutting down) and hand it to h, which
// ends it with s.finish.
func (a *Agent) guard(kind string, h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if e := a.authorize(r); e != nil {
			a.refuse(w, r, e)
			return
		}
		s := a.newSession(r, kind)
		if s == nil {
			http.Error(w, ErrShutdown.Error(), http.StatusServiceUnavailable)
			return
		}
		h(w, r, s)
	}
}
