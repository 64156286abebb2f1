package master_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// viaCount is porthole_master_agent_connections_total{via}.
func viaCount(t *testing.T, tm *testMaster, client, via string) float64 {
	t.Helper()
	v, _ := value(scrape(t, tm.URL+"/metrics", client), "porthole_master_agent_connections_total", "via", via)
	return v
}

// execThrough runs `porthole exec` through the master's proxy to machine
// name of rid and checks its output and exit code.
func execThrough(t *testing.T, tm *testMaster, client, rid, name string) {
	t.Helper()
	url := tm.WS + "/api/runtimes/" + rid + "/machines/" + name + "/agent"
	cmd := exec.Command(porthole, "exec", "-url", url, "--", "sh", "-c", "echo through-the-master; exit 7")
	cmd.Env = testutil.CleanEnv("PORTHOLE_TOKEN=" + client)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 7 || out.String() != "through-the-master\n" {
		t.Fatalf("porthole exec through the master: exit %d (%v), stdout %q, stderr %q", code, err, out.String(), errOut.String())
	}
}

// waitAgent waits for machine name of rid to have its agent connected.
func waitAgent(t *testing.T, tm *testMaster, client, rid, name string) {
	t.Helper()
	testutil.WaitFor(t, "the agent of "+name+" connected", func() bool {
		var m masterapi.Machine
		st, _ := get(t, tm.URL+"/api/runtimes/"+rid+"/machines/"+name, client, &m)
		return st == http.StatusOK && m.Agent.Connected
	})
}

// With a real agent, the sockets the master proxies go over data
// connections the agent dials back; the metric says so.
func TestAgentDataConnections(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid = "w:e:o"
	client := tm.clientToken(t)
	tunnelAgent(t, tm, rid, "dev")
	waitAgent(t, tm, client, rid, "dev")
	execThrough(t, tm, client, rid, "dev")
	if d, s := viaCount(t, tm, client, "data"), viaCount(t, tm, client, "stream"); d < 2 || s != 0 {
		t.Fatalf("agent connections: %v over data connections, %v over streams; want every one (at least 2) over data connections", d, s)
	}
}

// A master with -dial-back-timeout negative proxies through the tunnel's
// streams, as with an agent older than data connections.
func TestAgentDataConnectionsOff(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.DialBackTimeout = -1 })
	const rid = "w:e:o"
	client := tm.clientToken(t)
	tunnelAgent(t, tm, rid, "dev")
	waitAgent(t, tm, client, rid, "dev")
	execThrough(t, tm, client, rid, "dev")
	if d, s := viaCount(t, tm, client, "data"), viaCount(t, tm, client, "stream"); d != 0 || s < 2 {
		t.Fatalf("agent connections: %v over data connections, %v over streams; want every one over streams", d, s)
	}
}

// dataHandshake sends an agent's data handshake for id with token and
// returns the master's answer.
func dataHandshake(t *testing.T, tm *testMaster, token, id string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", tm.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodGet, tm.URL+"/api/agent", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", tunnel.UpgradeData)
	req.Header.Set(tunnel.HeaderDialID, id)
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
	return resp.StatusCode, string(b)
}

// Data handshakes the master did not ask for are refused, with the
// reason, and counted as refusals: an unknown id, one presented by
// another machine, a machine without a tunnel, a bad token.
func TestAgentDataHandshakeRefused(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid = "w:e:o"
	client := tm.clientToken(t)
	tunnelAgent(t, tm, rid, "dev")
	tunnelAgent(t, tm, rid, "other")
	waitAgent(t, tm, client, rid, "dev")
	waitAgent(t, tm, client, rid, "other")
	refused := func() float64 {
		var n float64
		for _, st := range []string{"401", "403", "409"} {
			v, _ := value(scrape(t, tm.URL+"/metrics", client), "porthole_master_requests_refused_total", "status", st)
			n += v
		}
		return n
	}
	before := refused()
	cases := []struct {
		name   string
		token  string
		status int
		reason string
	}{
		{"unknown id", tm.machineToken(t, rid, "dev"), http.StatusForbidden, "did not ask for it (unknown id)"},
		{"another machine's token", tm.machineToken(t, rid, "other"), http.StatusForbidden, "unknown id"},
		{"machine without a tunnel", tm.machineToken(t, rid, "ghost"), http.StatusConflict, "has no agent tunnel"},
		{"a client token", client, http.StatusForbidden, "machine token"},
		{"bad token", "not-a-token", http.StatusUnauthorized, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body := dataHandshake(t, tm, tc.token, "AAAAAAAAAAAAAAAAAAAAAAAAAA")
			if st != tc.status || !strings.Contains(body, tc.reason) {
				t.Fatalf("%d %s; want %d naming %q", st, body, tc.status, tc.reason)
			}
		})
	}
	if got := refused() - before; got != float64(len(cases)) {
		t.Fatalf("%v refusals counted; want %d", got, len(cases))
	}
	// The agents still work over data connections.
	execThrough(t, tm, client, rid, "other")
	if d := viaCount(t, tm, client, "data"); d < 2 {
		t.Fatalf("%v connections over data connections after the refusals; want at least 2", d)
	}
}
