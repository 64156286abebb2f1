package agent_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/protocol"
)

// The credential kinds of the agent's auth matrix. The agent has one
// credential, a shared secret: the master's kinds (expired, alg none,
// another key, tickets, machine and client tokens) are all "a wrong
// token" to it, represented by a JWT of each shape.
var agentCredKinds = []string{
	"none", "garbage", "wrong token", "JWT alg none", "master client token", "Basic scheme",
	"token", "token as subprotocol", "token in ?token=",
	"token, foreign Origin", "token, allowed Origin", "foreign Origin, no token",
}

// Item 2: every endpoint of the agent (from its route list: a new
// endpoint without a row fails) × every credential kind, the exact status
// (101: a WebSocket accepted).
func TestAuthMatrix(t *testing.T) {
	web := t.TempDir()
	os.WriteFile(filepath.Join(web, "index.html"), []byte("<p>terminal</p>"), 0o644)
	ta := startAgent(t, agent.Options{AllowedOrigins: []string{"https://ide.example.com"}, WebDir: web})
	type row struct {
		pattern, method, path string
		ws                    bool
		want                  [12]int
	}
	//                                                                                   none garb wrng anon jwt  basc tok  subp ?tok fOrg aOrg fNoT
	rows := []row{
		{"GET /healthz", "GET", "/healthz", false, [12]int{200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}},
		{"GET /", "GET", "/", false, [12]int{200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}},
		{"GET /v1/rpc", "GET", "/v1/rpc", true, [12]int{401, 401, 401, 401, 401, 401, 101, 101, 401, 403, 101, 403}},
		{"POST /v1/rpc", "POST", "/v1/rpc", false, [12]int{401, 401, 401, 401, 401, 401, 200, 200, 401, 403, 200, 403}},
		{"OPTIONS /v1/rpc", "OPTIONS", "/v1/rpc", false, [12]int{204, 204, 204, 204, 204, 204, 204, 204, 204, 403, 204, 403}},
		// No process 7: authorized requests get as far as the lookup.
		{"GET /v1/processes/{id}/attach", "GET", "/v1/processes/7/attach", true, [12]int{401, 401, 401, 401, 401, 401, 404, 404, 401, 403, 404, 403}},
		{"GET /v1/processes/{id}/recording", "GET", "/v1/processes/7/recording", false, [12]int{401, 401, 401, 401, 401, 401, 404, 404, 401, 403, 404, 403}},
		// Port 0 and no path: authorized requests get as far as the checks.
		{"GET /v1/ports/{port}/forward", "GET", "/v1/ports/0/forward", true, [12]int{401, 401, 401, 401, 401, 401, 400, 400, 401, 403, 400, 403}},
		{"GET /v1/files/archive", "GET", "/v1/files/archive", true, [12]int{401, 401, 401, 401, 401, 401, 400, 400, 401, 403, 400, 403}},
		{"GET /v1/files/extract", "GET", "/v1/files/extract", true, [12]int{401, 401, 401, 401, 401, 401, 400, 400, 401, 403, 400, 403}},
	}
	var patterns []string
	for _, r := range rows {
		patterns = append(patterns, r.pattern)
	}
	routes := ta.a.RoutePatterns()
	for _, p := range routes {
		if !slices.Contains(patterns, p) {
			t.Errorf("endpoint %q has no row in the auth matrix: add one", p)
		}
	}
	for _, p := range patterns {
		if !slices.Contains(routes, p) {
			t.Errorf("row %q is not an endpoint of the agent", p)
		}
	}
	const (
		anon      = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJraW5kIjoiY2xpZW50IiwiaXNzIjoicG9ydGhvbGUtbWFzdGVyIn0."
		masterJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJraW5kIjoiY2xpZW50IiwiaXNzIjoicG9ydGhvbGUtbWFzdGVyIn0.3q4Ls2Tf2bSx4lq2o5n3qv8gq0PvW8j7o2d6k3ZxJQw"
	)
	credential := func(kind string) (h http.Header, protos []string, query string) {
		h = http.Header{}
		switch kind {
		case "none":
		case "garbage":
			h.Set("Authorization", "Bearer garbage%00{}")
		case "wrong token":
			h.Set("Authorization", "Bearer wrong-"+token)
		case "JWT alg none":
			h.Set("Authorization", "Bearer "+anon)
		case "master client token":
			h.Set("Authorization", "Bearer "+masterJWT)
		case "Basic scheme":
			h.Set("Authorization", "Basic "+token)
		case "token":
			h.Set("Authorization", "Bearer "+token)
		case "token as subprotocol":
			protos = []string{protocol.SubprotocolRPC, client.TokenSubprotocol(token)}
		case "token in ?token=":
			query = "?token=" + token
		case "token, foreign Origin":
			h.Set("Authorization", "Bearer "+token)
			h.Set("Origin", "https://evil.example")
		case "token, allowed Origin":
			h.Set("Authorization", "Bearer "+token)
			h.Set("Origin", "https://ide.example.com")
		case "foreign Origin, no token":
			h.Set("Origin", "https://evil.example")
		}
		return h, protos, query
	}
	for _, r := range rows {
		for i, kind := range agentCredKinds {
			h, protos, query := credential(kind)
			var status int
			if r.ws {
				_, resp, err := rawDial(t, ta.url+r.path+query, h, protos...)
				if resp == nil {
					t.Errorf("%s with %s: %v", r.path, kind, err)
					continue
				}
				status = resp.StatusCode
			} else {
				var body io.Reader
				if r.method == "POST" {
					body = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"` + protocol.MethodAgentInfo + `"}`)
				}
				req, _ := http.NewRequest(r.method, "http://"+ta.addr+r.path+query, body)
				for k, v := range h {
					req.Header[k] = v
				}
				if len(protos) > 0 {
					req.Header.Set("Sec-WebSocket-Protocol", strings.Join(protos, ", "))
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			if status != r.want[i] {
				t.Errorf("%s %s with %s: %d; want %d", r.method, r.path, kind, status, r.want[i])
			}
		}
	}
}
