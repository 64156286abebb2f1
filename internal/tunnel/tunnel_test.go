package tunnel_test

// End-to-end tests: a test master (an httptest server on 127.0.0.1 whose
// /api/agent handler calls Accept and whose /m/agent/ path serves the
// session's Proxy), a real agent served through Serve, and the Go client
// dialling the master.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

func TestMain(m *testing.M) {
	// net/http lingers up to 500ms on a connection it closes after an
	// unread request body; that goroutine is the standard library's.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

const (
	agentToken   = "agent-local-token-0123456789"
	machineToken = "machine-token-for-master-abcdef"
	clientToken  = "client-token-for-master-987654"
	prefix       = "/m/agent"
)

var ctxT = testutil.Ctx

// testMaster authenticates agents by machine token and clients by client
// token, as porthole-master does, and proxies clients to the agent.
type testMaster struct {
	srv      *httptest.Server
	url      string               // ws://127.0.0.1:PORT
	sessions chan *tunnel.Session // every accepted session

	mu      sync.Mutex
	cur     *tunnel.Session
	all     []*tunnel.Session
	refuse  int         // when not 0, the status /api/agent answers
	headers http.Header // of the last agent handshake

	// Data connections (dial-back): how long a request waits for one
	// (0: tunnel.DefaultDialTimeout; < 0: not used), whether the master
	// ignores the agent's data handshakes (holds them unanswered until
	// the test ends), and how many requests went each way.
	dialTimeout time.Duration
	ignoreData  bool
	refuseData  bool // answer the agent's data handshakes 503
	held        []net.Conn
	ids         []string // of the data handshakes, in order
	viaData     atomic.Int64
	viaStream   atomic.Int64
}

// masterOption configures startMaster.
type masterOption func(*testMaster)

// withDialTimeout sets the master's data connection timeout (< 0: none).
func withDialTimeout(d time.Duration) masterOption {
	return func(m *testMaster) { m.dialTimeout = d }
}

// ignoringData makes the master leave the agent's data handshakes
// unanswered: the agent never gets its data connection.
func ignoringData(m *testMaster) { m.ignoreData = true }

func startMaster(t *testing.T, opts ...masterOption) *testMaster {
	t.Helper()
	m := &testMaster{sessions: make(chan *tunnel.Session, 16)}
	for _, o := range opts {
		o(m)
	}
	if m.dialTimeout == 0 {
		m.dialTimeout = tunnel.DefaultDialTimeout
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/agent", func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), tunnel.UpgradeData) {
			m.serveData(w, r)
			return
		}
		m.mu.Lock()
		refuse := m.refuse
		m.headers = r.Header.Clone()
		m.mu.Unlock()
		if refuse != 0 {
			http.Error(w, "machine token refused by the test master", refuse)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+machineToken {
			http.Error(w, "bad machine token", http.StatusUnauthorized)
			return
		}
		s, err := tunnel.AcceptWith(w, r, tunnel.AcceptOptions{DialTimeout: max(m.dialTimeout, 0), OnPath: func(data bool) {
			if data {
				m.viaData.Add(1)
			} else {
				m.viaStream.Add(1)
			}
		}})
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		m.mu.Lock()
		m.cur = s
		m.all = append(m.all, s)
		m.mu.Unlock()
		m.sessions <- s
	})
	mux.HandleFunc(prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		tok := r.URL.Query().Get("ticket")
		if tok == "" {
			tok, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
		if tok != clientToken {
			http.Error(w, "bad client token", http.StatusUnauthorized)
			return
		}
		m.mu.Lock()
		s := m.cur
		m.mu.Unlock()
		if s == nil {
			http.Error(w, "no agent", http.StatusBadGateway)
			return
		}
		s.Proxy(prefix).ServeHTTP(w, r)
	})
	m.srv = httptest.NewServer(mux)
	m.url = "ws" + strings.TrimPrefix(m.srv.URL, "http")
	t.Cleanup(func() {
		m.mu.Lock()
		all := m.all
		m.mu.Unlock()
		for _, s := range all {
			s.Close()
		}
		m.mu.Lock()
		held := m.held
		m.mu.Unlock()
		for _, c := range held {
			c.Close()
		}
		m.srv.Close()
	})
	return m
}

// serveData takes an agent's data handshake for the current session.
func (m *testMaster) serveData(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+machineToken {
		http.Error(w, "bad machine token", http.StatusUnauthorized)
		return
	}
	m.mu.Lock()
	s, ignore, refuse := m.cur, m.ignoreData, m.refuseData
	m.ids = append(m.ids, r.Header.Get(tunnel.HeaderDialID))
	m.mu.Unlock()
	if refuse {
		http.Error(w, "data connections refused by the test master", http.StatusServiceUnavailable)
		return
	}
	if ignore {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			m.mu.Lock()
			m.held = append(m.held, c)
			m.mu.Unlock()
		}
		return
	}
	if s == nil {
		http.Error(w, "no tunnel", http.StatusConflict)
		return
	}
	var de *tunnel.DataError
	if err := s.AcceptData(w, r); errors.As(err, &de) {
		http.Error(w, de.Reason, de.Status)
	}
}

func (m *testMaster) setRefuse(status int) {
	m.mu.Lock()
	m.refuse = status
	m.mu.Unlock()
}

// next returns the next session the master accepts.
func (m *testMaster) next(t *testing.T) *tunnel.Session {
	t.Helper()
	return testutil.Recv(t, "an agent to connect to the master", m.sessions)
}

// tunnelAgent is a real agent kept connected to m by Serve.
type tunnelAgent struct {
	a      *agent.Agent
	cancel context.CancelFunc
	served chan error
	states chan bool
}

func startTunnelAgent(t *testing.T, m *testMaster, ao agent.Options, o tunnel.AgentOptions) *tunnelAgent {
	t.Helper()
	ao.Token = agentToken
	if ao.Clock == nil {
		// The agent's time stands still unless a test moves it: a client
		// that keeps reading is never demoted for a stall, however busy
		// the machine.
		ao.Clock = clocktest.New()
	}
	a, err := agent.New(ao)
	if err != nil {
		t.Fatal(err)
	}
	ta := &tunnelAgent{a: a, served: make(chan error, 1), states: make(chan bool, 64)}
	o.URL = m.url + "/api/agent"
	o.Header = http.Header{"Authorization": {"Bearer " + machineToken}}
	if o.Handler == nil {
		o.Handler = a.Handler()
	}
	o.Trust = agent.TrustedContext
	o.MinBackoff, o.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	o.OnState = func(up bool) { ta.states <- up }
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	go func() { ta.served <- tunnel.Serve(ctx, o) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(sctx, time.Second)
		ta.stop(t)
	})
	return ta
}

// stop cancels Serve and expects it to return context.Canceled soon.
func (ta *tunnelAgent) stop(t *testing.T) {
	t.Helper()
	ta.cancel()
	select {
	case err := <-ta.served:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v; want context.Canceled", err)
		}
		ta.served <- err // for a second stop
	case <-time.After(testutil.Wait):
		t.Fatalf("Serve did not return within %s of cancel", testutil.Wait)
	}
}

func dialClient(t *testing.T, m *testMaster) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), client.Options{URL: m.url + prefix, Token: clientToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A terminal through the master: output, resize seen by stty, stdin, the
// exit code.
func TestTerminalThroughTunnel(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	m.next(t)
	runTerminal(t, m)
}

// Keepalive pings cross the tunnel both ways: the agent's reach the
// client, and the client's are answered by the agent. The agent pings on
// a fake clock, so no real interval matters.
func TestPingsThroughTunnel(t *testing.T) {
	const interval = 15 * time.Second
	clk := clocktest.New()
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{PingInterval: interval, Clock: clk}, tunnel.AgentOptions{})
	m.next(t)
	d := websocket.Dialer{Subprotocols: []string{protocol.SubprotocolRPC}}
	ws, _, err := d.DialContext(ctxT(t), m.url+prefix+"/v1/rpc", http.Header{"Authorization": {"Bearer " + clientToken}})
	if err != nil {
		t.Fatal(err)
	}
	pings, pongs := make(chan struct{}, 8), make(chan struct{}, 8)
	ws.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
	})
	ws.SetPongHandler(func(string) error {
		pongs <- struct{}{}
		return nil
	})
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	defer func() {
		ws.Close()
		<-read
	}()
	await := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not cross the tunnel in 30s", what)
		}
	}
	for i := 1; i <= 3; i++ {
		clk.WaitPending(t, 1) // the socket's keepalive is armed
		clk.Advance(interval)
		await(pings, fmt.Sprintf("the agent's ping %d", i))
		if err := ws.WriteControl(websocket.PingMessage, []byte("client"), time.Now().Add(10*time.Second)); err != nil {
			t.Fatal(err)
		}
		await(pongs, fmt.Sprintf("the pong to the client's ping %d", i))
	}
}

// TestContract runs the agent's behaviour suite through the tunnel: a
// client of the master, a real agent behind it.
func TestContract(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	m.next(t)
	agenttest.Contract(t, func(t *testing.T) *client.Client { return dialClient(t, m) })
}

// 20 MiB of random bytes through `head -c` arrive sha256-exact.
func TestLargeTransferThroughTunnel(t *testing.T) {
	const n = 20 << 20
	data := make([]byte, n)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)

	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	m.next(t)
	c := dialClient(t, m)
	start := time.Now()
	// The process prints only once the client is attached and says go:
	// output written before the attach would be evicted from the ring.
	p, err := c.Start(ctxT(t), protocol.StartParams{Argv: []string{"sh", "-c", fmt.Sprintf("read x; exec head -c %d %s", n, path)}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go io.Copy(io.Discard, p.Stderr)
	if _, err := p.Stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	got, err := io.Copy(h, p.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if got != n || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("got %d bytes with sha256 %x; want %d with %x", got, h.Sum(nil), n, want)
	}
	if len(p.Gaps()) > 0 {
		t.Fatalf("gaps: %v", p.Gaps())
	}
	t.Logf("20 MiB through the tunnel in %s (%.0f MB/s)", elapsed, float64(n)/1e6/elapsed.Seconds())
}

// Cutting the tunnel at the master ends the clients' connections through
// it; the agent reconnects on its own and a new client works, and the
// process started before the cut is still there.
func TestReconnectAfterCut(t *testing.T) {
	m := startMaster(t)
	ta := startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	first := m.next(t)
	if up := testutil.Recv(t, "the tunnel's state", ta.states); !up {
		t.Fatal("first state false; want true")
	}
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

	first.Close()
	<-first.Done()
	var de *client.DisconnectedError
	if err := p.Wait(); !errors.As(err, &de) {
		t.Fatalf("Wait after the cut = %v; want *DisconnectedError", err)
	}
	if up := testutil.Recv(t, "the tunnel's state", ta.states); up {
		t.Fatal("state after the cut true; want false")
	}
	// A request on the dead session answers 502 with a clear message.
	rec := httptest.NewRecorder()
	first.Proxy(prefix).ServeHTTP(rec, httptest.NewRequest("GET", prefix+"/healthz", nil))
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "agent tunnel closed") {
		t.Fatalf("dead session: %d %q; want 502 naming the closed tunnel", rec.Code, rec.Body)
	}

	m.next(t)
	if up := testutil.Recv(t, "the tunnel's state", ta.states); !up {
		t.Fatal("state after reconnecting false; want true")
	}
	// The process lived on in the agent: the client reattaches at its
	// offset through the new tunnel, and a new control connection works.
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
	c2 := dialClient(t, m)
	list, err := c2.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != p.ID {
		t.Fatalf("List after reconnecting = %v, %v; want the one process", list, err)
	}
}

// recordHandler sends every log record to a channel.
type recordHandler struct{ ch chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r:
	default:
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func recordText(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	return b.String()
}

// A 401 from the master is logged as an error with the status and the
// master's message, and never the token; Serve keeps trying.
func TestRefusalIsReported(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			m := startMaster(t)
			m.setRefuse(status)
			logs := recordHandler{make(chan slog.Record, 256)}
			startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Logger: slog.New(logs)})
			deadline := time.After(testutil.Wait)
			for {
				select {
				case r := <-logs.ch:
					text := recordText(r)
					if strings.Contains(text, machineToken) {
						t.Fatalf("log record contains the machine token: %s", text)
					}
					if r.Level != slog.LevelError {
						continue
					}
					for _, want := range []string{fmt.Sprintf("status=%d", status), "machine token refused by the test master"} {
						if !strings.Contains(text, want) {
							t.Fatalf("refusal logged as %q; want it to mention %q", text, want)
						}
					}
					return
				case <-deadline:
					t.Fatalf("no error logged for the refusal within %s", testutil.Wait)
				}
			}
		})
	}
}

// The handshake carries the headers given.
func TestHandshakeHeaders(t *testing.T) {
	m := startMaster(t)
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	m.next(t)
	m.mu.Lock()
	h := m.headers
	m.mu.Unlock()
	if got := h.Get("Authorization"); got != "Bearer "+machineToken {
		t.Fatalf("Authorization %q", got)
	}
}

// Serve returns when ctx is cancelled, whether connected, dialling a
// master that never answers the handshake, or waiting to retry, and
// leaves no goroutine behind.
func TestServeReturnsOnCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))

	t.Run("connected", func(t *testing.T) {
		m := startMaster(t)
		ta := startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
		s := m.next(t)
		// A long request in progress through the tunnel ends too.
		c := dialClient(t, m)
		p, err := c.Start(ctxT(t), protocol.StartParams{Argv: []string{"sleep", "60"}})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ta.stop(t)
		select {
		case <-s.Done():
		case <-time.After(testutil.Wait):
			t.Fatal("the master's session did not end after Serve returned")
		}
		var de *client.DisconnectedError
		if err := p.Wait(); !errors.As(err, &de) {
			t.Fatalf("Wait = %v; want *DisconnectedError", err)
		}
	})
	t.Run("handshake hangs", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() {
			served <- tunnel.Serve(ctx, tunnel.AgentOptions{URL: "ws://" + ln.Addr().String() + "/api/agent", Handler: http.NotFoundHandler()})
		}()
		conn := <-accepted // the handshake is under way and will not be answered
		defer conn.Close()
		cancel()
		select {
		case err := <-served:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Serve = %v; want context.Canceled", err)
			}
		case <-time.After(testutil.Wait):
			t.Fatalf("Serve did not return within %s of cancel", testutil.Wait)
		}
	})
	t.Run("backing off", func(t *testing.T) {
		m := startMaster(t)
		m.setRefuse(http.StatusServiceUnavailable)
		logs := recordHandler{make(chan slog.Record, 256)}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() {
			served <- tunnel.Serve(ctx, tunnel.AgentOptions{URL: m.url + "/api/agent", Handler: http.NotFoundHandler(), Logger: slog.New(logs), MinBackoff: time.Hour})
		}()
		deadline := time.After(testutil.Wait)
	wait:
		for {
			select {
			case r := <-logs.ch:
				if strings.Contains(recordText(r), "retry_in=") {
					break wait // the first failure is logged; Serve now waits
				}
			case <-deadline:
				t.Fatalf("no failure logged within %s", testutil.Wait)
			}
		}
		cancel()
		select {
		case err := <-served:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Serve = %v; want context.Canceled", err)
			}
		case <-time.After(testutil.Wait):
			t.Fatalf("Serve did not return within %s of cancel", testutil.Wait)
		}
	})
}

func TestServeRejectsBadOptions(t *testing.T) {
	cases := []struct {
		name, url string
		h         http.Handler
		mention   string
	}{
		{"http scheme", "http://127.0.0.1:1/api/agent", http.NotFoundHandler(), "ws://"},
		{"no host", "ws:///api/agent", http.NotFoundHandler(), "ws://"},
		{"no handler", "ws://127.0.0.1:1/api/agent", nil, "handler"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tunnel.Serve(context.Background(), tunnel.AgentOptions{URL: tc.url, Handler: tc.h})
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Serve = %v; want an error mentioning %q", err, tc.mention)
			}
		})
	}
}

// The proxy strips the prefix and the client's credentials for the
// master, and keeps everything else.
func TestProxyStripsCredentials(t *testing.T) {
	m := startMaster(t)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "master-session=forged")
		json.NewEncoder(w).Encode(map[string]any{
			"path": r.URL.Path, "query": r.URL.RawQuery, "header": r.Header,
		})
	})
	startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{Handler: echo})
	m.next(t)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	req, _ := http.NewRequest("GET", m.srv.URL+prefix+"/v1/x?ticket="+clientToken+"&token=abc&keep=1", nil)
	req.Header.Set("Cookie", "session=secret")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("Sec-WebSocket-Protocol", protocol.SubprotocolRPC+", "+client.TokenSubprotocol(clientToken))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if c := resp.Header.Get("Set-Cookie"); c != "" {
		t.Errorf("the agent set a cookie on the master's origin: %q", c)
	}
	var got struct {
		Path, Query string
		Header      http.Header
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	if got.Path != "/v1/x" || got.Query != "keep=1" {
		t.Fatalf("agent saw %q ? %q; want /v1/x ? keep=1", got.Path, got.Query)
	}
	for _, k := range []string{"Authorization", "Cookie", "Origin"} {
		if v := got.Header.Get(k); v != "" {
			t.Errorf("agent saw %s: %q", k, v)
		}
	}
	if v := got.Header.Get("Sec-WebSocket-Protocol"); v != protocol.SubprotocolRPC {
		t.Errorf("agent saw Sec-WebSocket-Protocol %q; want %q", v, protocol.SubprotocolRPC)
	}
	if v := got.Header.Get("X-Custom"); v != "kept" {
		t.Errorf("agent saw X-Custom %q", v)
	}
	dump, _ := json.Marshal(got)
	if bytes.Contains(dump, []byte(clientToken)) {
		t.Fatalf("the client token reached the agent: %s", dump)
	}

	// A bearer token too; the prefix alone is the agent's root.
	req, _ = http.NewRequest("GET", m.srv.URL+prefix, nil)
	req.Header.Set("Authorization", "Bearer "+clientToken)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got.Header = nil
	json.NewDecoder(resp.Body).Decode(&got)
	if got.Path != "/" || got.Header.Get("Authorization") != "" {
		t.Fatalf("agent saw path %q, Authorization %q", got.Path, got.Header.Get("Authorization"))
	}
}

// Without a token, the agent refuses a client that dials it directly; the
// same client through the master's tunnel is served.
func TestTunnelIsTheOnlyTrustedPath(t *testing.T) {
	m := startMaster(t)
	ta := startTunnelAgent(t, m, agent.Options{}, tunnel.AgentOptions{})
	m.next(t)
	direct := httptest.NewServer(ta.a.Handler())
	defer direct.Close()
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(direct.URL, "http")+"/v1/rpc", http.Header{"Authorization": {"Bearer " + clientToken}})
	if err == nil {
		ws.Close()
		t.Fatal("the agent accepted the master's client token on a direct connection")
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("direct: %v; want 401", err)
	}
	c := dialClient(t, m)
	if _, err := c.List(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// draws is a seeded random source for the backoff that remembers its
// draws, so a test knows each wait exactly.
type draws struct {
	mu  sync.Mutex
	r   *mrand.Rand
	all []time.Duration
}

func (d *draws) rand(n int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.r.Int64N(n)
	d.all = append(d.all, time.Duration(v))
	return v
}

func (d *draws) last(t *testing.T, n int) time.Duration {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.all) != n {
		t.Fatalf("%d backoff draws after %d handshakes; want %d", len(d.all), n, n)
	}
	return d.all[n-1]
}

// A master that accepts the WebSocket and drops it at once is redialled
// with the backoff, not in a loop: over ten minutes of (fake) time the
// handshakes stay within the backoff's bound. Each round: the handshake,
// then the one wait armed on the fake clock, which the test then passes.
func TestAcceptAndDropBacksOff(t *testing.T) {
	handshakes := make(chan struct{}, 1024)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		handshakes <- struct{}{}
		ws.Close()
	}))
	defer srv.Close()
	clk := clocktest.New()
	d := &draws{r: mrand.New(mrand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- tunnel.Serve(ctx, tunnel.AgentOptions{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Handler: http.NotFoundHandler(), Clock: clk, Rand: d.rand})
	}()
	defer func() {
		cancel()
		if err := testutil.Recv(t, "Serve to return", served); !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v; want context.Canceled", err)
		}
	}()
	const (
		first, period = 500 * time.Millisecond, 30 * time.Second // the defaults
		window        = 10 * time.Minute
	)
	var elapsed time.Duration
	n := 0
	for elapsed < window {
		testutil.Recv(t, "a handshake", handshakes)
		n++
		clk.WaitPending(t, 1)
		wait := d.last(t, n)
		// Full jitter: below min(period, first·2^(n-1)).
		if bound := min(period, first<<min(n-1, 10)); wait >= bound {
			t.Fatalf("wait %d = %s; want below %s", n, wait, bound)
		}
		clk.Advance(wait)
		elapsed += wait
	}
	// The bound: the doubling rounds up to the period (7), then on average
	// one round per half period; a loop would be thousands.
	const ramp = 7
	if hi, lo := ramp+2*int(window/(period/2)), int(window/period); n > hi || n < lo {
		t.Fatalf("%d handshakes in %s of fake time; want between %d and %d", n, window, lo, hi)
	}
	t.Logf("%d handshakes in %s of fake time (%.3f/s)", n, window, float64(n)/window.Seconds())
}
