package master

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
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
	c, err := m.signer.Verify(tok)
	if err != nil {
		return nil, &httpError{http.StatusUnauthorized, err.Error()}
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
	c, err := m.signer.Verify(tok)
	if err != nil {
		return nil, &httpError{http.StatusUnauthorized, err.Error()}
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

// refuse answers e and logs it with the request, never the token.
func (m *Master) refuse(w http.ResponseWriter, r *http.Request, e *httpError) {
	m.log.Warn("request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "status", e.status, "reason", e.msg)
	writeJSONError(w, e.status, e.msg)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
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

// serveTicket issues a ticket to a client (its token as Bearer).
func (m *Master) serveTicket(w http.ResponseWriter, r *http.Request) {
	c, e := m.clientAuth(r, false)
	if e != nil {
		m.refuse(w, r, e)
		return
	}
	if c.Kind == KindTicket {
		m.refuse(w, r, &httpError{http.StatusForbidden, "a ticket cannot get another ticket"})
		return
	}
	t, exp, err := m.signer.Ticket(time.Now())
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, map[string]any{"ticket": t, "expires": exp})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
