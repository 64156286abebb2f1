package master_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// An installer's HTTP server, served to clients through the agent's
// tunnel: declared servers only, never internal ones, sandboxed, without
// the client's credentials or the server's cookies.
func TestServePort(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid, name = "w:e:o", "dev"
	web, admin, undeclared := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	cfg := config(t, `[{"id":"org.demo.web","script":"exec /proc/$PPID/exe agent -insecure-no-auth -listen 127.0.0.1:`+strconv.Itoa(web)+`",
  "servers":{"web":{"port":"`+strconv.Itoa(web)+`/tcp","protocol":"http","path":"/healthz","attributes":{}},
             "admin":{"port":"`+strconv.Itoa(admin)+`/tcp","protocol":"http","attributes":{"internal":"true"}}}}]`)
	bootstrap(t, tm.WS, tm.machineToken(t, rid, name), rid, name, cfg)
	tunnelAgent(t, tm, rid, name)
	client := tm.clientToken(t)
	base := tm.URL + "/api/runtimes/" + rid + "/machines/" + name + "/ports/"
	do := func(url, token string, h http.Header) (*http.Response, string) {
		t.Helper()
		return fetch(t, httpClient, url, token, h)
	}
	testutil.WaitFor(t, "the web server served through the master", func() bool {
		resp, _ := do(base+strconv.Itoa(web)+"/healthz", client, nil)
		return resp.StatusCode == http.StatusOK
	})
	resp, body := do(base+strconv.Itoa(web)+"/healthz", client, http.Header{"Cookie": {"dashboard=secret"}})
	if body != "ok\n" || resp.Header.Get("Content-Security-Policy") != master.PortCSP || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("served: %d %q, headers %v", resp.StatusCode, body, resp.Header)
	}
	// The path reaches the server as its own: the agent's 404 for another.
	if resp, body := do(base+strconv.Itoa(web)+"/nope", client, nil); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "404 page not found") {
		t.Errorf("a missing page: %d %q", resp.StatusCode, body)
	}
	// A ticket in the URL, for a browser's link.
	var tk masterapi.Ticket
	req, _ := http.NewRequest("POST", tm.URL+"/api/tickets", nil)
	req.Header.Set("Authorization", "Bearer "+client)
	if r, err := httpClient.Do(req); err != nil || json.NewDecoder(r.Body).Decode(&tk) != nil {
		t.Fatalf("ticket: %v", err)
	} else {
		r.Body.Close()
	}
	if resp, body := do(base+strconv.Itoa(web)+"/healthz?ticket="+tk.Ticket, "", nil); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("with a ticket: %d %q", resp.StatusCode, body)
	}

	refusals := []struct {
		url, token string
		status     int
		want       string
	}{
		{base + strconv.Itoa(admin) + "/", client, 403, "is an internal server"},
		{base + strconv.Itoa(undeclared) + "/", client, 404, "declares no server on port " + strconv.Itoa(undeclared) + " and nothing listens on it (servers: " + strconv.Itoa(web) + "/tcp (web); listening: "},
		{base + "0/", client, 400, "want a TCP port 1-65535"},
		{base + strconv.Itoa(web) + "/healthz", "", 401, "missing client token"},
		{base + strconv.Itoa(web) + "/healthz", tm.machineToken(t, rid, name), 403, "cannot do this"},
		{tm.URL + "/api/runtimes/" + rid + "/machines/nope/ports/" + strconv.Itoa(web) + "/", client, 404, "no machine nope in runtime w:e:o (known: dev)"},
		{tm.URL + "/api/runtimes/" + rid + "/machines/nope/agent/v1/rpc", client, 404, "no machine nope in runtime w:e:o (known: dev)"},
		{tm.URL + "/api/runtimes/x:y:z/machines/nope/agent/v1/rpc", client, 404, "no machine nope: no runtime x:y:z (known: w:e:o)"},
	}
	for _, c := range refusals {
		if resp, body := do(c.url, c.token, nil); resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %q, want %d %q", c.url, resp.StatusCode, body, c.status, c.want)
		}
	}
}

// fetch GETs url with c, token as Bearer (unless empty) and the headers h,
// and returns the answer and its body.
func fetch(t *testing.T, c *http.Client, url, token string, h http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := newGet(url, token)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// noRedirect is an HTTP client that returns redirects instead of
// following them.
var noRedirect = &http.Client{Timeout: wait, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// A browser's visit: its ticket is answered with a redirect to the same
// page under a site key, which then opens that port of that machine only
// (any path, any number of requests), until the token it came from is
// revoked. Detected ports are served like declared ones; an internal
// server's never, detected or not, and clients do not see it listening.
func TestServePortSiteKey(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid, name = "w:e:o", "dev"
	web, admin := testutil.FreePort(t), testutil.FreePort(t)
	cfg := config(t, `[{"id":"org.demo.web","script":"exec /proc/$PPID/exe agent -insecure-no-auth -listen 127.0.0.1:`+strconv.Itoa(web)+`",
  "servers":{"web":{"port":"`+strconv.Itoa(web)+`/tcp","protocol":"http","path":"/healthz","attributes":{}},
             "admin":{"port":"`+strconv.Itoa(admin)+`/tcp","protocol":"http","attributes":{"internal":"true"}}}}]`)
	bootstrap(t, tm.WS, tm.machineToken(t, rid, name), rid, name, cfg)
	tunnelAgent(t, tm, rid, name)
	tunnelAgent(t, tm, rid, "other")
	alice := tm.issue(t, master.IssueOptions{Kind: master.KindClient, Name: "alice"})
	base := tm.URL + "/api/runtimes/" + rid + "/machines/" + name + "/ports/"
	ticket := func() string {
		req, _ := http.NewRequest("POST", tm.URL+"/api/tickets", nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		var tk masterapi.Ticket
		r, err := httpClient.Do(req)
		if err != nil || json.NewDecoder(r.Body).Decode(&tk) != nil {
			t.Fatalf("ticket: %v", err)
		}
		r.Body.Close()
		return tk.Ticket
	}
	do := func(url string) (*http.Response, string) {
		t.Helper()
		return fetch(t, noRedirect, url, "", nil)
	}
	testutil.WaitFor(t, "the web server served through the master", func() bool {
		st, _ := get(t, base+strconv.Itoa(web)+"/healthz", alice, nil)
		return st == http.StatusOK
	})

	// The ticket: a redirect to the same path and query under a key.
	resp, _ := do(base + strconv.Itoa(web) + "/healthz?a=1&ticket=" + ticket() + "&b=2")
	loc := resp.Header.Get("Location")
	prefix := "/api/runtimes/" + rid + "/machines/" + name + "/ports/" + strconv.Itoa(web) + "/~/"
	key, tail, _ := strings.Cut(strings.TrimPrefix(loc, prefix), "/")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, prefix) || key == "" || tail != "healthz?a=1&b=2" ||
		resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("the ticket's answer: %d, Location %q, headers %v", resp.StatusCode, loc, resp.Header)
	}
	site := tm.URL + prefix + key
	for range 3 { // a key serves any number of requests
		if resp, body := do(site + "/healthz"); resp.StatusCode != 200 || body != "ok\n" ||
			resp.Header.Get("Content-Security-Policy") != master.PortCSP || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Fatalf("with the site key: %d %q %v", resp.StatusCode, body, resp.Header)
		}
	}
	if resp, body := do(site + "/nope"); resp.StatusCode != 404 || !strings.Contains(body, "404 page not found") {
		t.Errorf("another path of the site: %d %q", resp.StatusCode, body)
	}

	// A server listening on a port nobody declared: seen by the agent,
	// shown on the machine, served through the master.
	detected := testutil.ServeTCP(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\ndetected")
	})
	listening := func(token string, port int) bool {
		var mv masterapi.Machine
		get(t, tm.URL+"/api/runtimes/"+rid+"/machines/"+name, token, &mv)
		return slices.ContainsFunc(mv.Ports, func(p masterapi.ListeningPort) bool { return p.Port == port })
	}
	testutil.WaitFor(t, "the detected port on the machine", func() bool { return listening(alice, detected) })
	if st, body := get(t, base+strconv.Itoa(detected)+"/", alice, nil); st != 200 || body != "detected" {
		t.Errorf("a detected port: %d %q", st, body)
	}
	resp, _ = do(base + strconv.Itoa(detected) + "/?ticket=" + ticket())
	if resp, body := do(tm.URL + resp.Header.Get("Location")); resp.StatusCode != 200 || body != "detected" {
		t.Errorf("a detected port with a site key: %d %q", resp.StatusCode, body)
	}

	// A WebSocket of the site (a dev server's live reload), through its
	// key: the upgrade passes, messages flow both ways.
	wsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, b, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, append([]byte("echo "), b...)) != nil {
				return
			}
		}
	}))
	defer wsSrv.Close()
	wsPort := wsSrv.Listener.Addr().(*net.TCPAddr).Port
	testutil.WaitFor(t, "the WebSocket server's port on the machine", func() bool { return listening(alice, wsPort) })
	resp, _ = do(base + strconv.Itoa(wsPort) + "/live?ticket=" + ticket())
	ws, wresp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(tm.URL, "http")+resp.Header.Get("Location"), http.Header{"Origin": {"null"}})
	if err != nil {
		t.Fatalf("WebSocket through the site key: %v %v", err, wresp)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("reload?"))
	if _, b, err := ws.ReadMessage(); err != nil || string(b) != "echo reload?" {
		t.Errorf("WebSocket through the site key: %q, %v", b, err)
	}
	ws.Close()

	// The internal server's port: refused, and hidden from clients even
	// when something listens on it (the machine's token sees it).
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(admin))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	machineTok := tm.machineToken(t, rid, name)
	testutil.WaitFor(t, "the internal port seen by the machine's token", func() bool { return listening(machineTok, admin) })
	if listening(alice, admin) {
		t.Error("a client sees the internal server's port listening")
	}

	sitePath := func(machine string, port int) string {
		return tm.URL + "/api/runtimes/" + rid + "/machines/" + machine + "/ports/" + strconv.Itoa(port) + "/~/"
	}
	refusals := []struct {
		url    string
		status int
		want   string
	}{
		{base + strconv.Itoa(admin) + "/?ticket=" + ticket(), 403, "is an internal server"},
		{sitePath(name, detected) + key + "/", 403, "opens port " + strconv.Itoa(web) + " of machine dev of runtime w:e:o only"},
		{sitePath("other", web) + key + "/", 403, "opens port " + strconv.Itoa(web) + " of machine dev"},
		{sitePath(name, web) + "garbage/healthz", 401, "this link to a machine's server is not valid"},
		{sitePath(name, web) + alice + "/healthz", 401, "a client token is not a site key"},
		{base + strconv.Itoa(web) + "/healthz", 401, "missing client token"},
	}
	for _, c := range refusals {
		if resp, body := do(c.url); resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %q, want %d %q", c.url, resp.StatusCode, body, c.status, c.want)
		}
	}

	// Revoking the token ends its site keys.
	if n, err := master.NewRegistry(tm.dir).Revoke("alice", time.Now()); err != nil || n != 1 {
		t.Fatalf("Revoke: %d, %v", n, err)
	}
	testutil.WaitFor(t, "the site key refused after the revocation", func() bool {
		resp, body := do(site + "/healthz")
		return resp.StatusCode == 401 && strings.Contains(body, "revoked")
	})
	// Nothing of the key in the audit trail's paths or the log.
	var page masterapi.AuditPage
	get(t, tm.URL+"/api/audit", tm.clientToken(t), &page)
	sites := 0
	for _, e := range page.Entries {
		if e.Action == "site" {
			sites++
			if e.Principal != "alice" || e.Machine != name || !slices.Contains([]int{web, detected, wsPort}, e.Port) || strings.Contains(e.Path, key) {
				t.Errorf("audit entry %+v", e)
			}
		}
	}
	if sites != 3 {
		t.Errorf("%d site entries in the audit trail, want 3", sites)
	}
}
