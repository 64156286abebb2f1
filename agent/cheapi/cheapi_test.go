package cheapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/cheapi"
	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/internal/testutil"
)

// rpcConn is a Che-style JSON-RPC client for the tests.
type rpcConn struct {
	t  *testing.T
	p  *player
	id int
}

func connect(t *testing.T, url string) *rpcConn {
	c := &rpcConn{t: t, p: dial(t, url)}
	c.p.waitJSON("hello", map[string]any{"method": "connected"})
	return c
}

// call sends a request and returns its answer (result or error) decoded.
func (c *rpcConn) call(method string, params any) map[string]any {
	c.t.Helper()
	c.id++
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.id, "method": method, "params": params})
	if err := c.p.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatal(err)
	}
	return c.waitFor(map[string]any{"id": float64(c.id)})
}

func (c *rpcConn) waitFor(want map[string]any) map[string]any {
	c.t.Helper()
	c.p.waitJSON(fmt.Sprintf("%v", want), want)
	var m map[string]any
	json.Unmarshal([]byte(c.p.got[c.p.next-1].Data), &m)
	return m
}

// TestAuthCheStyles: the agent's token as Che's clients send it (?token=,
// Authorization raw, Authorization Bearer) and porthole's own; refusals
// are 401 before any upgrade; /liveness never needs it.
func TestAuthCheStyles(t *testing.T) {
	c := startChe(t, cheapi.Options{}, agent.Options{})
	base := "ws://" + c.addr + "/connect"
	for _, tc := range []struct {
		name   string
		url    string
		header http.Header
		status int
	}{
		{"query token", base + "?token=" + token, nil, 101},
		{"raw header", base, http.Header{"Authorization": {token}}, 101},
		{"bearer header", base, http.Header{"Authorization": {"Bearer " + token}}, 101},
		{"porthole subprotocol", base, http.Header{"Sec-WebSocket-Protocol": {"porthole.token." + base64.RawURLEncoding.EncodeToString([]byte(token))}}, 101},
		{"no token", base, nil, 401},
		{"wrong query token", base + "?token=nope", nil, 401},
		{"wrong raw header", base, http.Header{"Authorization": {"nope"}}, 401},
		{"other origin", base + "?token=" + token, http.Header{"Origin": {"https://evil.example"}}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, resp, err := websocket.DefaultDialer.Dial(tc.url, tc.header)
			if ws != nil {
				ws.Close()
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status && !(tc.status == 101 && err == nil) {
				t.Errorf("status %d, want %d (%v)", resp.StatusCode, tc.status, err)
			}
		})
	}
	for _, path := range []string{"/process", "/process/1", "/pty", "/attach/1"} {
		if resp, body := httpDo(t, "GET", "http://"+c.addr+path, ""); resp.StatusCode != 401 || !strings.Contains(body, "missing token") {
			t.Errorf("GET %s without a token: %d %q", path, resp.StatusCode, body)
		}
	}
	if resp, body := httpDo(t, "GET", "http://"+c.addr+"/liveness", ""); resp.StatusCode != 200 || body != "" {
		t.Errorf("/liveness: %d %q", resp.StatusCode, body)
	}
}

// TestLogBound: an exec-agent process's log keeps the newest lines within
// -che-log-bytes; getLogs past the bound returns what is kept, the
// newest, in order; the events still carried every line.
func TestLogBound(t *testing.T) {
	const lines = 2000
	c := startChe(t, cheapi.Options{LogBytes: 100 * (64 + 4)}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	r := rc.call("process.start", map[string]any{"name": "many", "commandLine": fmt.Sprintf("seq 1 %d", lines)})
	pid := r["result"].(map[string]any)["pid"]
	rc.waitFor(map[string]any{"method": "process_died"})
	events := 0
	for _, f := range rc.p.got {
		if strings.Contains(f.Data, `"process_stdout"`) {
			events++
		}
	}
	if events != lines {
		t.Errorf("%d stdout events, want %d", events, lines)
	}
	logs := rc.call("process.getLogs", map[string]any{"pid": pid, "limit": 1000})["result"].([]any)
	if len(logs) == 0 || len(logs) > 100 {
		t.Fatalf("kept %d lines, want 1..100", len(logs))
	}
	for i, l := range logs {
		want := strconv.Itoa(lines - len(logs) + 1 + i)
		if got := l.(map[string]any)["text"]; got != want {
			t.Fatalf("line %d: %v, want %s (the newest lines, in order)", i, got, want)
		}
	}
}

// TestMachineExec: create (a bare int), check, resize (seen by stty),
// listContainers, attach with raw text both ways, a later attach gets the
// whole output again, exactly, then onExecExit to every tunnel.
func TestMachineExec(t *testing.T) {
	c := startChe(t, cheapi.Options{MachineName: "dev"}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	other := connect(t, c.url("ws", "/connect")) // broadcasts reach it too

	if got := rc.call("listContainers", map[string]any{})["result"].([]any); len(got) != 1 || got[0].(map[string]any)["container"] != "dev" {
		t.Errorf("listContainers: %v", got)
	}
	if e := rc.call("create", map[string]any{"identifier": map[string]any{"machineName": "other"}, "cmd": []string{"sh"}})["error"]; e == nil {
		t.Errorf("create on another machine: no error")
	}
	r := rc.call("create", map[string]any{"identifier": map[string]any{"machineName": "dev"}, "cmd": []string{"/bin/sh", "-c", "stty size; read line; echo got:$line"}, "tty": true, "cols": 90, "rows": 30})
	idf, ok := r["result"].(float64)
	if !ok {
		t.Fatalf("create: %v", r)
	}
	id := int(idf)
	if got := rc.call("check", map[string]any{"id": id})["result"]; got != idf {
		t.Errorf("check: %v", got)
	}
	if got := rc.call("check", map[string]any{"id": 999})["error"]; !reflect.DeepEqual(got, map[string]any{"code": float64(-32602), "message": "Exec '999' was not found"}) {
		t.Errorf("check 999: %v", got)
	}
	at := dial(t, c.url("ws", "/attach/"+strconv.Itoa(id)))
	for !strings.Contains(at.text(), "30 90") {
		at.pull("stty size 30 90")
	}
	res := rc.call("resize", map[string]any{"id": id, "cols": 100, "rows": 40})["result"]
	if want := map[string]any{"id": idf, "text": fmt.Sprintf("Exec with id %d  was successfully resized", id)}; !reflect.DeepEqual(res, want) {
		t.Errorf("resize: %v", res)
	}
	if err := at.ws.WriteMessage(websocket.TextMessage, []byte("héllo\r")); err != nil {
		t.Fatal(err)
	}
	for !at.ended {
		at.pull("the exec's end")
	}
	if !strings.Contains(at.text(), "got:héllo") {
		t.Errorf("attach output: %q", at.text())
	}
	if last := at.got[len(at.got)-1]; last.Type != "close" || last.Code != 1000 || last.Data != "exit code 0" {
		t.Errorf("attach end: %+v", last)
	}
	for _, x := range []*rpcConn{rc, other} {
		ev := x.waitFor(map[string]any{"method": "onExecExit"})
		if p := ev["params"].(map[string]any); p["id"] != idf || p["code"] != float64(0) {
			t.Errorf("onExecExit: %v", ev)
		}
	}
	// A later attach: the exec's whole output again, then the close.
	again := dial(t, c.url("ws", "/attach/"+strconv.Itoa(id)))
	for !again.ended {
		again.pull("the replay")
	}
	if again.text() != at.text() {
		t.Errorf("replay %q, first attach %q", again.text(), at.text())
	}

	// The exec-agent lists only its own processes.
	if got := rc.call("process.getProcesses", map[string]any{"all": true})["result"]; !reflect.DeepEqual(got, []any{}) {
		t.Errorf("exec-agent's processes: %v, want none", got)
	}

	// A failing exec: onExecError with the status.
	r = rc.call("create", map[string]any{"cmd": []string{"sh", "-c", "exit 4"}, "type": "process"})
	ev := rc.waitFor(map[string]any{"method": "onExecError"})
	if p := ev["params"].(map[string]any); p["id"] != r["result"] || p["stack"] != "command terminated: exit code 4" {
		t.Errorf("onExecError: %v", ev)
	}
	if resp, _ := httpDo(t, "GET", c.url("http", "/attach/999"), ""); resp.StatusCode != 404 {
		t.Errorf("attach 999: %d", resp.StatusCode)
	}
}

// TestResolveCommand is che-machine-exec's command resolution.
func TestResolveCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd      []string
		typ, cwd string
		want     []string
	}{
		{[]string{"bash"}, "", "", []string{"bash", "-c", "bash"}},
		{[]string{"sh", "-c", "ls -la"}, "shell", "", []string{"sh", "-c", "ls -la"}},
		{[]string{"ls", "-la"}, "process", "/tmp", []string{"/bin/sh", "-c", "cd /tmp; ls -la"}},
		{nil, "process", "file:///projects", []string{"/bin/sh", "-c", "cd /projects; /bin/sh"}},
	} {
		if got := cheapi.ResolveCommand(tc.cmd, tc.typ, tc.cwd, "/bin/sh"); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q %q %q: %q, want %q", tc.cmd, tc.typ, tc.cwd, got, tc.want)
		}
	}
}

// TestShutdownClosesCheSockets: the agent's shutdown ends Che's sockets
// (1001) and waits for them; goleak (TestMain) checks nothing is left.
func TestShutdownClosesCheSockets(t *testing.T) {
	c := startChe(t, cheapi.Options{TerminalShell: "/bin/sh"}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	rc.call("process.start", map[string]any{"name": "s", "commandLine": "sleep 60"})
	term := dial(t, c.url("ws", "/pty"))
	// A client that never reads, its queue and socket full of events.
	deaf, resp, err := websocket.DefaultDialer.Dial(c.url("ws", "/connect"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer deaf.Close()
	deaf.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"name":"flood","commandLine":"seq 1 1000000"}}`))
	testutil.WaitFor(t, "the flood under way", func() bool {
		_, body := httpDo(t, "GET", c.urlQ("http", "/process/3/logs", "limit=1"), "")
		var ls []struct{ Text string }
		json.Unmarshal([]byte(body), &ls)
		n := 0
		if len(ls) == 1 {
			n, _ = strconv.Atoi(ls[0].Text)
		}
		return n >= 10000
	})
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); c.a.Shutdown(ctx, time.Second) }()
	for _, p := range []*player{rc.p, term} {
		for !p.ended {
			p.pull("the close at shutdown")
		}
		if last := p.got[len(p.got)-1]; last.Type != "close" || last.Code != 1001 {
			t.Errorf("at shutdown: %+v, want close 1001", last)
		}
	}
	testutil.Recv(t, "shutdown", done)
}

// TestSlowClientDisconnected: a JSON-RPC client that reads nothing while
// a process writes many lines holds the process back (the agent's flow
// control) for the agent's write timeout, then it is disconnected and the
// process goes on; its log is whole to the end. (The agent sends close
// 1008 "client too slow", which a client that reads nothing cannot
// receive.) The agent runs on the real clock with a short write timeout.
func TestSlowClientDisconnected(t *testing.T) {
	c := startChe(t, cheapi.Options{Queue: 16}, agent.Options{Clock: clock.Real, WriteTimeout: 300 * time.Millisecond})
	// A small receive buffer (no autotuning, which grows to tens of MB)
	// so that a modest flood fills the connection.
	small := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
		return serr
	}}
	d := websocket.Dialer{NetDialContext: small.DialContext}
	ws, resp, err := d.Dial(c.url("ws", "/connect"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	start := `{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"name":"flood","commandLine":"seq 1 100000"}}`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(start)); err != nil {
		t.Fatal(err)
	}
	// Nothing is read: the events (about 8 MB) fill the connection (4 MB
	// at most on the agent's side), then the queue.
	testutil.WaitFor(t, "the process to end", func() bool {
		_, body := httpDo(t, "GET", c.url("http", "/process/1"), "")
		return strings.Contains(body, `"alive":false`)
	})
	died := false
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			break
		}
		died = died || strings.Contains(string(b), "process_died")
	}
	if died {
		t.Errorf("the client that read nothing got every event: it was not disconnected")
	}
	_, body := httpDo(t, "GET", c.urlQ("http", "/process/1/logs", "limit=1"), "")
	if !strings.Contains(body, `"text":"100000"`) {
		t.Errorf("last log line: %s", body)
	}
}

// TestFastClientGetsEverything: a client that reads keeps up however
// fast the process writes: every line arrives as an event, in order.
func TestFastClientGetsEverything(t *testing.T) {
	c := startChe(t, cheapi.Options{Queue: 16}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	rc.call("process.start", map[string]any{"name": "flood", "commandLine": "seq 1 50000"})
	rc.waitFor(map[string]any{"method": "process_died"})
	n := 0
	for _, f := range rc.p.got {
		var m struct {
			Method string
			Params struct{ Text string }
		}
		if json.Unmarshal([]byte(f.Data), &m) == nil && m.Method == "process_stdout" {
			n++
			if m.Params.Text != strconv.Itoa(n) {
				t.Fatalf("event %d: %q", n, m.Params.Text)
			}
		}
	}
	if n != 50000 {
		t.Errorf("%d events, want 50000", n)
	}
}

// TestTerminalShellFails: a shell that cannot start closes the socket
// with 1011 and the reason, as Che's terminal-agent does.
func TestTerminalShellFails(t *testing.T) {
	c := startChe(t, cheapi.Options{TerminalShell: "/nonexistent/shell"}, agent.Options{})
	p := dial(t, c.url("ws", "/pty"))
	for !p.ended {
		p.pull("the close")
	}
	if last := p.got[len(p.got)-1]; last.Type != "close" || last.Code != 1011 || !strings.Contains(last.Data, "/nonexistent/shell") {
		t.Errorf("end %+v, want close 1011 naming the shell", last)
	}
}

// TestTerminalClientGoneHangsUp: when the client goes away without a
// word, the shell and the job it runs are hung up.
func TestTerminalClientGoneHangsUp(t *testing.T) {
	c := startChe(t, cheapi.Options{TerminalShell: "/bin/sh"}, agent.Options{})
	p := dial(t, c.url("ws", "/pty"))
	p.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"data","data":"sleep 300; echo never\r"}`))
	proc, ok := c.a.Lookup("1")
	if !ok {
		t.Fatal("no process 1")
	}
	for !strings.Contains(p.text(), "sleep 300") {
		p.pull("the command's echo")
	}
	p.ws.Close()
	testutil.Recv(t, "the shell's end", proc.Done())
	if info := proc.Info(); info.ExitedAt == nil {
		t.Errorf("shell still running: %+v", info)
	}
}

// TestMessageTooBig: a message over -max-message closes the socket with
// 1009.
func TestMessageTooBig(t *testing.T) {
	c := startChe(t, cheapi.Options{}, agent.Options{MaxMessageBytes: 1024})
	for _, path := range []string{"/connect", "/pty"} {
		p := dial(t, c.url("ws", path))
		p.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"data","data":"`+strings.Repeat("x", 2000)+`"}`))
		for !p.ended {
			p.pull("the close")
		}
		if last := p.got[len(p.got)-1]; last.Type != "close" || last.Code != 1009 {
			t.Errorf("%s: end %+v, want close 1009", path, last)
		}
	}
}

// TestGetLogsPaging ports the cases of Che's ws_service_test and
// rest_service_test for getLogs: limit, skip, from, till and their
// combinations, over JSON-RPC and REST alike.
func TestGetLogsPaging(t *testing.T) {
	c := startChe(t, cheapi.Options{}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	// Ten lines, each in its own read (the pauses are the command's).
	rc.call("process.start", map[string]any{"name": "ten", "commandLine": "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.02; done"})
	rc.waitFor(map[string]any{"method": "process_died"})
	type line struct {
		Kind       int
		Time, Text string
	}
	decode := func(v any) []line {
		b, _ := json.Marshal(v)
		var ls []line
		json.Unmarshal(b, &ls)
		return ls
	}
	full := decode(rc.call("process.getLogs", map[string]any{"pid": 1})["result"])
	if len(full) != 10 {
		t.Fatalf("full log: %v", full)
	}
	texts := func(ls []line) string {
		var s []string
		for _, l := range ls {
			s = append(s, l.Text)
		}
		return strings.Join(s, ",")
	}
	// from keeps the lines at or after it, till those at or before.
	ts := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	between := func(from, till string) string {
		var s []string
		for _, l := range full {
			if (from == "" || !ts(l.Time).Before(ts(from))) && (till == "" || !ts(l.Time).After(ts(till))) {
				s = append(s, l.Text)
			}
		}
		return strings.Join(s, ",")
	}
	last := func(s string, limit, skip int) string {
		all := strings.Split(s, ",")
		hi := max(len(all)-skip, 0)
		return strings.Join(all[max(hi-limit, 0):hi], ",")
	}
	for _, tc := range []struct {
		name        string
		limit, skip int
		from, till  string
		want        string
	}{
		{"all", 0, 0, "", "", "1,2,3,4,5,6,7,8,9,10"},
		{"limit 3", 3, 0, "", "", "8,9,10"},
		{"limit 3 skip 2", 3, 2, "", "", "6,7,8"},
		{"skip 8", 0, 8, "", "", "1,2"},
		{"skip past the end", 0, 20, "", "", ""},
		{"from line 4", 0, 0, full[3].Time, "", between(full[3].Time, "")},
		{"till line 5", 0, 0, "", full[4].Time, between("", full[4].Time)},
		{"from 3 till 6, limit 2", 2, 0, full[2].Time, full[5].Time, last(between(full[2].Time, full[5].Time), 2, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]any{"pid": 1, "limit": tc.limit, "skip": tc.skip, "from": tc.from, "till": tc.till}
			if got := texts(decode(rc.call("process.getLogs", params)["result"])); got != tc.want {
				t.Errorf("JSON-RPC: %q, want %q", got, tc.want)
			}
			q := url.Values{}
			if tc.limit > 0 {
				q.Set("limit", strconv.Itoa(tc.limit))
			}
			q.Set("skip", strconv.Itoa(tc.skip))
			if tc.from != "" {
				q.Set("from", tc.from)
			}
			if tc.till != "" {
				q.Set("till", tc.till)
			}
			_, body := httpDo(t, "GET", c.urlQ("http", "/process/1/logs", q.Encode()), "")
			var ls []line
			if err := json.Unmarshal([]byte(body), &ls); err != nil {
				t.Fatalf("REST: %q: %v", body, err)
			}
			if got := texts(ls); got != tc.want {
				t.Errorf("REST: %q, want %q", got, tc.want)
			}
		})
	}
}

// TestConcurrentClients: several exec-agent clients at once start,
// subscribe to each other's processes, page logs, kill and vanish
// mid-stream; the race detector and goleak (TestMain) watch.
func TestConcurrentClients(t *testing.T) {
	c := startChe(t, cheapi.Options{}, agent.Options{})
	const clients = 6
	done := make(chan error, clients)
	for i := range clients {
		go func() {
			ws, resp, err := websocket.DefaultDialer.Dial(c.url("ws", "/connect"), nil)
			if err != nil {
				done <- err
				return
			}
			resp.Body.Close()
			defer ws.Close()
			send := func(id int, method string, params any) {
				b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
				ws.WriteMessage(websocket.TextMessage, b)
			}
			send(1, "process.start", map[string]any{"name": "n", "commandLine": "seq 1 2000; sleep 0.2; seq 1 100 >&2"})
			for pid := 1; pid <= clients; pid++ {
				send(10+pid, "process.subscribe", map[string]any{"pid": pid, "eventTypes": "stdout,stderr,process_status", "after": "2000-01-01T00:00:00Z"})
				send(20+pid, "process.getLogs", map[string]any{"pid": pid, "limit": 10, "skip": 3})
			}
			if i%2 == 0 {
				send(30, "process.kill", map[string]any{"pid": i + 1})
				return // gone without a close frame, mid-stream
			}
			ws.SetReadDeadline(time.Now().Add(testutil.Wait))
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					done <- err
					return
				}
				if strings.Contains(string(b), `"id":26`) {
					break
				}
			}
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
			done <- nil
		}()
	}
	for range clients / 2 {
		if err := testutil.Recv(t, "a client", done); err != nil {
			t.Error(err)
		}
	}
	testutil.WaitFor(t, "every process to end", func() bool {
		_, body := httpDo(t, "GET", c.url("http", "/process"), "")
		return body == "[]\n"
	})
}

// TestSubscribeDeadProcess: subscribing to a dead process without
// "after" is 102; unsubscribing from an unknown one is 101.
func TestSubscribeDeadProcess(t *testing.T) {
	c := startChe(t, cheapi.Options{}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	rc.call("process.start", map[string]any{"name": "t", "commandLine": "true"})
	rc.waitFor(map[string]any{"method": "process_died"})
	want := map[string]any{"code": float64(102), "message": "Process with id '1' is not alive"}
	if got := rc.call("process.subscribe", map[string]any{"pid": 1, "eventTypes": "stdout"})["error"]; !reflect.DeepEqual(got, want) {
		t.Errorf("subscribe to a dead process: %v", got)
	}
	want = map[string]any{"code": float64(101), "message": "Process with id '7' does not exist"}
	if got := rc.call("process.unsubscribe", map[string]any{"pid": 7})["error"]; !reflect.DeepEqual(got, want) {
		t.Errorf("unsubscribe from an unknown process: %v", got)
	}
}

// TestLineSplitting: as Che's process tests: empty lines are lines, "\r"
// is kept, a last line without "\n" is one; and porthole's bound: a run
// longer than the line limit is cut into lines of the limit.
func TestLineSplitting(t *testing.T) {
	c := startChe(t, cheapi.Options{LogLine: 1000}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	rc.call("process.start", map[string]any{"name": "l", "commandLine": `printf 'a\n\n\nb\r\n'; head -c 2500 /dev/zero | tr '\0' x; printf '\nend'`})
	rc.waitFor(map[string]any{"method": "process_died"})
	var got []string
	for _, f := range rc.p.got {
		var m struct {
			Method string
			Params struct{ Text string }
		}
		if json.Unmarshal([]byte(f.Data), &m) == nil && m.Method == "process_stdout" {
			got = append(got, m.Params.Text)
		}
	}
	x := strings.Repeat("x", 1000)
	want := []string{"a", "", "", "b\r", x, x, x[:500], "end"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
}

// TestMachineExecPipes: an exec without a terminal sends stdout and
// stderr to the attach socket, and reads its stdin from it.
func TestMachineExecPipes(t *testing.T) {
	c := startChe(t, cheapi.Options{}, agent.Options{})
	rc := connect(t, c.url("ws", "/connect"))
	r := rc.call("create", map[string]any{"cmd": []string{"sh", "-c", "read x; echo out:$x; echo err:$x >&2; exit 2"}, "type": "process"})
	id, ok := r["result"].(float64)
	if !ok {
		t.Fatalf("create: %v", r)
	}
	at := dial(t, c.url("ws", "/attach/"+strconv.Itoa(int(id))))
	at.ws.WriteMessage(websocket.TextMessage, []byte("piped\n"))
	for !at.ended {
		at.pull("the end")
	}
	if !strings.Contains(at.text(), "out:piped\n") || !strings.Contains(at.text(), "err:piped\n") {
		t.Errorf("output %q", at.text())
	}
	if last := at.got[len(at.got)-1]; last.Type != "close" || last.Code != 1000 || last.Data != "exit code 2" {
		t.Errorf("end %+v", last)
	}
}
