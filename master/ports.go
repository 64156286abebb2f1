package master

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/master/store"
)

// PortCSP is the Content-Security-Policy of every response of a
// machine's server served by the master (servePort): a sandbox without
// allow-same-origin, so the server's pages run in an opaque origin and
// cannot use the master's origin (its API, the dashboard's storage).
const PortCSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// servePort serves an installer's HTTP server through the agent's
// tunnel: /api/runtimes/{rid}/machines/{name}/ports/{port}/PATH is
// http://127.0.0.1:PORT/PATH in the machine, carried by the agent's port
// forwarding (docs/protocol.md §19), one forwarded connection per
// request. Only ports the machine's installers declare as servers are
// served, and never an internal one. The client's credentials for the
// master (Authorization, Cookie, ?ticket=) are not passed on; the
// server's cookies are dropped; every response is sandboxed (PortCSP).
func (m *Master) servePort(w http.ResponseWriter, r *http.Request, _ *Claims) {
	k := store.Key{Runtime: r.PathValue("rid"), Machine: r.PathValue("name")}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("port %q: want a TCP port 1-65535", r.PathValue("port")))
		return
	}
	mv := m.state.machineView(k, true)
	if mv == nil {
		writeJSONError(w, http.StatusNotFound, "machine "+strconv.Quote(k.Machine)+" of runtime "+strconv.Quote(k.Runtime)+" not found")
		return
	}
	declared, internal := false, false
	var known []string
	for _, s := range mv.Servers {
		p, _, _ := strings.Cut(s.Port, "/")
		if s.Internal() {
			internal = internal || p == strconv.Itoa(port)
			continue
		}
		known = append(known, s.Port+" ("+s.Name+")")
		declared = declared || p == strconv.Itoa(port)
	}
	switch {
	case !declared && internal:
		writeJSONError(w, http.StatusForbidden, fmt.Sprintf("port %d of machine %s is an internal server: not served to clients", port, k.Machine))
		return
	case !declared:
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("machine %s declares no server on port %d (servers: %s)", k.Machine, port, strings.Join(known, ", ")))
		return
	}
	sess := m.agents.get(k)
	if sess == nil {
		writeJSONError(w, http.StatusBadGateway, "the agent of machine "+k.Machine+" of runtime "+k.Runtime+" is not connected")
		return
	}
	prefix := fmt.Sprintf("/api/runtimes/%s/machines/%s/ports/%d", k.Runtime, k.Machine, port)
	dialer := sess.Dialer()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme, out.URL.Host, out.Host = "http", "127.0.0.1:"+strconv.Itoa(port), ""
			out.URL.Path, out.URL.RawPath = "/"+pr.In.PathValue("path"), ""
			if q := out.URL.Query(); q.Has("ticket") || q.Has("token") {
				q.Del("ticket")
				q.Del("token")
				out.URL.RawQuery = q.Encode()
			}
			out.Header.Del("Authorization")
			out.Header.Del("Cookie")
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
			h.Set("Content-Security-Policy", PortCSP)
			h.Set("X-Content-Type-Options", "nosniff")
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
