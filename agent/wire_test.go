package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/protocol"
)

// rawDial opens a WebSocket with the given headers and subprotocols.
func rawDial(t *testing.T, url string, h http.Header, protos ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protos, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(url, h)
	if ws != nil {
		t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

func TestAuthOriginAndVersion(t *testing.T) {
	ta := startAgent(t, agent.Options{AllowedOrigins: []string{"https://ide.example.com"}})
	const secret = "wrong-secret-token-value"
	cases := []struct {
		name    string
		h       http.Header
		protos  []string
		status  int
		mention string
	}{
		{name: "no token", h: http.Header{}, status: 401, mention: "missing token"},
		{name: "wrong token", h: bearer(secret), status: 401, mention: "invalid token"},
		{name: "token", h: bearer(token), status: 101},
		{name: "browser subprotocol token", h: http.Header{}, protos: []string{protocol.SubprotocolRPC, client.TokenSubprotocol(token)}, status: 101},
		{name: "wrong browser token", h: http.Header{}, protos: []string{protocol.SubprotocolRPC, client.TokenSubprotocol(secret)}, status: 401},
		{name: "foreign origin", h: http.Header{"Authorization": {"Bearer " + token}, "Origin": {"https://evil.example"}}, status: 403, mention: "https://evil.example"},
		{name: "allowed origin", h: http.Header{"Authorization": {"Bearer " + token}, "Origin": {"https://ide.example.com"}}, status: 101},
		{name: "same origin", h: http.Header{"Authorization": {"Bearer " + token}, "Origin": {"http://" + ta.addr}}, status: 101},
		{name: "major version mismatch", h: http.Header{"Authorization": {"Bearer " + token}, protocol.HeaderProtocol: {"2.0"}}, status: 400, mention: "2.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, resp, err := rawDial(t, ta.url+"/v1/rpc", tc.h, tc.protos...)
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d; want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 101 {
				if ws.Subprotocol() != protocol.SubprotocolRPC && len(tc.protos) > 0 {
					t.Fatalf("subprotocol %q", ws.Subprotocol())
				}
				if resp.Header.Get(protocol.HeaderProtocol) != protocol.Version {
					t.Fatalf("101 without %s header", protocol.HeaderProtocol)
				}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), tc.mention) {
				t.Fatalf("body %q does not mention %q", body, tc.mention)
			}
			if strings.Contains(string(body), secret) || strings.Contains(string(body), token) {
				t.Fatalf("body %q contains a token", body)
			}
		})
	}
	// A version mismatch names both versions.
	_, resp, _ := rawDial(t, ta.url+"/v1/rpc", http.Header{"Authorization": {"Bearer " + token}, protocol.HeaderProtocol: {"2.0"}})
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "2.0") || !strings.Contains(string(body), protocol.Version) {
		t.Fatalf("version mismatch: %q", body)
	}
}

// Requests whose context is marked trusted (the master's tunnel) skip the
// token and Origin checks but not the version check; the same requests on
// an ordinary listener are still refused.
func TestTrustedContext(t *testing.T) {
	a, err := agent.New(agent.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx, time.Second)
	})
	h := a.Handler()
	untrusted := "ws://" + agenttest.Serve(t, h)
	trusted := "ws://" + agenttest.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(agent.TrustedContext(r.Context())))
	}))
	foreign := http.Header{"Origin": {"https://evil.example"}}
	badVersion := http.Header{protocol.HeaderProtocol: {"2.0"}}
	cases := []struct {
		name                       string
		h                          http.Header
		wantTrusted, wantUntrusted int
	}{
		{"no token", http.Header{}, 101, 401},
		{"wrong token", bearer("wrong-secret-token-value"), 101, 401},
		{"foreign origin, no token", foreign, 101, 403},
		{"major version mismatch", badVersion, 400, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, side := range []struct {
				url    string
				status int
			}{{trusted, tc.wantTrusted}, {untrusted, tc.wantUntrusted}} {
				_, resp, err := rawDial(t, side.url+"/v1/rpc", tc.h, protocol.SubprotocolRPC)
				if resp == nil {
					t.Fatalf("%s: no response: %v", side.url, err)
				}
				if resp.StatusCode != side.status {
					t.Errorf("%s: status %d; want %d", side.url, resp.StatusCode, side.status)
				}
			}
		})
	}
	// A trusted POST /v1/rpc with an Origin passes too.
	for _, side := range []struct {
		url    string
		status int
	}{{trusted, 200}, {untrusted, 403}} {
		req, _ := http.NewRequest("POST", "http"+strings.TrimPrefix(side.url, "ws")+"/v1/rpc", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"`+protocol.MethodList+`","params":{}}`))
		req.Header.Set("Origin", "https://evil.example")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != side.status {
			t.Errorf("POST %s: status %d; want %d", side.url, resp.StatusCode, side.status)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

// rpcConn is a raw control socket for wire-level tests.
type rpcConn struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialRPC(t *testing.T, ta *testAgent) *rpcConn {
	ws, _, err := rawDial(t, ta.url+"/v1/rpc", bearer(token), protocol.SubprotocolRPC)
	if err != nil {
		t.Fatal(err)
	}
	c := &rpcConn{t, ws}
	if m := c.read(); m["method"] != protocol.EventHello {
		t.Fatalf("first message %v; want %s", m, protocol.EventHello)
	}
	return c
}

func (c *rpcConn) send(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rpcConn) read() map[string]any {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, b, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatal(err)
	}
	if typ != websocket.TextMessage {
		c.t.Fatalf("message type %d; want text", typ)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatal(err)
	}
	return m
}

func errCode(m map[string]any) (int, string) {
	e, ok := m["error"].(map[string]any)
	if !ok {
		return 0, ""
	}
	return int(e["code"].(float64)), e["message"].(string)
}

func TestMalformedAndOversizedMessages(t *testing.T) {
	ta := startAgent(t, agent.Options{MaxMessageBytes: 4096})
	c := dialRPC(t, ta)
	cases := []struct {
		name    string
		msg     string
		code    int
		mention string
	}{
		{"not json", `{"jsonrpc":"2.0","id":1,"method":`, protocol.CodeParseError, "parse error"},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"agent.info"}]`, protocol.CodeInvalidRequest, "batch"},
		{"wrong version", `{"jsonrpc":"1.0","id":2,"method":"agent.info"}`, protocol.CodeInvalidRequest, "jsonrpc"},
		{"unknown method", `{"jsonrpc":"2.0","id":3,"method":"process.explode"}`, protocol.CodeMethodNotFound, "process.explode"},
		{"unknown field", `{"jsonrpc":"2.0","id":4,"method":"process.start","params":{"argv":["true"],"ttty":true}}`, protocol.CodeInvalidParams, "ttty"},
		{"bad signal", `{"jsonrpc":"2.0","id":5,"method":"process.signal","params":{"id":"1","signal":"SIGFOO"}}`, protocol.CodeInvalidParams, "SIGFOO"},
		{"bad size", `{"jsonrpc":"2.0","id":6,"method":"process.start","params":{"tty":true,"size":{"rows":0,"cols":80}}}`, protocol.CodeInvalidParams, "rows"},
		{"no such process", `{"jsonrpc":"2.0","id":7,"method":"process.get","params":{"id":"999"}}`, protocol.CodeNotFound, "999"},
		{"no such command", `{"jsonrpc":"2.0","id":8,"method":"process.start","params":{"argv":["/no/such/binary"]}}`, protocol.CodeStartFailed, "/no/such/binary"},
		{"oversized", `{"jsonrpc":"2.0","id":9,"method":"agent.info","params":{"pad":"` + strings.Repeat("x", 8000) + `"}}`, protocol.CodeTooLarge, "4096"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.msg)
			code, msg := errCode(c.read())
			if code != tc.code || !strings.Contains(msg, tc.mention) {
				t.Fatalf("error %d %q; want %d mentioning %q", code, msg, tc.code, tc.mention)
			}
		})
	}
	// The socket survived all of it.
	c.send(`{"jsonrpc":"2.0","id":10,"method":"agent.info"}`)
	if m := c.read(); m["result"] == nil {
		t.Fatalf("agent.info after bad messages: %v", m)
	}
	// Far beyond the limit the socket is closed with 1009.
	c.ws.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), 4096*17))
	c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ws.ReadMessage()
	if !websocket.IsCloseError(err, protocol.CloseTooBig) {
		t.Fatalf("read after a huge message = %v; want close 1009", err)
	}
}

func TestHTTPPostRPC(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	post := func(body, tok string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", "http://"+ta.addr+"/v1/rpc", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if st, _ := post(`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`, "nope"); st != 401 {
		t.Fatalf("bad token: status %d", st)
	}
	st, m := post(`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"argv":["sleep","30"],"tty":true}}`, token)
	if st != 200 || m["result"] == nil {
		t.Fatalf("start: %d %v", st, m)
	}
	id := m["result"].(map[string]any)["id"].(string)
	st, m = post(`{"jsonrpc":"2.0","id":2,"method":"process.resize","params":{"id":"`+id+`","rows":40,"cols":120}}`, token)
	if st != 200 || m["error"] != nil {
		t.Fatalf("resize: %d %v", st, m)
	}
	if _, m = post(`{"jsonrpc":"2.0","id":3,"method":"process.get","params":{"id":"`+id+`"}}`, token); m["result"].(map[string]any)["size"].(map[string]any)["cols"] != 120.0 {
		t.Fatalf("get after resize: %v", m)
	}
	if st, m = post(`{bad`, token); st != 400 {
		t.Fatalf("malformed body: %d %v", st, m)
	}
	post(`{"jsonrpc":"2.0","id":4,"method":"process.kill","params":{"id":"`+id+`"}}`, token)
}

// The framed attach socket's order is fixed: started, output, eof, exited,
// close 1000, even for a process that exits at once.
func TestAttachWireOrder(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	ctx := ctxT(t)
	for _, argv := range [][]string{{"true"}, {"sh", "-c", "echo out; echo err >&2; exit 5"}} {
		var info protocol.ProcessInfo
		if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: argv}, &info); err != nil {
			t.Fatal(err)
		}
		ws, _, err := rawDial(t, ta.url+"/v1/processes/"+info.ID+"/attach", bearer(token), protocol.SubprotocolAttach)
		if err != nil {
			t.Fatal(err)
		}
		var seq []string
		out := map[protocol.Stream]string{}
		for {
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			typ, b, err := ws.ReadMessage()
			if err != nil {
				if !websocket.IsCloseError(err, protocol.CloseNormal) {
					t.Fatalf("%v: end = %v; want close 1000", argv, err)
				}
				seq = append(seq, "close")
				break
			}
			if typ == websocket.BinaryMessage {
				s, _, payload, err := protocol.ParseOutputFrame(b)
				if err != nil {
					t.Fatal(err)
				}
				out[s] += string(payload)
				seq = append(seq, "output")
				continue
			}
			var m struct{ Method string }
			json.Unmarshal(b, &m)
			seq = append(seq, m.Method)
		}
		got := strings.Join(compact(seq), " ")
		if !strings.HasPrefix(got, "process.started ") || !strings.HasSuffix(got, "process.eof process.exited close") || strings.Contains(got, "exited output") {
			t.Fatalf("%v: order %q", argv, got)
		}
		if len(argv) > 1 && (out[protocol.Stdout] != "out\n" || out[protocol.Stderr] != "err\n") {
			t.Fatalf("output %q", out)
		}
	}
}

// compact folds runs of the same event.
func compact(seq []string) []string {
	var out []string
	for _, s := range seq {
		if len(out) > 0 && out[len(out)-1] == s {
			continue
		}
		out = append(out, s)
	}
	return out
}

// countWriter counts the bytes written to it and signals each write.
type countWriter struct {
	n     atomic.Int64
	wrote chan struct{} // cap 1
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

// A viewer that stops reading holds the process back for the stall bound
// only; another viewer still gets every byte; memory stays bounded.
//
// The agent's clock moves only by half the stall bound at a time, and only
// when the live viewer has everything the process wrote and the ring's
// writer waits. A viewer is demoted once it made no progress across a
// whole stall bound, so across two such moves: the stalled viewer is,
// once its socket is full; the live viewer never is, since before each
// move it has read up to the end, past wherever it lagged before the
// previous one. No real interval matters, however slow the machine.
func TestStalledViewerDoesNotStallOthers(t *testing.T) {
	const total = 32 << 20
	const stall = time.Second
	clk := clocktest.New()
	// Pings and the exit drain are an hour away: every timer due within
	// the stall bound is the ring's, and the moves of the clock never end
	// the draining of the process's last output.
	ta := startAgent(t, agent.Options{RingBytes: 256 << 10, StallTimeout: stall, PingInterval: time.Hour, ExitDrain: time.Hour, Clock: clk})
	c := ta.dial(t)
	ctx := ctxT(t)
	var info protocol.ProcessInfo
	// The process waits for its first line of stdin, so both viewers are
	// attached before it prints.
	err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", fmt.Sprintf("read x; head -c %d /dev/zero", total)}}, &info)
	if err != nil {
		t.Fatal(err)
	}
	stalled, _, err := rawDial(t, ta.url+"/v1/processes/"+info.ID+"/attach", bearer(token), protocol.SubprotocolAttach)
	if err != nil {
		t.Fatal(err)
	}
	_ = stalled // never read
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	live, err := c.Attach(ctx, info.ID, client.Offsets{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go io.Copy(io.Discard, live.Stderr)
	got := &countWriter{wrote: make(chan struct{}, 1)}
	copied := make(chan error, 1)
	go func() {
		n, err := io.Copy(got, live.Stdout)
		if err == nil && n != total {
			err = fmt.Errorf("live viewer got %d bytes; want %d", n, total)
		}
		copied <- err
	}()
	live.Stdin.Write([]byte("go\n"))

	end := func() int64 {
		var p protocol.ProcessInfo
		if err := c.Call(ctx, protocol.MethodGet, protocol.IDParams{ID: info.ID}, &p); err != nil {
			t.Fatal(err)
		}
		return p.Stdout.End
	}
	deadline := time.After(30 * time.Second)
	for done := false; !done; {
		if clk.Due(stall) > 0 {
			e := end()
			for got.n.Load() < e && !done {
				select {
				case <-got.wrote:
				case err := <-copied:
					if err != nil {
						t.Fatal(err)
					}
					done = true
				case <-deadline:
					t.Fatalf("the live viewer did not catch up in 30s (%d of %d bytes; gaps %v; end now %d)", got.n.Load(), e, live.Gaps(), end())
				}
			}
			if !done && got.n.Load() == e && clk.Due(stall) > 0 && end() == e {
				clk.Advance(stall / 2)
				continue // the writer may still wait: look again
			}
		}
		if done {
			break
		}
		select {
		case err := <-copied:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		case <-clk.Armed():
		case <-got.wrote:
		case <-deadline:
			t.Fatalf("the live viewer got %d of %d bytes in 30s", got.n.Load(), total)
		}
	}
	if err := live.Wait(); err != nil {
		t.Fatal(err)
	}
	if g := live.Gaps(); len(g) != 0 {
		t.Fatalf("live viewer had gaps %v", g)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 16<<20 {
		t.Fatalf("heap grew by %d bytes while streaming %d bytes past a stalled viewer", grew, total)
	}
}

func TestSubscribeEventsUTF8AndOffsets(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := dialRPC(t, ta)
	// A euro sign split between two writes, the second made only once the
	// agent holds the first byte, then a byte that is not UTF-8.
	c.send(`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"argv":["sh","-c","read x; printf '\\342'; read y; printf '\\202\\254 ok\\n'; printf '\\377'"]}}`)
	m := c.read()
	id := m["result"].(map[string]any)["id"].(string)
	c.send(`{"jsonrpc":"2.0","id":2,"method":"process.subscribe","params":{"id":"` + id + `","stdout":0,"stderr":0}}`)
	if m := c.read(); m["id"] != 2.0 || m["error"] != nil {
		t.Fatalf("subscribe reply %v must come before events", m)
	}
	c.send(`{"jsonrpc":"2.0","id":3,"method":"process.write","params":{"id":"` + id + `","text":"go\n"}}`)
	// Wait until the first byte is in the ring (no event can carry it yet:
	// it is half a character), then let the process write the rest.
	ctl := ta.dial(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := ctl.Get(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if info.Stdout.End == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stdout end %d; want the first byte", info.Stdout.End)
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.send(`{"jsonrpc":"2.0","id":4,"method":"process.write","params":{"id":"` + id + `","text":"go\n"}}`)
	var text []byte
	var next int64
	var events []string
	for {
		m := c.read()
		method, _ := m["method"].(string)
		if method == "" {
			continue // the write's reply
		}
		events = append(events, method)
		if method == protocol.EventExited {
			break
		}
		if method != protocol.EventOutput {
			continue
		}
		b, _ := json.Marshal(m["params"])
		var ev protocol.OutputEvent
		json.Unmarshal(b, &ev)
		if ev.Offset != next {
			t.Fatalf("event at offset %d; want %d", ev.Offset, next)
		}
		if ev.Text != "" && !utf8.ValidString(ev.Text) {
			t.Fatalf("invalid UTF-8 in text %q", ev.Text)
		}
		text = append(append(text, ev.Text...), ev.Data...)
		next += int64(ev.Len)
	}
	if string(text) != "€ ok\n\xff" {
		t.Fatalf("output %q; want %q", text, "€ ok\n\xff")
	}
	if events[0] != protocol.EventStarted {
		t.Fatalf("events %v; want started first", events)
	}
}

func TestProcessLimit(t *testing.T) {
	ta := startAgent(t, agent.Options{MaxProcesses: 2})
	c := ta.dial(t)
	ctx := ctxT(t)
	for i := 0; i < 2; i++ {
		if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sleep", "30"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"true"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "process limit reached: 2") {
		t.Fatalf("third start = %v; want the limit error", err)
	}
}

// The agent pings an idle socket every interval, on its clock: each
// interval the test moves the clock by brings exactly one ping.
func TestKeepalivePings(t *testing.T) {
	const interval = 15 * time.Second
	clk := clocktest.New()
	ta := startAgent(t, agent.Options{PingInterval: interval, Clock: clk})
	ws, _, err := rawDial(t, ta.url+"/v1/rpc", bearer(token), protocol.SubprotocolRPC)
	if err != nil {
		t.Fatal(err)
	}
	pings := make(chan struct{}, 8)
	ws.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
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
	for i := 1; i <= 3; i++ {
		clk.WaitPending(t, 1) // the socket's keepalive is armed
		clk.Advance(interval - 1)
		select {
		case <-pings:
			t.Fatalf("ping %d came before the interval had passed", i)
		default:
		}
		clk.Advance(1)
		select {
		case <-pings:
		case <-time.After(30 * time.Second):
			t.Fatalf("ping %d did not arrive", i)
		}
	}
	// The socket that answered its pings is still served.
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`)); err != nil {
		t.Fatal(err)
	}
	ws.Close()
	<-read
}

// Shutdown hangs up children that ignore SIGHUP and SIGTERM, then kills them.
func TestShutdownKillsStubbornChildren(t *testing.T) {
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	ctx := ctxT(t)
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", "trap '' HUP TERM; sleep 1000"}}, &info); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ta.a.Shutdown(sctx, 100*time.Millisecond)
	if err := syscall.Kill(info.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("child %d still exists after shutdown (kill 0 = %v)", info.PID, err)
	}
}

// An HTTP write to a process that never reads does not hold up shutdown.
func TestShutdownWithBlockedHTTPWrite(t *testing.T) {
	a, err := agent.New(agent.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := "http://" + agenttest.Serve(t, a.Handler())
	post := func(body string) (*http.Response, error) {
		req, _ := http.NewRequest("POST", srv+"/v1/rpc", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		return http.DefaultClient.Do(req)
	}
	resp, err := post(`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"argv":["sleep","1000"]}}`)
	if err != nil {
		t.Fatal(err)
	}
	var started struct{ Result protocol.ProcessInfo }
	json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	big := strings.Repeat("x", 512<<10) // more than a pipe holds
	posted := make(chan error, 1)
	go func() {
		resp, err := post(`{"jsonrpc":"2.0","id":2,"method":"process.write","params":{"id":"` + started.Result.ID + `","text":"` + big + `"}}`)
		if err == nil {
			resp.Body.Close()
		}
		posted <- err
	}()
	// Wait until the write is blocked in the agent: the process is running
	// and the request has not returned.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	shut := make(chan struct{})
	go func() {
		a.Shutdown(ctx, 100*time.Millisecond)
		close(shut)
	}()
	select {
	case <-shut:
	case <-ctx.Done():
		t.Fatal("Shutdown hung on a blocked HTTP write")
	}
	<-posted
}

// A peer that stops answering pings (a dead proxy, a suspended laptop) is
// disconnected after two intervals and a second, so its session ends.
func TestSilentPeerIsDropped(t *testing.T) {
	ta := startAgent(t, agent.Options{PingInterval: 50 * time.Millisecond, Clock: clock.Real})
	ws, _, err := rawDial(t, ta.url+"/v1/rpc", bearer(token), protocol.SubprotocolRPC)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetPingHandler(func(string) error { return nil }) // never pong
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the agent kept a silent peer for 20s")
			}
			return // the agent closed the connection
		}
	}
}
