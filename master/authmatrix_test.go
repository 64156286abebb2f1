package master_test

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/dashboard"
)

// The credential kinds of the auth matrix, in its columns' order.
var credKinds = []string{
	"none", "garbage", "expired", "alg none", "another key",
	"machine", "machine of another runtime", "client", "ticket", "ticket used on another path",
	"client token in ?token=", "machine token in ?ticket=",
	"machine, foreign Origin", "client, foreign Origin", "ticket, foreign Origin",
}

// matrixRow is one endpoint: its pattern (as the master registers it), a
// concrete path, whether it is a WebSocket, and the status for each
// credential kind (credKinds' order); 101 is a WebSocket accepted.
type matrixRow struct {
	pattern string
	path    string
	ws      bool
	want    [15]int
}

// all is the same status for every credential kind.
func all(st int) [15]int {
	var w [15]int
	for i := range w {
		w[i] = st
	}
	return w
}

// Item 2: every endpoint of the master (from its route list: a new
// endpoint without a row fails) × every credential kind, the exact status.
// Machine dev of w:e:o has a live agent tunnel.
func TestAuthMatrix(t *testing.T) {
	bin := "/agent-binaries/linux_" + runtime.GOARCH + "/porthole/porthole"
	//                                       none garb exp  none key  mach othr clnt tick used ?tok ?tkt mOrg cOrg tOrg
	rows := []matrixRow{
		{"GET /healthz", "/healthz", false, all(200)},
		{"GET /agent-binaries/{platform}/{name}/{file}", bin, false, all(200)},
		{"/", "/", false, all(200)},
		{"GET /api/websocket", "/api/websocket", true, [15]int{401, 401, 401, 401, 401, 101, 101, 403, 401, 401, 403, 401, 403, 403, 401}},
		{"GET /api/websocket-minor", "/api/websocket-minor", true, [15]int{401, 401, 401, 401, 401, 101, 101, 403, 401, 401, 403, 401, 403, 403, 401}},
		// The machine's own token: 409, its tunnel is live (H2).
		{"GET /api/agent", "/api/agent", true, [15]int{401, 401, 401, 401, 401, 409, 101, 403, 401, 401, 403, 401, 403, 403, 401}},
		{"GET /api/rpc", "/api/rpc", true, [15]int{401, 401, 401, 401, 401, 101, 101, 101, 101, 401, 401, 401, 403, 403, 403}},
		{"GET /api/runtimes", "/api/runtimes", false, [15]int{401, 401, 401, 401, 401, 200, 200, 200, 200, 401, 401, 401, 200, 200, 200}},
		{"GET /api/runtimes/{rid}", "/api/runtimes/w:e:o", false, [15]int{401, 401, 401, 401, 401, 200, 403, 200, 200, 401, 401, 401, 200, 200, 200}},
		{"GET /api/runtimes/{rid}/machines/{name}", "/api/runtimes/w:e:o/machines/dev", false, [15]int{401, 401, 401, 401, 401, 200, 403, 200, 200, 401, 401, 401, 200, 200, 200}},
		{"GET /api/runtimes/{rid}/machines/{name}/logs", "/api/runtimes/w:e:o/machines/dev/logs", false, [15]int{401, 401, 401, 401, 401, 200, 403, 200, 200, 401, 401, 401, 200, 200, 200}},
		{"/api/runtimes/{rid}/machines/{name}/agent/{path...}", "/api/runtimes/w:e:o/machines/dev/agent/v1/rpc", false, [15]int{401, 401, 401, 401, 401, 403, 403, 200, 200, 401, 401, 401, 403, 403, 403}},
		// No server declared on the port: authorized requests get the 404
		// naming the declared ones. No Origin check: only a client token
		// or a ticket opens it (no cookie), and sandboxed pages send
		// "Origin: null".
		{"/api/runtimes/{rid}/machines/{name}/ports/{port}/{path...}", "/api/runtimes/w:e:o/machines/dev/ports/8080/", false, [15]int{401, 401, 401, 401, 401, 403, 403, 404, 404, 401, 401, 401, 403, 404, 404}},
		// A site key opens it, in the path, and nothing else does (a
		// valid one: TestServePortSiteKey).
		{"/api/runtimes/{rid}/machines/{name}/ports/{port}/~/{key}/{path...}", "/api/runtimes/w:e:o/machines/dev/ports/8080/~/x/", false, all(401)},
		{"POST /api/tickets", "/api/tickets", false, [15]int{401, 401, 401, 401, 401, 403, 403, 200, 403, 401, 401, 401, 403, 200, 403}},
		{"GET /metrics", "/metrics", false, [15]int{401, 401, 401, 401, 401, 403, 403, 200, 200, 401, 401, 401, 403, 200, 200}},
		{"GET /api/audit", "/api/audit", false, [15]int{401, 401, 401, 401, 401, 403, 403, 200, 200, 401, 401, 401, 403, 200, 200}},
		{"GET /api/info", "/api/info", false, [15]int{401, 401, 401, 401, 401, 200, 200, 200, 200, 401, 401, 401, 200, 200, 200}},
	}
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.Web = dashboard.Handler() })
	// Every route has a row, every row a route.
	var patterns []string
	for _, r := range rows {
		patterns = append(patterns, r.pattern)
	}
	routes := tm.RoutePatterns()
	for _, p := range routes {
		if !slices.Contains(patterns, p) {
			t.Errorf("endpoint %q has no row in the auth matrix: add one", p)
		}
	}
	for _, p := range patterns {
		if !slices.Contains(routes, p) {
			t.Errorf("row %q is not an endpoint of the master", p)
		}
	}

	client := tm.clientToken(t)
	serveTunnel(t, tm, "agent")
	testutil.WaitFor(t, "the agent is reachable", func() bool {
		st, body, _ := whoami(t, tm, client)
		return st == 200 && body == "agent"
	})
	key, err := os.ReadFile(filepath.Join(tm.dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, k any, c master.Claims) string {
		c.Issuer = "porthole-master"
		s, err := jwt.NewWithClaims(method, c).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expiredClaims := master.Claims{Kind: master.KindClient}
	expiredClaims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
	otherKey := make([]byte, 32)
	rand.Read(otherKey)
	machine := tm.machineToken(t, "w:e:o", "dev")
	ticket := func() string {
		req, _ := http.NewRequest("POST", tm.URL+"/api/tickets", nil)
		req.Header.Set("Authorization", "Bearer "+client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tk struct{ Ticket string }
		if err := json.NewDecoder(resp.Body).Decode(&tk); err != nil || tk.Ticket == "" {
			t.Fatalf("POST /api/tickets: %d %v", resp.StatusCode, err)
		}
		return tk.Ticket
	}
	const evil = "http://evil.example"
	// credential returns the header and query of credential kind i.
	credential := func(i int) (h http.Header, query string) {
		h = http.Header{}
		bearer := func(tok string) { h.Set("Authorization", "Bearer "+tok) }
		switch credKinds[i] {
		case "none":
		case "garbage":
			bearer("garbage.garbage.garbage")
		case "expired":
			bearer(sign(jwt.SigningMethodHS256, key, expiredClaims))
		case "alg none":
			bearer(sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, master.Claims{Kind: master.KindClient}))
		case "another key":
			bearer(sign(jwt.SigningMethodHS256, otherKey, master.Claims{Kind: master.KindClient}))
		case "machine":
			bearer(machine)
		case "machine of another runtime":
			bearer(tm.machineToken(t, "x:y:z", "other"))
		case "client":
			bearer(client)
		case "ticket":
			query = "?ticket=" + ticket()
		case "ticket used on another path":
			tk := ticket()
			if st, _ := get(t, tm.URL+"/api/info?ticket="+tk, "", nil); st != 200 {
				t.Fatalf("a fresh ticket on /api/info: %d", st)
			}
			query = "?ticket=" + tk
		case "client token in ?token=":
			query = "?token=" + client
		case "machine token in ?ticket=":
			query = "?ticket=" + machine
		case "machine, foreign Origin":
			bearer(machine)
			h.Set("Origin", evil)
		case "client, foreign Origin":
			bearer(client)
			h.Set("Origin", evil)
		case "ticket, foreign Origin":
			query = "?ticket=" + ticket()
			h.Set("Origin", evil)
		}
		return h, query
	}
	for _, r := range rows {
		method := "GET"
		if m, _, ok := strings.Cut(r.pattern, " "); ok {
			method = m
		}
		for i, kind := range credKinds {
			h, query := credential(i)
			var status int
			if r.ws {
				ws, resp, err := websocket.DefaultDialer.Dial(tm.WS+r.path+query, h)
				if ws != nil {
					ws.Close()
				}
				if resp == nil {
					t.Errorf("%s with %s: %v", r.path, kind, err)
					continue
				}
				status = resp.StatusCode
			} else {
				req, _ := http.NewRequest(method, tm.URL+r.path+query, nil)
				req.Header = h
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			if status != r.want[i] {
				t.Errorf("%s %s with %s: %d; want %d", method, r.path, kind, status, r.want[i])
			}
		}
	}
}
