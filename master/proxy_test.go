package master_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/master"
)

// echoTunnel runs an in-process agent tunnel for machine dev of w:e:o
// whose every request is a WebSocket echoing its messages.
func echoTunnel(t *testing.T, tm *testMaster) {
	t.Helper()
	up := websocket.Upgrader{}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			typ, m, err := ws.ReadMessage()
			if err != nil || ws.WriteMessage(typ, m) != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tunnel.Serve(ctx, tunnel.AgentOptions{
			URL:        tm.WS + "/api/agent",
			Header:     http.Header{"Authorization": {"Bearer " + tm.machineToken(t, "w:e:o", "dev")}},
			Handler:    echo,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// proxiedSocket opens a WebSocket to the agent through the master with
// token, checks one echo, and returns it with a channel that receives
// the error that ended its reading.
func proxiedSocket(t *testing.T, tm *testMaster, token string) (*websocket.Conn, <-chan error) {
	t.Helper()
	var ws *websocket.Conn
	testutil.WaitFor(t, "the agent's tunnel", func() bool {
		var err error
		ws, _, err = websocket.DefaultDialer.Dial(tm.WS+"/api/runtimes/w:e:o/machines/dev/agent/echo",
			http.Header{"Authorization": {"Bearer " + token}})
		return err == nil
	})
	t.Cleanup(func() { ws.Close() })
	if err := ws.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, m, err := ws.ReadMessage(); err != nil || string(m) != "ping" {
		t.Fatalf("echo: %q, %v", m, err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	return ws, ended
}

func proxiedGauge(t *testing.T, tm *testMaster, client string) float64 {
	t.Helper()
	v, _ := value(scrape(t, tm.URL+"/metrics", client), "porthole_master_proxied_sessions")
	return v
}

// A proxied WebSocket goes on after its handler returns (tunnel.WithDetach)
// and is still the master's: counted by the gauge while open, closed when
// its token is revoked, closed and waited for by Shutdown.
func TestProxiedSocketLifecycle(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	echoTunnel(t, tm)
	admin := tm.clientToken(t)
	alice := tm.issue(t, master.IssueOptions{Kind: master.KindClient, Name: "alice", TTL: time.Hour})
	bob := tm.issue(t, master.IssueOptions{Kind: master.KindClient, Name: "bob", TTL: time.Hour})

	_, aliceEnded := proxiedSocket(t, tm, alice)
	bobWS, bobEnded := proxiedSocket(t, tm, bob)
	if g := proxiedGauge(t, tm, admin); g != 2 {
		t.Errorf("porthole_master_proxied_sessions = %v with two sockets open; want 2", g)
	}

	if n, err := master.NewRegistry(tm.dir).Revoke("alice", time.Now()); err != nil || n != 1 {
		t.Fatalf("Revoke: %d, %v", n, err)
	}
	testutil.Recv(t, "alice's proxied socket to close on revocation", aliceEnded)
	testutil.WaitFor(t, "the gauge to count bob's socket only", func() bool { return proxiedGauge(t, tm, admin) == 1 })
	select {
	case err := <-bobEnded:
		t.Fatalf("bob's socket closed: %v", err)
	default:
	}
	if err := bobWS.WriteMessage(websocket.TextMessage, []byte("still")); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	if err := tm.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a proxied socket open: %v", err)
	}
	testutil.Recv(t, "bob's proxied socket to close on shutdown", bobEnded)
}
