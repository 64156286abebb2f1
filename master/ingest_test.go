package master_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// pusher is a hand-driven bootstrapper connection; a goroutine reads
// what the master sends.
type pusher struct {
	t       *testing.T
	ws      *websocket.Conn
	replies chan []byte
	pongs   chan struct{}
	readErr chan error // the error that ended reading
}

func dialPush(t *testing.T, tm *testMaster, path string, h http.Header) (*pusher, *http.Response, error) {
	ws, resp, err := websocket.DefaultDialer.Dial(tm.WS+path, h)
	if err != nil {
		return nil, resp, err
	}
	p := &pusher{t: t, ws: ws, replies: make(chan []byte, 1024), pongs: make(chan struct{}, 16), readErr: make(chan error, 1)}
	ws.SetPongHandler(func(string) error { p.pongs <- struct{}{}; return nil })
	done, closing := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				p.readErr <- err
				return
			}
			select {
			case p.replies <- b:
			case <-closing:
				return
			}
		}
	}()
	t.Cleanup(func() { close(closing); ws.Close(); <-done })
	return p, resp, nil
}

func push(t *testing.T, tm *testMaster, token string) *pusher {
	t.Helper()
	p, resp, err := dialPush(t, tm, "/api/websocket", http.Header{"Authorization": {token}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	return p
}

func (p *pusher) send(frame string) {
	p.t.Helper()
	if err := p.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		p.t.Fatal(err)
	}
}

// ack pings and waits for the pong: everything sent before is stored.
func (p *pusher) ack() {
	p.t.Helper()
	if err := p.ws.WriteControl(websocket.PingMessage, []byte("42"), time.Now().Add(wait)); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.pongs:
	case err := <-p.readErr:
		p.t.Fatalf("waiting for the pong: %v", err)
	case <-time.After(wait):
		p.t.Fatal("no pong")
	}
}

// reply returns the next frame: a JSON-RPC error response.
func (p *pusher) reply() (code int, msg string) {
	p.t.Helper()
	var b []byte
	select {
	case b = <-p.replies:
	case err := <-p.readErr:
		p.t.Fatalf("waiting for a reply: %v", err)
	case <-time.After(wait):
		p.t.Fatal("no reply")
	}
	var r struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		p.t.Fatalf("reply %s: %v", b, err)
	}
	return r.Error.Code, r.Error.Message
}

// logEvent renders an installer/log notification.
func logEvent(machine, rid, boot string, seq int, text string) string {
	parts := strings.SplitN(rid, ":", 3)
	env, owner := parts[1], parts[2]
	return fmt.Sprintf(`{"jsonrpc":"2.0","method":%q,"params":{"machineName":%q,"runtimeId":{"workspaceId":%q,"envName":%q,"ownerId":%q},"time":"2026-11-22T10:00:00Z","text":%q,"installer":"i","stream":%q,"bootId":%q,"seq":%d}}`,
		che.MethodInstallerLog, machine, parts[0], env, owner, text, che.StreamStdout, boot, seq)
}

func texts(es []masterapi.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Text)
	}
	return out
}

// Handshakes without a valid machine token are refused with 401/403 and
// a message naming the problem, never echoing the token.
func TestIngestAuth(t *testing.T) {
	var logw testutil.SyncBuffer
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.Logger = slog.New(slog.NewTextHandler(&logw, nil)) })
	other, err := master.LoadSigner(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.MachineToken("w:e:o", "m")
	for _, c := range []struct {
		name, auth string
		status     int
		msg        string
	}{
		{"no token", "", 401, "missing machine token"},
		{"garbage", "not-a-jwt", 401, "invalid token"},
		{"another master's key", forged, 401, "signature is invalid"},
		{"client token", tm.clientToken(t), 403, "cannot push machine events"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.auth != "" {
				h.Set("Authorization", c.auth)
			}
			_, resp, err := dialPush(t, tm, "/api/websocket", h)
			if err == nil || resp == nil || resp.StatusCode != c.status {
				t.Fatalf("dial: err %v, response %v; want %d", err, resp, c.status)
			}
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			if !strings.Contains(body.String(), c.msg) || (c.auth != "" && strings.Contains(body.String(), c.auth)) {
				t.Errorf("body %q: want it to say %q and not contain the token", body.String(), c.msg)
			}
			logged := logw.String()
			if !strings.Contains(logged, "request refused") || (c.auth != "" && strings.Contains(logged, c.auth)) {
				t.Errorf("log %q: want the refusal logged without the token", logged)
			}
		})
	}
	// Che's forms: raw Authorization (above), Bearer and ?token= work.
	tok := tm.machineToken(t, "w:e:o", "m")
	if _, resp, err := dialPush(t, tm, "/api/websocket-minor?token="+tok, nil); err != nil {
		t.Errorf("?token=: %v %v", err, resp)
	}
	if _, resp, err := dialPush(t, tm, "/api/websocket", http.Header{"Authorization": {"Bearer " + tok}}); err != nil {
		t.Errorf("Bearer: %v %v", err, resp)
	}
}

// Bad frames get JSON-RPC errors naming what is wrong, are not stored,
// and the connection goes on; an event for another machine is refused;
// an oversized frame is refused and counted lost, one above the hard
// limit closes the connection with 1009.
func TestIngestBadFrames(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.MaxEventBytes = 64 << 10 })
	const rid = "w:e:o"
	p := push(t, tm, tm.machineToken(t, rid, "m"))
	for _, c := range []struct {
		name, frame string
		code        int
		msg         string
	}{
		{"not JSON", `{"jsonrpc":"2.0",`, -32700, "parse error"},
		{"batch", `[` + logEvent("m", rid, "b", 1, "x") + `]`, -32600, "batch"},
		{"wrong version", `{"jsonrpc":"1.0","method":"` + che.MethodInstallerLog + `","params":{}}`, -32600, `jsonrpc is "1.0"`},
		{"unknown request", `{"jsonrpc":"2.0","id":7,"method":"rm -rf","params":{}}`, -32601, `method "rm -rf" not found`},
		{"no params", `{"jsonrpc":"2.0","method":"` + che.MethodInstallerLog + `"}`, -32602, "params missing"},
		// The message is the master's reply, word for word: it quotes the statuses.
		{"bad status", strings.Replace(logEvent("m", rid, "b", 1, "x"), strconv.Quote(che.MethodInstallerLog), strconv.Quote(che.MethodBootstrapperStatus), 1), -32602, `status "": want STARTING, DONE or FAILED`},
		{"bad stream", strings.Replace(logEvent("m", rid, "b", 1, "x"), che.StreamStdout, "STDWHAT", 1), -32602, `stream "STDWHAT"`},
		{"params of the wrong type", `{"jsonrpc":"2.0","method":"` + che.MethodInstallerLog + `","params":{"seq":"one"}}`, -32602, "invalid params"},
		{"another machine", logEvent("n", rid, "b", 1, "x"), masterapi.CodeForbidden, `event for machine "n" of runtime "w:e:o" refused: the token is for machine "m"`},
		{"another runtime", logEvent("m", "x:y:z", "b", 1, "x"), masterapi.CodeForbidden, `runtime "x:y:z" refused`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p.t = t
			p.send(c.frame)
			code, msg := p.reply()
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("reply %d %q; want %d containing %q", code, msg, c.code, c.msg)
			}
		})
	}
	p.t = t
	// The connection survived all of it; a good event is stored, alone.
	p.send(logEvent("m", rid, "b", 1, "good"))
	p.ack()
	client := tm.clientToken(t)
	if got := texts(logs(t, tm, client, rid, "m")); len(got) != 1 || got[0] != "good" {
		t.Errorf("stored %q, want only \"good\"", got)
	}
	if st, _ := get(t, tm.URL+"/api/runtimes/x:y:z/machines/m", client, nil); st != 404 {
		t.Errorf("another runtime's machine exists: %d", st)
	}
	// Beyond the limit: refused with an error, journaled as one lost
	// line, and acknowledged past, so that it cannot stop the stream (it
	// used to close the connection with 1009, and a bootstrapper resent it
	// for ever). The event after it is stored.
	p.send(logEvent("m", rid, "b", 2, strings.Repeat("x", 65<<10)))
	if code, msg := p.reply(); code != protocol.CodeTooLarge || !strings.Contains(msg, "exceeds the limit of 65536 bytes") {
		t.Errorf("oversized frame: reply %d %q; want %d, the limit", code, msg, protocol.CodeTooLarge)
	}
	p.send(logEvent("m", rid, "b", 3, "after"))
	p.ack()
	got := logs(t, tm, client, rid, "m")
	if len(got) != 3 || got[1].Lost != 1 || got[1].Text != che.RefusedText(int64(len(logEvent("m", rid, "b", 2, strings.Repeat("x", 65<<10)))), 64<<10) || got[2].Text != "after" {
		t.Errorf("stored %+v; want good, one lost line saying why, after", got)
	}
	// Beyond HardLimitFactor times the limit: close 1009.
	p.send(logEvent("m", rid, "b", 4, strings.Repeat("x", wsrpc.HardLimitFactor*64<<10)))
	var err error
	select {
	case err = <-p.readErr:
	case <-time.After(wait):
	}
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Errorf("after a frame above the hard limit: %v, want close 1009", err)
	}
}

// The handshake's response says what the master accepts: its message
// limit and that it understands installer/serverStatusChanged.
func TestIngestHandshakeHeaders(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.MaxEventBytes = 64 << 10 })
	_, resp, err := dialPush(t, tm, "/api/websocket", http.Header{"Authorization": {tm.machineToken(t, "w:e:o", "m")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get(che.HeaderMaxMessage); got != "65536" {
		t.Errorf("%s: %q; want 65536", che.HeaderMaxMessage, got)
	}
	if got := resp.Header.Get(che.HeaderCapabilities); !che.HasCapability(got, che.CapServerStatus) {
		t.Errorf("%s: %q; want %s", che.HeaderCapabilities, got, che.CapServerStatus)
	}
}

// Events re-sent after a reconnection, or to a restarted master, are
// stored once: deduplication by bootId, endpoint and seq survives the
// restart. A pong means stored.
func TestDedupAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	const rid = "w:e:o"
	tm := startMaster(t, dir, "")
	tok := tm.machineToken(t, rid, "m")
	sendRange := func(tm *testMaster, from, to int) {
		p := push(t, tm, tok)
		for i := from; i <= to; i++ {
			p.send(logEvent("m", rid, "boot1", i, strconv.Itoa(i)))
		}
		p.ack()
		p.ws.Close()
	}
	sendRange(tm, 1, 5)
	sendRange(tm, 3, 7)
	addr := tm.addr()
	tm.stop()
	tm = startMaster(t, dir, addr)
	sendRange(tm, 5, 9)
	// A new boot starts its own sequence.
	p := push(t, tm, tok)
	p.send(logEvent("m", rid, "boot2", 1, "new boot"))
	p.ack()
	want := []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "new boot"}
	got := texts(logs(t, tm, tm.clientToken(t), rid, "m"))
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("stored %q, want %q", got, want)
	}
}

// A machine whose connection stops reading (its replies back up) holds
// back nobody else: another machine's events are stored and delivered
// while it is stuck.
func TestStuckMachineDoesNotBlockOthers(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.WriteTimeout = time.Minute })
	const rid = "w:e:o"
	client := tm.clientToken(t)
	sub := subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: rid})
	stuck := push(t, tm, tm.machineToken(t, rid, "stuck"))
	// Frames that each get an error reply, never read: the master's
	// writes to this connection block once the socket buffers are full.
	bad := []byte(`{"jsonrpc":"2.0","method":"` + che.MethodInstallerLog + `","params":{"seq":"x"}}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flooding := make(chan int, 1)
	go func() {
		n := 0
		for ctx.Err() == nil {
			stuck.ws.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			if stuck.ws.WriteMessage(websocket.TextMessage, bad) != nil {
				break // our own writes block: the master stopped reading us
			}
			n++
		}
		flooding <- n
	}()
	var n int
	select {
	case n = <-flooding:
	case <-time.After(wait):
		t.Fatal("the stuck connection's frames never backed up")
	}
	// The master is stuck writing to "stuck"; another machine is served.
	ok := push(t, tm, tm.machineToken(t, rid, "ok"))
	ok.send(logEvent("ok", rid, "b", 1, "still served"))
	ok.ack()
	sub.until(t, "the other machine's event delivered", func(_ map[string]*masterapi.Machine, es map[string][]masterapi.Entry) bool {
		return len(es[rid+"/ok"]) == 1 && es[rid+"/ok"][0].Text == "still served"
	})
	t.Logf("%d unanswered frames backed up on the stuck connection", n)
}

// No poison frame, end to end: porthole's bootstrapper against a master
// with a small -max-message gets every line of a long one stored, split
// below the limit the master announced, none lost, and exits 0. The
// bootstrapper used to send the line in frames up to -max-line (8 KiB,
// escaped up to 6 times larger); the master closed each connection with
// 1009, and the stream stopped there.
func TestIngestLongLinesBelowLimit(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.MaxEventBytes = 4096 })
	const rid = "w:e:o"
	cfg := config(t, `[{"id":"org.x","script":"head -c 20000 /dev/zero | tr '\\000' '\\001'; echo; echo end"}]`)
	boot := bootstrap(t, tm.WS, tm.machineToken(t, rid, "m"), rid, "m", cfg)
	select {
	case <-boot.done:
	case <-time.After(2 * wait):
		t.Fatal("the bootstrapper did not exit")
	}
	if boot.code != 0 {
		t.Fatalf("exit code %d", boot.code)
	}
	var lines []string
	var line strings.Builder
	for _, e := range logs(t, tm, tm.clientToken(t), rid, "m") {
		if e.Type != masterapi.EntryLog {
			continue
		}
		if e.Lost > 0 {
			t.Fatalf("a lost entry: %+v", e)
		}
		line.WriteString(e.Text)
		if !e.Partial {
			lines = append(lines, line.String())
			line.Reset()
		}
	}
	if len(lines) != 2 || lines[0] != strings.Repeat("\x01", 20000) || lines[1] != "end" {
		t.Fatalf("%d lines stored; want the 20000-byte line and end", len(lines))
	}
}
