package tunnel_test

// The proxy's own handling of WebSocket upgrades (proxyUpgrade): what the
// agent sees, what the client gets, bytes sent right behind the
// handshakes, refusals, both ends closing, TLS, and no copy buffer held by
// an idle session.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

// echoAgent is an agent handler that upgrades every request to a
// WebSocket echoing each message back, after a first text message with
// what it saw of the request ("PATH?QUERY" and the headers named in
// report, "name=value" each). Its 101 carries a Set-Cookie.
func echoAgent(report ...string) http.Handler {
	up := websocket.Upgrader{Subprotocols: []string{"echo.v1"}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/refuse":
			http.Error(w, "no such process: 42", http.StatusNotFound)
			return
		case "/big": // a path that does not switch protocols
			w.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<17)) // 2 MiB
			return
		}
		ws, err := up.Upgrade(w, r, http.Header{"Set-Cookie": {"master-session=forged"}, "X-Agent": {"yes"}})
		if err != nil {
			return // the client sees it; or the test is over and the tunnel gone
		}
		defer ws.Close()
		seen := []string{r.URL.Path + "?" + r.URL.RawQuery}
		for _, k := range report {
			seen = append(seen, k+"="+strings.Join(r.Header.Values(k), ","))
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte(strings.Join(seen, "\n"))); err != nil {
			return
		}
		for {
			typ, m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(typ, m); err != nil {
				return
			}
		}
	})
}

// dialProxied opens a WebSocket through m's proxy.
func dialProxied(t *testing.T, m *testMaster, path string, h http.Header) (*websocket.Conn, *http.Response) {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Authorization", "Bearer "+clientToken)
	d := websocket.Dialer{Subprotocols: []string{"echo.v1", client.TokenSubprotocol(clientToken)}, HandshakeTimeout: testutil.Wait}
	ws, resp, err := d.DialContext(ctxT(t), m.url+prefix+path, h)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", path, err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return ws, resp
}

func TestProxyUpgradeRewritesAndStrips(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent("Authorization", "Cookie", "Origin", "Sec-Websocket-Protocol", "X-Custom", "X-Forwarded-For")})
	m.next(t)
	ws, resp := dialProxied(t, m, "/v1/processes/7/attach?ticket="+clientToken+"&offset=3", http.Header{
		"Cookie": {"session=secret"}, "X-Custom": {"kept"}, "X-Forwarded-For": {"10.9.9.9"}})
	if c := resp.Header.Get("Set-Cookie"); c != "" {
		t.Errorf("the agent set a cookie on the master's origin: %q", c)
	}
	if resp.Header.Get("X-Agent") != "yes" || ws.Subprotocol() != "echo.v1" {
		t.Errorf("101: X-Agent %q, subprotocol %q; want the agent's", resp.Header.Get("X-Agent"), ws.Subprotocol())
	}
	_, seen, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{"/v1/processes/7/attach?offset=3", "Authorization=", "Cookie=", "Origin=",
		"Sec-Websocket-Protocol=echo.v1", "X-Custom=kept", "X-Forwarded-For="}, "\n")
	if string(seen) != want {
		t.Errorf("the agent saw\n%s\nwant\n%s", seen, want)
	}
	if bytes.Contains(seen, []byte(clientToken)) {
		t.Fatal("the client token reached the agent")
	}
}

// Headers the master's handler set before proxying (the sandbox policy)
// reach the client with the 101.
func TestProxyUpgradeKeepsMasterHeaders(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	s := m.next(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "sandbox")
		s.Proxy("").ServeHTTP(w, r)
	}))
	defer srv.Close()
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if got := resp.Header.Get("Content-Security-Policy"); got != "sandbox" {
		t.Errorf("Content-Security-Policy %q; want sandbox", got)
	}
}

// An agent refusing the upgrade is answered as it answered.
func TestProxyUpgradeRefusal(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	m.next(t)
	d := websocket.Dialer{HandshakeTimeout: testutil.Wait}
	_, resp, err := d.DialContext(ctxT(t), m.url+prefix+"/refuse", http.Header{"Authorization": {"Bearer " + clientToken}})
	if err == nil || resp == nil {
		t.Fatalf("dial: %v, %v; want a refusal", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no such process: 42") {
		t.Fatalf("got %d %q; want 404 with the agent's message", resp.StatusCode, body)
	}
	// A path that answers an upgrade with an ordinary response: all of it.
	req, _ := http.NewRequest("GET", m.srv.URL+prefix+"/big", nil)
	req.Header = http.Header{"Authorization": {"Bearer " + clientToken}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"}}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || len(body) != 2<<20 {
		t.Fatalf("got %d with %d bytes; want 200 with 2 MiB", resp.StatusCode, len(body))
	}
}

// Bytes a client sends in the same packet as its request, and bytes the
// agent sends in the same write as its 101, are not lost.
func TestProxyUpgradeBytesBehindHandshakes(t *testing.T) {
	m := startMaster(t)
	agentH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		// The 101 and the first bytes in one write.
		conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\nhello from the agent;"))
		// Echo what the client sends, starting with what came with its
		// request.
		io.Copy(conn, brw)
	})
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: agentH})
	m.next(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(m.url, "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testutil.Wait))
	req := "GET " + prefix + "/raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientToken +
		"\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\nearly bytes;"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "raw" {
		t.Fatalf("got %d, Upgrade %q", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	want := "hello from the agent;early bytes;"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
	conn.Write([]byte("later"))
	got = make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "later" {
		t.Fatalf("read %q, %v; want later", got, err)
	}
}

// The agent switching to another protocol than asked is refused (502).
func TestProxyUpgradeWrongProtocol(t *testing.T) {
	m := startMaster(t)
	agentH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"))
	})
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: agentH})
	m.next(t)
	d := websocket.Dialer{HandshakeTimeout: testutil.Wait}
	_, resp, err := d.DialContext(ctxT(t), m.url+prefix+"/x", http.Header{"Authorization": {"Bearer " + clientToken}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("dial: %v, %v; want 502", err, resp)
	}
}

// Random messages up to 1 MiB each way arrive exact; then the client's
// close ends the agent's socket, and the tunnel's end ends the client's.
func TestProxyUpgradeExactAndCloses(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	s := m.next(t)
	ws, _ := dialProxied(t, m, "/x", nil)
	ws.ReadMessage() // what the agent saw
	for _, n := range []int{1, 1000, 1024, 1025, 64 << 10, 300 << 10, 1 << 20} {
		msg := make([]byte, n)
		rand.Read(msg)
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(msg) {
			t.Fatalf("%d bytes: got %d bytes, different", n, len(got))
		}
	}
	// The tunnel ends: the client's connection ends.
	s.Close()
	ws.SetReadDeadline(time.Now().Add(testutil.Wait))
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("read after the tunnel ended: no error")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the client's connection outlived the tunnel")
	}
}

// An idle proxied session holds no copy buffer: each is taken while bytes
// flow and given back before the next wait, in both directions.
func TestProxyUpgradeIdleHoldsNoBuffer(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	m.next(t)
	base := tunnel.CopyBuffersInUse()
	var wss []*websocket.Conn
	for range 5 {
		ws, _ := dialProxied(t, m, "/x", nil)
		ws.ReadMessage()
		big := make([]byte, 512<<10) // more than a buffer: taken and given back
		for _, msg := range [][]byte{[]byte("k"), big, []byte("k")} {
			if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
			if _, got, err := ws.ReadMessage(); err != nil || len(got) != len(msg) {
				t.Fatalf("echo of %d bytes: %d, %v", len(msg), len(got), err)
			}
		}
		wss = append(wss, ws)
	}
	testutil.WaitFor(t, "every copy buffer given back", func() bool { return tunnel.CopyBuffersInUse() == base })
	for _, ws := range wss {
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte("still there")); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || string(got) != "still there" {
			t.Fatalf("after idling: %q, %v", got, err)
		}
	}
}

// Behind TLS (a connection the poller cannot be asked about) the copy
// works the same.
func TestProxyUpgradeTLS(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	s := m.next(t)
	srv := httptest.NewTLSServer(s.Proxy(""))
	defer srv.Close()
	d := websocket.Dialer{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, HandshakeTimeout: testutil.Wait}
	ws, _, err := d.DialContext(ctxT(t), "wss"+strings.TrimPrefix(srv.URL, "https")+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.ReadMessage()
	msg := make([]byte, 200<<10)
	rand.Read(msg)
	for range 3 {
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo through TLS: %d bytes, %v", len(got), err)
		}
	}
	_ = protocol.Version
}

// With WithDetach, the handler returns once the socket is switched and
// the session goes on; the function detach returned is called once, when
// the session has ended.
func TestProxyUpgradeDetach(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	s := m.next(t)
	returned, ended := make(chan struct{}, 1), make(chan struct{}, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(tunnel.WithDetach(r.Context(), func() func() {
			return func() { ended <- struct{}{} }
		}))
		s.Proxy("").ServeHTTP(w, r)
		returned <- struct{}{}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	testutil.Recv(t, "the handler to return", returned)
	ws.ReadMessage()
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "after" {
		t.Fatalf("echo after the handler returned: %q, %v", got, err)
	}
	select {
	case <-ended:
		t.Fatal("ended before the session did")
	default:
	}
	ws.Close()
	testutil.Recv(t, "ended once the client closed", ended)
	if len(ended) != 0 {
		t.Fatal("ended called twice")
	}
}

// A session quiet after a burst has its stream shrunk (yamux keeps a
// stream's receive buffer at its largest otherwise), and goes on working.
// A stream's: a data connection has no such buffer.
func TestProxyUpgradeShrinksAfterBurst(t *testing.T) {
	tunnel.SetShrinkAfter(t, 10*time.Millisecond)
	m := startMaster(t, withDialTimeout(-1))
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echoAgent()})
	m.next(t)
	ws, _ := dialProxied(t, m, "/x", nil)
	ws.ReadMessage()
	echo := func(n int) {
		if err := ws.WriteMessage(websocket.BinaryMessage, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || len(got) != n {
			t.Fatalf("echo of %d bytes: %d, %v", n, len(got), err)
		}
	}
	before := tunnel.Shrinks()
	echo(1)
	echo(100 << 10)
	testutil.WaitFor(t, "the stream shrunk once quiet", func() bool { return tunnel.Shrinks() > before })
	echo(1) // and it still works
}
