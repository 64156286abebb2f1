package tunnel_test

// Data connections (data.go, agentdata.go): the path proxied sockets
// take when the agent dials back, the fallback to a stream, refused data
// handshakes, and the ends of data connections.

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

// runTerminal runs a terminal through m: output, resize, stdin and exit
// code, as TestTerminalThroughTunnel.
func runTerminal(t *testing.T, m *testMaster) {
	t.Helper()
	c := dialClient(t, m)
	ctx := ctxT(t)
	p, err := c.Start(ctx, protocol.StartParams{
		Argv: []string{"sh", "-c", "stty size; echo ready; read x; stty size; echo \"got=$x\"; exit 7"},
		TTY:  true, Size: protocol.WindowSize{Rows: 33, Cols: 101},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := agenttest.NewLineReader(p.Stdout)
	r.Expect(t, "33 101")
	r.Expect(t, "ready")
	if err := p.Resize(ctx, protocol.WindowSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stdin.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	r.Expect(t, "50 132")
	r.Expect(t, "got=hello")
	var ee *client.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.Code != 7 {
		t.Fatalf("Wait = %v; want exit code 7", err)
	}
	p.Close()
	c.Close()
}

// With an agent that announces data connections, every proxied socket
// (the control socket, the attach socket) is carried by one.
func TestDataConnCarriesTerminal(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	s := m.next(t)
	runTerminal(t, m)
	if d, st := m.viaData.Load(), m.viaStream.Load(); d < 2 || st != 0 {
		t.Fatalf("%d sockets over data connections, %d over streams; want every one (at least 2) over data connections", d, st)
	}
	testutil.WaitFor(t, "no data connection pending, the used ones closed, two spares",
		func() bool { return s.Pending() == 0 && s.DataConns() == 0 && s.Spares() == 2 })
}

// Without data connections, everything goes through streams as before:
// an agent that does not announce them (an older agent), a master that
// does not use them, an agent whose data connection never arrives (the
// master gives up at its deadline).
func TestDataConnFallback(t *testing.T) {
	cases := []struct {
		name   string
		master []masterOption
		agent  tunnel.AgentOptions
	}{
		{"old agent", nil, tunnel.AgentOptions{NoDataConns: true}},
		{"master without data connections", []masterOption{withDialTimeout(-1)}, tunnel.AgentOptions{}},
		{"never dialled back", []masterOption{ignoringData, withDialTimeout(200 * time.Millisecond)}, tunnel.AgentOptions{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := startMaster(t, tc.master...)
			startTunnelAgent(t, m, agent.Options{}, tc.agent)
			s := m.next(t)
			runTerminal(t, m)
			if d, st := m.viaData.Load(), m.viaStream.Load(); d != 0 || st < 2 {
				t.Fatalf("%d sockets over data connections, %d over streams; want every one (at least 2) over streams", d, st)
			}
			testutil.WaitFor(t, "no data connection pending", func() bool { return s.Pending() == 0 })
			if n := s.Spares(); n != 0 {
				t.Fatalf("%d spare data connections", n)
			}
		})
	}
}

// dataHandshake sends a data handshake for id to m with token and
// returns the status and body of the answer.
func dataHandshake(t *testing.T, m *testMaster, id, token string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(m.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodGet, m.srv.URL+"/api/agent", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", tunnel.UpgradeData)
	if id != "" {
		req.Header.Set(tunnel.HeaderDialID, id)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(testutil.Wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// A data handshake with an id the tunnel did not ask for, one already
// used, one the master stopped waiting for, or none, is refused with a
// status and a message naming why; the pending ids do not grow.
func TestDataHandshakeRefusals(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	s := m.next(t)
	ws, _ := dialProxiedEcho(t, m)
	ws.Close()
	m.mu.Lock()
	used := m.ids[0]
	m.mu.Unlock()

	// An agent whose data connections never arrive: its ids expire.
	m2 := startMaster(t, ignoringData, withDialTimeout(100*time.Millisecond))
	startTunnelAgent(t, m2, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	s2 := m2.next(t)
	ws2, _ := dialProxied(t, m2, "/x", nil) // through a stream, once the wait is over
	ws2.Close()
	// The first dial-back and the two spares asked for after it expire
	// unanswered: three failures in a row, and the session stops asking.
	testutil.WaitFor(t, "the dial-backs expired", func() bool { return tunnel.Settled(s2) })
	expired := tunnel.ExpiredID(s2)
	if expired == "" {
		t.Fatal("no expired id")
	}
	m2.mu.Lock()
	m2.ignoreData = false
	m2.mu.Unlock()

	cases := []struct {
		name   string
		m      *testMaster
		id     string
		status int
		reason string
	}{
		{"unknown", m, "AAAAAAAAAAAAAAAAAAAAAAAAAA", http.StatusForbidden, "did not ask for it (unknown id)"},
		{"reused", m, used, http.StatusGone, "already used"},
		{"expired", m2, expired, http.StatusGone, "expired"},
		{"another tunnel's", m2, used, http.StatusForbidden, "unknown id"},
		{"no id", m, "", http.StatusBadRequest, tunnel.HeaderDialID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := dataHandshake(t, tc.m, tc.id, machineToken)
			if status != tc.status || !strings.Contains(body, tc.reason) {
				t.Fatalf("%d %q; want %d naming %q", status, body, tc.status, tc.reason)
			}
		})
	}
	if status, _ := dataHandshake(t, m, used, "bad-token"); status != http.StatusUnauthorized {
		t.Fatalf("bad token: %d; want 401", status)
	}
	testutil.WaitFor(t, "no data connection pending", func() bool { return tunnel.Settled(s) && tunnel.Settled(s2) })
	if s.DataConns() > 1 || s2.DataConns() != 0 || s2.Spares() != 0 {
		t.Fatalf("open data connections %d, %d, spares on the refusing master %d", s.DataConns(), s2.DataConns(), s2.Spares())
	}
}

// dialProxiedEcho opens an echo WebSocket through m over a data
// connection and checks that it echoes.
func dialProxiedEcho(t *testing.T, m *testMaster) (*websocket.Conn, *tunnel.Session) {
	t.Helper()
	before := m.viaData.Load()
	ws, _ := dialProxied(t, m, "/echo", nil)
	if _, _, err := ws.ReadMessage(); err != nil { // what the agent saw
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if m.viaData.Load() != before+1 {
		t.Fatal("the socket did not go over a data connection")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return ws, m.cur
}

// expectClosed waits for ws to end.
func expectClosed(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(testutil.Wait))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the socket is still open %s after its tunnel ended", testutil.Wait)
			}
			return
		}
	}
}

// When the tunnel ends, at either end, its data connections end with it:
// the client's socket closes as it does over a stream.
func TestDataConnsEndWithTunnel(t *testing.T) {
	t.Run("master closes the session", func(t *testing.T) {
		m := startMaster(t)
		startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
		m.next(t)
		ws, s := dialProxiedEcho(t, m)
		if s.DataConns() != 1 {
			t.Fatalf("%d data connections; want 1", s.DataConns())
		}
		s.Close()
		expectClosed(t, ws)
		testutil.WaitFor(t, "the data connection closed", func() bool { return s.DataConns() == 0 })
		m.next(t) // the agent is back: the test does not end mid-handshake
	})
	t.Run("agent stops", func(t *testing.T) {
		m := startMaster(t)
		ta := startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
		m.next(t)
		ws, s := dialProxiedEcho(t, m)
		ta.stop(t)
		expectClosed(t, ws)
		testutil.WaitFor(t, "the data connection closed", func() bool { return s.DataConns() == 0 })
	})
}

// A data connection dropped mid-session ends the client's socket; the
// client reattaches at its offset over a new one.
func TestDataConnDroppedMidSession(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	s := m.next(t)
	c := dialClient(t, m)
	ctx := ctxT(t)
	p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"sh", "-c", "echo before; read x; echo \"after=$x\""}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go io.Copy(io.Discard, p.Stderr)
	r := agenttest.NewLineReader(p.Stdout)
	r.Expect(t, "before")
	data := m.viaData.Load()

	tunnel.DropDataConns(s)
	var de *client.DisconnectedError
	if err := p.Wait(); !errors.As(err, &de) {
		t.Fatalf("Wait after the drop = %v; want *DisconnectedError", err)
	}
	if err := p.Reattach(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stdin.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	r.Expect(t, "after=x")
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := p.Offsets().Stdout; got != int64(len("before\nafter=x\n")) {
		t.Fatalf("stdout offset %d after reattach; want %d", got, len("before\nafter=x\n"))
	}
	if m.viaData.Load() <= data || m.viaStream.Load() != 0 {
		t.Fatalf("the reattach did not go over a new data connection (%d data, %d streams)", m.viaData.Load(), m.viaStream.Load())
	}
}

// The dial path is the tunnel's own: a client cannot reach it through
// the proxy (the agent would dial back for it), and the agent's handler
// never sees it.
func TestDialPathNotProxied(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("agent handler: " + r.URL.Path))
	})})
	m.next(t)
	for _, path := range []string{tunnel.DialPath, "/%2Eporthole/tunnel/dial", "/.porthole/tunnel/x"} {
		req, _ := http.NewRequest(http.MethodPost, m.srv.URL+prefix+path, nil)
		req.Header.Set("Authorization", "Bearer "+clientToken)
		req.Header.Set(tunnel.HeaderDialID, "AAAA")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "the tunnel's own") {
			t.Errorf("%s: %d %q; want 404 naming the tunnel's path", path, resp.StatusCode, b)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ids) != 0 {
		t.Fatalf("the agent dialled back for a client's request: %v", m.ids)
	}
}

// At most MaxPendingDials data connections are waited for at once per
// tunnel: beyond, a socket goes through a stream at once, and every one
// works.
func TestDataConnPendingBound(t *testing.T) {
	const n = tunnel.MaxPendingDials + 6
	m := startMaster(t, ignoringData, withDialTimeout(testutil.Wait))
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	s := m.next(t)
	d := websocket.Dialer{Subprotocols: []string{"echo.v1"}, HandshakeTimeout: 2 * testutil.Wait}
	errs := make(chan error, n)
	for range n {
		go func() {
			ws, _, err := d.DialContext(ctxT(t), m.url+prefix+"/x", http.Header{"Authorization": {"Bearer " + clientToken}})
			if err == nil {
				ws.Close()
			}
			errs <- err
		}()
	}
	testutil.WaitFor(t, "the pending ids at the bound, the others through streams",
		func() bool {
			return s.Pending() == tunnel.MaxPendingDials && m.viaStream.Load() == n-tunnel.MaxPendingDials
		})
	// The master refuses the agent's data connections: the waiting ones
	// go through streams too.
	m.mu.Lock()
	held := m.held
	m.held, m.refuseData = nil, true
	m.mu.Unlock()
	for _, c := range held {
		c.Close() // the agent's dial fails: it answers the control request with an error
	}
	for range n {
		if err := testutil.Recv(t, "a socket to open", errs); err != nil {
			t.Fatal(err)
		}
	}
	if m.viaData.Load() != 0 || m.viaStream.Load() != n {
		t.Fatalf("%d over data connections, %d over streams; want all %d over streams", m.viaData.Load(), m.viaStream.Load(), n)
	}
	testutil.WaitFor(t, "no id pending", func() bool { return tunnel.Settled(s) })
}

// A data connection that fails before the agent answers (closed by the
// network, or silent: a spare a middlebox dropped without a word) costs
// the client nothing: the master closes it and sends the request again
// over a stream, once.
func TestDataConnRetriedOnStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(w http.ResponseWriter, r *http.Request)
	}{
		{"closed before the answer", func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
		// The master's wait for the answer is bounded by its dial-back
		// timeout (the default, 5 s: a shorter one could also cut the
		// dial-back itself short on a busy machine, and the request would
		// go over a stream without a retry); the handler holds its
		// request until the master gives up on it.
		{"silent", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMaster(t)
			echo := echoAgent()
			var first atomic.Bool
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/echo" && first.CompareAndSwap(false, true) {
					tc.fail(w, r)
					return
				}
				echo.ServeHTTP(w, r)
			})
			startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: h})
			s := m.next(t)
			ws, _ := dialProxied(t, m, "/echo", nil)
			if _, _, err := ws.ReadMessage(); err != nil {
				t.Fatal(err)
			}
			if err := ws.WriteMessage(websocket.BinaryMessage, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, got, err := ws.ReadMessage(); err != nil || string(got) != "ping" {
				t.Fatalf("echo: %q, %v", got, err)
			}
			if !first.Load() || s.DataRetries() != 1 || m.viaStream.Load() != 1 || m.viaData.Load() != 0 {
				t.Fatalf("failed first: %v, retries %d, %d over streams, %d over data connections; want the one retry over a stream",
					first.Load(), s.DataRetries(), m.viaStream.Load(), m.viaData.Load())
			}
			ws.Close()
			testutil.WaitFor(t, "the failed data connection closed", func() bool { return s.DataConns() == 0 })
		})
	}
}
