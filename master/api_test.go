package master_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// Browsers get a short-lived ticket for WebSocket URLs; long-lived
// tokens are refused in URLs; expired tickets are refused, and so is a
// ticket used before.
func TestTickets(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	client := tm.clientToken(t)
	post := func(auth string) (int, string) {
		req, _ := http.NewRequest("POST", tm.URL+"/api/tickets", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	newTicket := func() string {
		st, body := post(client)
		if st != 200 {
			t.Fatalf("POST /api/tickets: %d %s", st, body)
		}
		ticket := body[strings.Index(body, `"ticket":"`)+10:]
		return ticket[:strings.Index(ticket, `"`)]
	}
	ticket := newTicket()
	expired, _, _ := tm.signer.Ticket(time.Now().Add(-2*master.TicketTTL), &master.Claims{Kind: master.KindClient})
	for _, c := range []struct {
		name, query string
		status      int
	}{
		{"ticket", "?ticket=" + ticket, 101},
		{"ticket used again", "?ticket=" + ticket, 401}, // single use
		{"client token in ?ticket=", "?ticket=" + client, 401},
		{"client token in ?token=", "?token=" + client, 401},
		{"expired ticket", "?ticket=" + expired, 401},
		{"machine token in ?ticket=", "?ticket=" + tm.machineToken(t, "w:e:o", "m"), 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			ws, resp, err := websocket.DefaultDialer.Dial(tm.WS+"/api/rpc"+c.query, nil)
			if ws != nil {
				ws.Close()
			}
			if resp == nil || resp.StatusCode != c.status {
				t.Fatalf("dial: %v %v, want %d", err, resp, c.status)
			}
		})
	}
	if st, _ := post(""); st != 401 {
		t.Errorf("a ticket without a token: %d", st)
	}
	if st, _ := post(newTicket()); st != 403 {
		t.Errorf("a ticket for a ticket: %d, want 403", st)
	}
	if st, _ := post(tm.machineToken(t, "w:e:o", "m")); st != 403 {
		t.Errorf("a ticket for a machine token: %d, want 403", st)
	}
	// A page from another origin cannot open the client socket.
	h := http.Header{"Origin": {"https://evil.example"}}
	if _, resp, _ := websocket.DefaultDialer.Dial(tm.WS+"/api/rpc?ticket="+newTicket(), h); resp == nil || resp.StatusCode != 403 {
		t.Errorf("foreign Origin: %v, want 403", resp)
	}
}

// Che's binary path serves the porthole binary (the bootstrapper when run
// under that name) with its sha256; missing platforms are a clear 404.
func TestBinaries(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	want, err := os.ReadFile(porthole)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want)
	for _, path := range []string{"/agent-binaries/linux_amd64/bootstrapper/bootstrapper", "/agent-binaries/linux_amd64/porthole/porthole"} {
		resp, err := http.Get(tm.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || sha256.Sum256(b) != sum || resp.Header.Get("X-Checksum-Sha256") != hex.EncodeToString(sum[:]) {
			t.Errorf("GET %s: %d, %d bytes, checksum header %q", path, resp.StatusCode, len(b), resp.Header.Get("X-Checksum-Sha256"))
		}
	}
	resp, err := http.Get(tm.URL + "/agent-binaries/linux_amd64/bootstrapper/bootstrapper.sha256")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != hex.EncodeToString(sum[:])+"  bootstrapper\n" {
		t.Errorf(".sha256 = %q", b)
	}
	for path, msg := range map[string]string{
		"/agent-binaries/linux_arm64/bootstrapper/bootstrapper": "no bootstrapper binary for linux_arm64",
		"/agent-binaries/windows_amd64/porthole/porthole":       "",
		"/agent-binaries/linux_amd64/porthole/other":            "",
	} {
		resp, err := http.Get(tm.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(b), msg) {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
		}
	}
}

// Subscriptions replay from a cursor or a time, filter logs, and name
// what is wrong with bad params.
func TestSubscriptionReplay(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid = "w:e:o"
	p := push(t, tm, tm.machineToken(t, rid, "m"))
	for i := 1; i <= 5; i++ {
		p.send(logEvent("m", rid, "b", i, string(rune('a'+i-1))))
	}
	p.send(`{"jsonrpc":"2.0","method":"` + che.MethodBootstrapperStatus + `","params":{"machineName":"m","runtimeId":{"workspaceId":"w","envName":"e","ownerId":"o"},"time":"2026-11-22T10:00:01Z","status":"` + che.StatusDone + `","bootId":"b","seq":6}}`)
	p.ack()
	client := tm.clientToken(t)
	since, _ := time.Parse(time.RFC3339, "2026-11-22T10:00:01Z")
	for _, c := range []struct {
		name string
		p    masterapi.SubscribeParams
		want string
	}{
		{"after 3", masterapi.SubscribeParams{RuntimeID: rid, After: map[string]uint64{"m": 3}}, "d,e," + che.StatusDone},
		{"all without logs", masterapi.SubscribeParams{RuntimeID: rid, All: true, Logs: new(bool)}, che.StatusDone},
		{"since", masterapi.SubscribeParams{RuntimeID: "*", Since: &since}, che.StatusDone},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := subscribe(t, tm, client, c.p)
			want := strings.Split(c.want, ",")
			s.until(t, c.want, func(_ map[string]*masterapi.Machine, es map[string][]masterapi.Entry) bool {
				return len(es[rid+"/m"]) >= len(want)
			})
			s.mu.Lock()
			var got []string
			for _, e := range s.entries[rid+"/m"] {
				if e.Type == masterapi.EntryLog {
					got = append(got, e.Text)
				} else {
					got = append(got, e.Status)
				}
			}
			s.mu.Unlock()
			if strings.Join(got, ",") != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
	// Bad params name the problem.
	s := subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: "*"})
	var res any
	for params, msg := range map[string]string{
		`{}`:                          "runtimeId missing",
		`{"runtimeId":"*","bogus":1}`: `unknown field "bogus"`,
	} {
		raw := jsonRaw(params)
		err := s.conn.Call(t.Context(), masterapi.MethodRuntimeSubscribe, raw, &res)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("subscribe %s: %v, want %q", params, err, msg)
		}
	}
	err := s.conn.Call(t.Context(), masterapi.MethodRuntimeUnsubscribe, map[string]string{"subscription": "nope"}, &res)
	if err == nil || !strings.Contains(err.Error(), `subscription "nope" not found`) {
		t.Errorf("unsubscribe nope: %v", err)
	}
	// A machine token subscribes to its own runtime only.
	ms := subscribe(t, tm, tm.machineToken(t, rid, "m"), masterapi.SubscribeParams{RuntimeID: rid})
	err = ms.conn.Call(t.Context(), masterapi.MethodRuntimeSubscribe, masterapi.SubscribeParams{RuntimeID: "*"}, &res)
	if err == nil || !strings.Contains(err.Error(), "only to its own runtime") {
		t.Errorf("machine token subscribing to *: %v", err)
	}
}
