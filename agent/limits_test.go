package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/protocol"
)

// serveWithLimits serves a new agent on a loopback listener with short
// timeouts, and shuts it down at cleanup.
func serveWithLimits(t *testing.T, timeout time.Duration) string {
	t.Helper()
	a, err := agent.New(agent.Options{Token: token, WriteTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- a.Serve(ctx, agent.ServeOptions{Listener: ln, Grace: 100 * time.Millisecond,
			HeaderTimeout: timeout, ReadTimeout: timeout, IdleTimeout: timeout})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func post(t *testing.T, addr, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/rpc", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s = %d %s", body, resp.StatusCode, b)
	}
	return string(b)
}

// TestServerTimeouts (issue 11, M2): with header, read, write and idle
// timeouts of 500 ms, a silent connection and an idle kept-alive one are
// closed, while a process.wait over HTTP that lasts longer than all of
// them, and a WebSocket quiet for longer, are still served.
func TestServerTimeouts(t *testing.T) {
	const timeout = 500 * time.Millisecond
	addr := serveWithLimits(t, timeout)
	closedWithin := func(c net.Conn, what string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: still open after 10 s", what)
		}
	}
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	closedWithin(silent, "a connection that sends nothing")

	// A process that outlives every timeout, waited for over HTTP.
	var start struct{ Result protocol.ProcessInfo }
	if err := json.Unmarshal([]byte(post(t, addr, `{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"argv":["sleep","2"]}}`)), &start); err != nil {
		t.Fatal(err)
	}
	if got := post(t, addr, `{"jsonrpc":"2.0","id":2,"method":"process.wait","params":{"id":"`+start.Result.ID+`"}}`); !strings.Contains(got, `"exitCode":0`) {
		t.Errorf("process.wait over HTTP = %s", got)
	}

	// A WebSocket quiet for three timeouts still answers.
	h := http.Header{"Authorization": {"Bearer " + token}}
	d := websocket.Dialer{Subprotocols: []string{protocol.SubprotocolRPC}}
	ws, resp, err := d.Dial("ws://"+addr+"/v1/rpc", h)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	timer := time.NewTimer(3 * timeout)
	<-timer.C
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for { // agent.hello comes first
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("WebSocket after %s quiet: %v", 3*timeout, err)
		}
		if strings.Contains(string(msg), `"result"`) {
			break
		}
	}

	// A kept-alive connection left idle is closed.
	kept, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	io.WriteString(kept, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	closedWithin(kept, "an idle kept-alive connection")
}
