package master_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/master"
)

// issue mints a token as `porthole-master token` does: signed, and
// recorded in the data directory's registry.
func (tm *testMaster) issue(t *testing.T, o master.IssueOptions) string {
	t.Helper()
	tok, rec, err := tm.signer.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := master.NewRegistry(tm.dir).Add(rec); err != nil {
		t.Fatal(err)
	}
	return tok
}

// openSocket opens /api/rpc with token as Bearer and returns a channel
// that receives the error that ended its reading.
func openSocket(t *testing.T, tm *testMaster, header http.Header) <-chan error {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(tm.WS+"/api/rpc", header)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	return ended
}

// A revoked token is refused, its open sockets (also those it opened with
// a ticket) are closed within about a second, and other tokens go on.
func TestRevocationClosesOpenSockets(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	alice := tm.issue(t, master.IssueOptions{Kind: master.KindClient, Name: "alice", TTL: time.Hour})
	bob := tm.issue(t, master.IssueOptions{Kind: master.KindClient, Name: "bob", TTL: time.Hour})
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	aliceWS := openSocket(t, tm, bearer(alice))
	// A socket alice opened with a ticket.
	req, _ := http.NewRequest("POST", tm.URL+"/api/tickets", nil)
	req.Header = bearer(alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ticket: %v %v", resp, err)
	}
	var tk struct{ Ticket string }
	jsonDecode(resp.Body, &tk)
	resp.Body.Close()
	ws, _, err := websocket.DefaultDialer.Dial(tm.WS+"/api/rpc?ticket="+tk.Ticket, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ticketWS := make(chan error, 1)
	go func() {
		_, _, err := ws.ReadMessage()
		ticketWS <- err
	}()
	bobWS := openSocket(t, tm, bearer(bob))

	n, err := master.NewRegistry(tm.dir).Revoke("alice", time.Now())
	if err != nil || n != 1 {
		t.Fatalf("Revoke: %d, %v", n, err)
	}
	for name, ch := range map[string]<-chan error{"alice's socket": aliceWS, "alice's ticket socket": ticketWS} {
		select {
		case <-ch:
		case <-time.After(wait):
			t.Fatalf("%s still open %s after the revocation", name, wait)
		}
	}
	if st, body := get(t, tm.URL+"/api/runtimes", alice, nil); st != 401 || !strings.Contains(body, "token alice") || !strings.Contains(body, "revoked") {
		t.Errorf("alice after the revocation: %d %s; want 401 naming the revoked token", st, body)
	}
	if st, _ := get(t, tm.URL+"/api/runtimes", bob, nil); st != 200 {
		t.Errorf("bob after alice's revocation: %d", st)
	}
	select {
	case err := <-bobWS:
		t.Errorf("bob's socket closed: %v", err)
	default:
	}
	// A restarted master still refuses it.
	tm.stop()
	tm2 := startMaster(t, tm.dir, "")
	if st, _ := get(t, tm2.URL+"/api/runtimes", alice, nil); st != 401 {
		t.Errorf("alice after a restart: %d; want 401", st)
	}
}

// A token's socket is closed when the token expires, and the token is
// refused from then on.
func TestExpiryClosesOpenSockets(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	tok := tm.issue(t, master.IssueOptions{Kind: master.KindClient, Name: "brief", TTL: 2 * time.Second})
	began := time.Now()
	ended := openSocket(t, tm, http.Header{"Authorization": {"Bearer " + tok}})
	select {
	case <-ended:
	case <-time.After(wait):
		t.Fatalf("the socket outlived its token by %s", wait)
	}
	if d := time.Since(began); d > 2*time.Second+wait/2 {
		t.Errorf("closed %s after a 2s token was issued", d)
	}
	if st, body := get(t, tm.URL+"/api/runtimes", tok, nil); st != 401 || !strings.Contains(body, "expired") {
		t.Errorf("the expired token: %d %s; want 401, expired", st, body)
	}
}
