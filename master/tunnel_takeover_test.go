package master_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/master"
)

// serveTunnel runs an in-process agent tunnel for machine dev of w:e:o
// answering every request with name, until the test ends.
func serveTunnel(t *testing.T, tm *testMaster, name string) {
	t.Helper()
	serveTunnelHandler(t, tm, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
}

// serveTunnelHandler runs an in-process agent tunnel for machine dev of
// w:e:o whose requests h answers, until the test ends.
func serveTunnelHandler(t *testing.T, tm *testMaster, h http.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tunnel.Serve(ctx, tunnel.AgentOptions{
			URL:        tm.WS + "/api/agent",
			Header:     http.Header{"Authorization": {"Bearer " + tm.machineToken(t, "w:e:o", "dev")}},
			Handler:    h,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// whoami asks the machine's agent, through the master, who it is.
func whoami(t *testing.T, tm *testMaster, client string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", tm.URL+"/api/runtimes/w:e:o/machines/dev/agent/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+client)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// H2: a second tunnel for a machine whose tunnel is live is refused (409)
// and logged; every client request keeps reaching the first agent (the
// old master replaced the tunnel: a leaked machine token received the
// users' terminals). A first tunnel that stops answering its keepalive is
// replaced.
func TestSecondTunnelRefused(t *testing.T) {
	master.SetAgentProbeTimeout(500 * time.Millisecond)
	var logs testutil.SyncBuffer
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	client := tm.clientToken(t)
	serveTunnel(t, tm, "first")
	testutil.WaitFor(t, "the first agent is reachable", func() bool {
		st, body, _ := whoami(t, tm, client)
		return st == 200 && body == "first"
	})
	h := http.Header{"Authorization": {"Bearer " + tm.machineToken(t, "w:e:o", "dev")}}
	ws, resp, _ := websocket.DefaultDialer.Dial(tm.WS+"/api/agent", h)
	if ws != nil {
		ws.Close()
	}
	if resp == nil || resp.StatusCode != http.StatusConflict {
		t.Fatalf("second tunnel: %v; want 409", resp)
	}
	if !strings.Contains(logs.String(), "already has a live agent tunnel") {
		t.Errorf("the refusal is not logged:\n%s", logs.String())
	}
	serveTunnel(t, tm, "second") // keeps retrying: refused every time
	for i := range 20 {
		if st, body, hdr := whoami(t, tm, client); st != 200 || body != "first" {
			t.Fatalf("request %d reached %q (%d); want the first agent", i, body, st)
		} else if hdr.Get("Content-Security-Policy") != "sandbox" {
			t.Fatalf("proxied response without Content-Security-Policy: sandbox: %q", hdr.Get("Content-Security-Policy"))
		}
	}
}

// H2: a tunnel that does not answer its keepalive (a raw WebSocket that
// never speaks yamux) is replaced by the next one.
func TestDeadTunnelReplaced(t *testing.T) {
	master.SetAgentProbeTimeout(300 * time.Millisecond)
	tm := startMaster(t, t.TempDir(), "")
	client := tm.clientToken(t)
	h := http.Header{"Authorization": {"Bearer " + tm.machineToken(t, "w:e:o", "dev")}}
	dead, _, err := websocket.DefaultDialer.Dial(tm.WS+"/api/agent", h)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	serveTunnel(t, tm, "live")
	testutil.WaitFor(t, "the live agent replaced the dead tunnel", func() bool {
		st, body, _ := whoami(t, tm, client)
		return st == 200 && body == "live"
	})
}

// Low: an agent that opens a stream toward the master (the master opens
// them; yamux would buffer what the agent sends, +163 MiB per tunnel) has
// its tunnel closed.
func TestAgentOpeningStreamsIsDisconnected(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	h := http.Header{"Authorization": {"Bearer " + tm.machineToken(t, "w:e:o", "dev")}}
	ws, _, err := websocket.DefaultDialer.Dial(tm.WS+"/api/agent", h)
	if err != nil {
		t.Fatal(err)
	}
	conn := tunnel.NewConn(ws)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Server(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if st, err := sess.OpenStream(); err == nil {
				st.Write(make([]byte, 128<<10))
			}
		})
	}
	testutil.Recv(t, "the master closes the tunnel", sess.CloseChan())
	wg.Wait()
}
