package master_test

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// A real agent connects out to the master; `porthole exec` through the
// master's proxy runs a command with its output and exit code; the
// machine shows the agent connected, then disconnected when it stops.
func TestAgentThroughMaster(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid = "w:e:o"
	client := tm.clientToken(t)
	sub := subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: rid})
	ag, exited, _ := tunnelAgent(t, tm, rid, "dev")
	sub.until(t, "the agent connected", func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
		m := ms[rid+"/dev"]
		return m != nil && m.Agent.Connected && m.Agent.Via == "tunnel" && m.Agent.Protocol != ""
	})

	url := tm.WS + "/api/runtimes/" + rid + "/machines/dev/agent"
	cmd := exec.Command(porthole, "exec", "-url", url, "--", "sh", "-c", "echo through-the-master; echo err >&2; exit 7")
	cmd.Env = testutil.CleanEnv("PORTHOLE_TOKEN=" + client)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 7 || out.String() != "through-the-master\n" || errOut.String() != "err\n" {
		t.Errorf("porthole exec through the master: exit %d (%v), stdout %q, stderr %q", code, err, out.String(), errOut.String())
	}
	// Without a client token: refused by the master, not the agent.
	cmd = exec.Command(porthole, "exec", "-url", url, "--", "true")
	cmd.Env = testutil.CleanEnv("PORTHOLE_TOKEN=" + tm.machineToken(t, rid, "dev"))
	b, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(b), "403") {
		t.Errorf("exec with a machine token: exit %d, %s", cmd.ProcessState.ExitCode(), b)
	}
	// An agent announcing another machine than its token's is refused.
	h := http.Header{"Authorization": {"Bearer " + tm.machineToken(t, rid, "dev")}, master.HeaderMachineName: {"other"}}
	if _, resp, _ := websocket.DefaultDialer.Dial(tm.WS+"/api/agent", h); resp == nil || resp.StatusCode != 403 {
		t.Errorf("agent announcing another machine: %v, want 403", resp)
	}

	ag.Process.Signal(os.Interrupt)
	<-exited
	sub.until(t, "the agent disconnected", func(ms map[string]*masterapi.Machine, es map[string][]masterapi.Entry) bool {
		m := ms[rid+"/dev"]
		n := len(es[rid+"/dev"])
		return m != nil && !m.Agent.Connected && n >= 2 && es[rid+"/dev"][n-1].Status == masterapi.AgentDisconnected
	})
	if st, body := get(t, tm.URL+"/api/runtimes/"+rid+"/machines/dev/agent/v1/rpc", client, nil); st != http.StatusBadGateway || !strings.Contains(body, "not connected") {
		t.Errorf("proxy to a gone agent: %d %s", st, body)
	}
}
