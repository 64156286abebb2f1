package master_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// Che's agents (porthole agent -che, docs/che-compatibility.md) through
// the master's agent proxy: the exec-agent's JSON-RPC and REST, and the
// terminal-agent, at .../machines/{name}/agent/{connect,process,pty},
// with the client's token checked by the master (a Che client's ?token=
// is refused there: the master takes no token in URLs).
func TestCheAgentsThroughMaster(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid = "w:e:o"
	client := tm.clientToken(t)
	sub := subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: rid})
	tokFile := filepath.Join(t.TempDir(), "machine.token")
	os.WriteFile(tokFile, []byte(tm.machineToken(t, rid, "dev")), 0o600)
	ag := exec.Command(porthole, "agent", "-listen", "none", "-che", "-che-shell", "/bin/sh", "-master", tm.WS,
		"-machine-token-file", tokFile, "-runtime-id", rid, "-machine-name", "dev")
	var agentOut testutil.SyncBuffer
	ag.Stderr = &agentOut
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { ag.Wait(); close(exited) }()
	t.Cleanup(func() {
		ag.Process.Signal(os.Interrupt)
		<-exited
		if t.Failed() {
			t.Logf("agent output:\n%s", agentOut.String())
		}
	})
	sub.until(t, "the agent connected", func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
		m := ms[rid+"/dev"]
		return m != nil && m.Agent.Connected
	})
	base := tm.WS + "/api/runtimes/" + rid + "/machines/dev/agent"
	auth := http.Header{"Authorization": {"Bearer " + client}}

	// exec-agent: hello, start, events, in Che's order.
	ws, resp, err := websocket.DefaultDialer.Dial(base+"/connect", auth)
	if err != nil {
		t.Fatalf("connect through the master: %v %v", err, resp)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(wait))
	read := func() map[string]any {
		t.Helper()
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}
	if m := read(); m["method"] != "connected" {
		t.Fatalf("hello: %v", m)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"name":"m","commandLine":"echo via-master"}}`))
	var methods []string
	for len(methods) == 0 || methods[len(methods)-1] != "process_died" {
		m := read()
		if m["id"] == float64(1) {
			methods = append(methods, "result")
		} else {
			methods = append(methods, m["method"].(string))
		}
	}
	if want := "result process_started process_stdout process_died"; strings.Join(methods, " ") != want {
		t.Errorf("events through the master: %q, want %q", methods, want)
	}

	// REST.
	st, body := get(t, tm.URL+"/api/runtimes/"+rid+"/machines/dev/agent/process/1/logs", client, nil)
	if st != 200 || !strings.Contains(body, `"text":"via-master"`) {
		t.Errorf("REST logs through the master: %d %s", st, body)
	}

	// terminal-agent.
	term, _, err := websocket.DefaultDialer.Dial(base+"/pty", auth)
	if err != nil {
		t.Fatalf("pty through the master: %v", err)
	}
	defer term.Close()
	term.SetReadDeadline(time.Now().Add(wait))
	term.WriteMessage(websocket.TextMessage, []byte(`{"type":"data","data":"echo pty-$((6*7))\r"}`))
	var out string
	for !strings.Contains(out, "pty-42") {
		_, b, err := term.ReadMessage()
		if err != nil {
			t.Fatalf("pty: %v; output %q", err, out)
		}
		out += string(b)
	}
	term.WriteMessage(websocket.TextMessage, []byte(`{"type":"close"}`))
	for {
		if _, _, err := term.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 1000 {
				t.Errorf("pty end: %v, want close 1000", err)
			}
			break
		}
	}

	// A Che client's ?token= (here the machine token) is the master's to
	// refuse.
	if _, resp, _ := websocket.DefaultDialer.Dial(base+"/connect?token="+tm.machineToken(t, rid, "dev"), nil); resp == nil || resp.StatusCode != 401 {
		t.Errorf("?token= through the master: %v, want 401", resp)
	}
}
