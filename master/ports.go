package master

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// PortCSP is the Content-Security-Policy of every response of a
// machine's server served by the master (servePort): a sandbox without
// allow-same-origin, so the server's pages run in an opaque origin and
// cannot use the master's origin (its API, the dashboard's storage).
const PortCSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// siteKeyDir is the path segment before a site key: a server's URLs for
// a browser are …/ports/{port}/~/{key}/PATH (docs/security.md).
const siteKeyDir = "~"

// servePort serves a machine's HTTP server through the agent's tunnel:
// /api/runtimes/{rid}/machines/{name}/ports/{port}/PATH is
// http://127.0.0.1:PORT/PATH in the machine, carried by the agent's port
// forwarding (docs/protocol.md §19), one forwarded connection per
// request. The port is one the machine's installers declare as a server,
// or one its agent reports listening (ports.changed); never an internal
// server's. The client's credentials for the master (Authorization,
// Cookie, ?ticket=) are not passed on; the server's cookies are dropped;
// every response is sandboxed (PortCSP).
//
// A browser comes with a ticket (the dashboard's link): a GET is answered
// with a redirect to …/ports/{port}/~/{key}/PATH, where key is a site key
// for this port of this machine (Signer.SiteKey), so that the page's
// relative links and subresources carry it (sandboxed pages send no
// cookies); c is then the site key (siteAuth).
func (m *Master) servePort(w http.ResponseWriter, r *http.Request, c *Claims) {
	k := store.Key{Runtime: r.PathValue("rid"), Machine: r.PathValue("name")}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("port %q: want a TCP port 1-65535", r.PathValue("port")))
		return
	}
	mv := m.state.machineView(k, true)
	if mv == nil {
		e := m.noMachine(k)
		writeJSONError(w, e.status, e.msg)
		return
	}
	if e := portServed(mv, port); e != nil {
		writeJSONError(w, e.status, e.msg)
		return
	}
	sess := m.agents.get(k)
	if sess == nil {
		writeJSONError(w, http.StatusBadGateway, "the agent of machine "+k.Machine+" of runtime "+k.Runtime+" is not connected")
		return
	}
	// The prefix as the client wrote it (its escaping), for Location and
	// X-Forwarded-Prefix: …/ports/{port}, and /~/{key} with a site key.
	segs := strings.SplitN(r.URL.EscapedPath(), "/", 9) // "", api, runtimes, rid, machines, name, ports, port, rest
	prefix, rest := strings.Join(segs[:8], "/"), ""
	if len(segs) == 9 {
		rest = segs[8]
	}
	if c.Kind == KindSite {
		d, key, more := cut3(rest)
		prefix, rest = prefix+"/"+d+"/"+key, more
	}
	if c.Kind == KindTicket && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		m.redirectToSite(w, r, c, k, port, prefix, rest)
		return
	}
	dialer := sess.Dialer()
	origin := "127.0.0.1:" + strconv.Itoa(port)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme, out.URL.Host, out.Host = "http", origin, ""
			out.URL.Path, out.URL.RawPath = "/"+pr.In.PathValue("path"), ""
			if q := out.URL.Query(); q.Has("ticket") || q.Has("token") {
				q.Del("ticket")
				q.Del("token")
				out.URL.RawQuery = q.Encode()
			}
			out.Header.Del("Authorization")
			out.Header.Del("Cookie")
			out.Header.Del("Referer") // it may hold the site key
			out.Header.Set("X-Forwarded-Prefix", prefix)
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				c, err := client.DialPort(ctx, client.Options{URL: "ws://agent.tunnel", Dialer: dialer}, port)
				if err != nil {
					return nil, err
				}
				return c.NetConn(), nil
			},
			DisableKeepAlives:  true, // a forwarded connection per request
			DisableCompression: true,
		},
		FlushInterval: -1, // server-sent events and long polls pass at once
		ModifyResponse: func(resp *http.Response) error {
			h := resp.Header
			h.Del("Set-Cookie")
			h.Del("Clear-Site-Data") // it would clear the master origin's storage: the dashboard's token
			h.Set("Content-Security-Policy", PortCSP)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer") // the URL holds the site key
			if loc := h.Get("Location"); loc != "" {
				h.Set("Location", rebase(loc, origin, port, prefix))
			}
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			writeJSONError(w, http.StatusBadGateway, fmt.Sprintf("port %d of machine %s: %v", port, k.Machine, err))
		},
	}
	rp.ServeHTTP(w, r)
}

// portServed refuses a port that mv's installers do not declare as a
// server and its agent does not report listening, or an internal
// server's.
func portServed(mv *masterapi.Machine, port int) *httpError {
	p := strconv.Itoa(port)
	declared, internal := false, false
	var known []string
	for _, s := range mv.Servers {
		sp, _, _ := strings.Cut(s.Port, "/")
		if s.Internal() {
			internal = internal || sp == p
			continue
		}
		known = append(known, s.Port+" ("+s.Name+")")
		declared = declared || sp == p
	}
	var listening []string
	detected := false
	for _, lp := range mv.Ports {
		listening = append(listening, strconv.Itoa(lp.Port))
		detected = detected || lp.Port == port
	}
	switch {
	case internal:
		return &httpError{http.StatusForbidden, fmt.Sprintf("port %d of machine %s is an internal server: not served to clients", port, mv.Name)}
	case !declared && !detected:
		if len(known) == 0 {
			known = []string{"none"}
		}
		if len(listening) == 0 {
			listening = []string{"none"}
		}
		return &httpError{http.StatusNotFound, fmt.Sprintf("machine %s declares no server on port %d and nothing listens on it (servers: %s; listening: %s)",
			mv.Name, port, strings.Join(known, ", "), strings.Join(slices.Compact(listening), ", "))}
	}
	return nil
}

// redirectToSite answers a browser's ticket with a redirect to the same
// page under a new site key (audited as "site"), the ticket taken out of
// the query.
func (m *Master) redirectToSite(w http.ResponseWriter, r *http.Request, c *Claims, k store.Key, port int, prefix, rest string) {
	key, _, err := m.signer.SiteKey(time.Now(), c, k.Runtime, k.Machine, port)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if err := m.audit.record(masterapi.AuditEntry{Principal: c.Principal(), TokenID: c.revocable(), Remote: r.RemoteAddr,
		Action: "site", Runtime: k.Runtime, Machine: k.Machine, Path: "/" + r.PathValue("path"), Port: port}); err != nil {
		m.log.Error("audit record not written", "err", err)
	}
	loc := prefix + "/" + siteKeyDir + "/" + key + "/" + rest
	var q []string
	for _, kv := range strings.Split(r.URL.RawQuery, "&") {
		if name, _, _ := strings.Cut(kv, "="); kv != "" && name != "ticket" {
			q = append(q, kv)
		}
	}
	if len(q) > 0 {
		loc += "?" + strings.Join(q, "&")
	}
	h := w.Header()
	h.Set("Location", loc)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusSeeOther)
}

// rebase makes a server's redirect stay under prefix: a path ("/login")
// or a URL of the server's own address (http://127.0.0.1:PORT/…,
// http://localhost:PORT/…) becomes prefix + its path; others are kept.
func rebase(loc, origin string, port int, prefix string) string {
	for _, o := range []string{"http://" + origin, "http://localhost:" + strconv.Itoa(port)} {
		if rest, ok := strings.CutPrefix(loc, o); ok && (rest == "" || strings.ContainsAny(rest[:1], "/?#")) {
			loc = "/" + strings.TrimPrefix(rest, "/")
			break
		}
	}
	if strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") && !strings.HasPrefix(loc, prefix+"/") {
		return prefix + loc
	}
	return loc
}

// cut3 splits "a/b/rest" into a, b and rest.
func cut3(s string) (a, b, rest string) {
	a, s, _ = strings.Cut(s, "/")
	b, rest, _ = strings.Cut(s, "/")
	return a, b, rest
}
