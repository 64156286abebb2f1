package master_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

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
		req, _ := newGet(url, token)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
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
		{base + strconv.Itoa(undeclared) + "/", client, 404, "declares no server on port " + strconv.Itoa(undeclared) + " (servers: " + strconv.Itoa(web) + "/tcp (web))"},
		{base + "0/", client, 400, "want a TCP port 1-65535"},
		{base + strconv.Itoa(web) + "/healthz", "", 401, "missing client token"},
		{base + strconv.Itoa(web) + "/healthz", tm.machineToken(t, rid, name), 403, "cannot do this"},
		{tm.URL + "/api/runtimes/" + rid + "/machines/nope/ports/" + strconv.Itoa(web) + "/", client, 404, "of runtime"},
	}
	for _, c := range refusals {
		if resp, body := do(c.url, c.token, nil); resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %q, want %d %q", c.url, resp.StatusCode, body, c.status, c.want)
		}
	}
}
