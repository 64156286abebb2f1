package master_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol"
)

// -allow-origin (Options.AllowedOrigins): a page of an allowed origin
// gets a ticket (preflight, then POST with CORS headers), opens the live
// socket and the agent proxy's WebSocket with it, and calls the agent's
// POST /v1/rpc through the proxy with one Access-Control-Allow-Origin;
// another origin is refused on each, and the machines' endpoints, the
// audit trail and the metrics stay same-origin for every origin.
func TestAllowOrigin(t *testing.T) {
	const ide, evil = "http://ide.example", "http://evil.example"
	for _, allowed := range [][]string{{ide}, {"*"}} {
		t.Run(strings.Join(allowed, ","), func(t *testing.T) {
			tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.AllowedOrigins = allowed })
			client := tm.clientToken(t)
			// An agent that answers CORS as the real one does (it echoes an
			// Origin it gets), so a second header would show.
			serveTunnelHandler(t, tm, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if o := r.Header.Get("Origin"); o != "" {
					w.Header().Set("Access-Control-Allow-Origin", o)
				}
				io.WriteString(w, "agent")
			}))
			testutil.WaitFor(t, "the agent is reachable", func() bool {
				st, body, _ := whoami(t, tm, client)
				return st == 200 && body == "agent"
			})
			do := func(method, path, origin string, h map[string]string) (*http.Response, string) {
				t.Helper()
				req, _ := http.NewRequest(method, tm.URL+path, nil)
				if origin != "" {
					req.Header.Set("Origin", origin)
				}
				for k, v := range h {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp, string(b)
			}
			preflight := func(path, method, origin string) int {
				resp, _ := do("OPTIONS", path, origin, map[string]string{"Access-Control-Request-Method": method, "Access-Control-Request-Headers": "authorization"})
				if resp.StatusCode == 204 && (resp.Header.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")) {
					t.Errorf("preflight %s %s from %s: headers %v", method, path, origin, resp.Header)
				}
				return resp.StatusCode
			}
			const proxyRPC = "/api/runtimes/w:e:o/machines/dev/agent/v1/rpc"
			for _, c := range []struct {
				path, method string
				want         int
			}{
				{"/api/tickets", "POST", 204},
				{"/api/runtimes", "GET", 204},
				{"/api/runtimes/w:e:o/machines/dev/logs", "GET", 204},
				{proxyRPC, "POST", 204},
				{"/api/audit", "GET", 403},
				{"/metrics", "GET", 403},
				{"/api/websocket", "GET", 403},
			} {
				if st := preflight(c.path, c.method, ide); st != c.want {
					t.Errorf("preflight %s %s from the allowed origin: %d, want %d", c.method, c.path, st, c.want)
				}
				if len(allowed) == 1 && allowed[0] == ide {
					if st := preflight(c.path, c.method, evil); st != 403 {
						t.Errorf("preflight %s %s from another origin: %d, want 403", c.method, c.path, st)
					}
				}
			}

			ticket := func(origin string) string {
				resp, body := do("POST", "/api/tickets", origin, map[string]string{"Authorization": "Bearer " + client})
				if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != origin {
					t.Fatalf("POST /api/tickets from %s: %d %q, Access-Control-Allow-Origin %q", origin, resp.StatusCode, body, resp.Header.Get("Access-Control-Allow-Origin"))
				}
				var tk struct{ Ticket string }
				json.Unmarshal([]byte(body), &tk)
				return tk.Ticket
			}
			dial := func(path, origin string) int {
				t.Helper()
				h := http.Header{"Origin": {origin}}
				ws, resp, err := websocket.DefaultDialer.Dial(tm.WS+path+"?ticket="+ticket(ide), h)
				if err == nil {
					ws.Close()
				}
				if resp == nil {
					t.Fatalf("dial %s: %v", path, err)
				}
				return resp.StatusCode
			}
			if st := dial("/api/rpc", ide); st != 101 {
				t.Errorf("the live socket from the allowed origin: %d, want 101", st)
			}
			// The fake agent answers 200 to the upgrade: the master let it
			// through.
			if st := dial("/api/runtimes/w:e:o/machines/dev/agent/v1/rpc", ide); st != 200 {
				t.Errorf("the agent's control socket from the allowed origin: %d, want the agent's 200", st)
			}
			// One Access-Control-Allow-Origin: the master's (the tunnel does
			// not pass Origin on, so the agent adds none).
			resp, body := do("POST", proxyRPC, ide, map[string]string{"Authorization": "Bearer " + client, "Content-Type": "application/json", protocol.HeaderProtocol: protocol.Version})
			if got := resp.Header.Values("Access-Control-Allow-Origin"); resp.StatusCode != 200 || len(got) != 1 || got[0] != ide {
				t.Errorf("POST through the proxy from the allowed origin: %d %q, Access-Control-Allow-Origin %q", resp.StatusCode, body, got)
			}
			if len(allowed) == 1 && allowed[0] == ide {
				if st := dial("/api/rpc", evil); st != 403 {
					t.Errorf("the live socket from another origin: %d, want 403", st)
				}
				if st := dial("/api/runtimes/w:e:o/machines/dev/agent/v1/rpc", evil); st != 403 {
					t.Errorf("the agent's control socket from another origin: %d, want 403", st)
				}
				resp, _ := do("POST", "/api/tickets", evil, map[string]string{"Authorization": "Bearer " + client})
				if resp.Header.Get("Access-Control-Allow-Origin") != "" {
					t.Errorf("a ticket for another origin carries Access-Control-Allow-Origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
				}
			}
			// Machines are not browsers: an allowed origin changes nothing.
			ws, resp2, err := websocket.DefaultDialer.Dial(tm.WS+"/api/websocket", http.Header{"Origin": {ide}, "Authorization": {"Bearer " + tm.machineToken(t, "w:e:o", "m2")}})
			if err == nil {
				ws.Close()
			}
			if resp2 == nil || resp2.StatusCode != 403 {
				t.Errorf("a machine's endpoint from an allowed origin: %v %v, want 403", resp2, err)
			}
		})
	}
}
