package master_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// The audit trail: every proxied request and every ticket, with who
// (the token's name), from where, what and on which machine; the agent
// logs the actions it performs with the principal the master passed
// (never one a client sends itself); GET /api/audit filters and pages.
func TestAuditTrail(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid = "w:e:o"
	alice := tm.issue(t, master.IssueOptions{Kind: master.KindClient, Name: "alice", TTL: time.Hour})
	_, _, agentLog := tunnelAgent(t, tm, rid, "dev")
	agentURL := tm.URL + "/api/runtimes/" + rid + "/machines/dev/agent"

	// The agent's HTTP JSON-RPC endpoint, through the master; a forged
	// principal header is replaced by the master's.
	post := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", agentURL+"/v1/rpc", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(protocol.HeaderPrincipal, "mallory")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	testutil.WaitFor(t, "the agent through the master", func() bool {
		st, _ := post(`{"jsonrpc":"2.0","id":1,"method":"process.list"}`)
		return st == 200
	})
	if st, body := post(`{"jsonrpc":"2.0","id":2,"method":"process.start","params":{"argv":["echo","audited"]}}`); st != 200 || !strings.Contains(body, `"id"`) {
		t.Fatalf("process.start through the master: %d %s", st, body)
	}
	// porthole exec: a control socket and an attach socket.
	cmd := exec.Command(porthole, "exec", "-url", strings.Replace(agentURL, "http", "ws", 1), "--", "true")
	cmd.Env = testutil.CleanEnv("PORTHOLE_TOKEN=" + alice)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("exec: %v %s", err, out)
	}

	var page masterapi.AuditPage
	if st, body := get(t, tm.URL+"/api/audit?principal=alice&action=process.start", alice, &page); st != 200 {
		t.Fatalf("GET /api/audit: %d %s", st, body)
	}
	if len(page.Entries) != 1 {
		t.Fatalf("process.start records: %+v", page.Entries)
	}
	e := page.Entries[0]
	if e.Principal != "alice" || e.Runtime != rid || e.Machine != "dev" || fmt.Sprint(e.Argv) != "[echo audited]" || e.Remote == "" || e.TokenID == "" || e.Time.IsZero() {
		t.Errorf("record %+v", e)
	}
	var all masterapi.AuditPage
	get(t, tm.URL+"/api/audit?principal=alice", alice, &all)
	actions := map[string]int{}
	for _, e := range all.Entries {
		actions[e.Action]++
	}
	if actions["rpc"] < 1 || actions["attach"] != 1 || actions["process.list"] < 1 {
		t.Errorf("actions %v; want the exec's rpc and attach, and the list", actions)
	}
	// Paging: one at a time, in order, to the end.
	var seqs []uint64
	for after := uint64(0); ; {
		var p masterapi.AuditPage
		get(t, fmt.Sprintf("%s/api/audit?limit=1&after=%d", tm.URL, after), alice, &p)
		if len(p.Entries) == 0 {
			break
		}
		seqs = append(seqs, p.Entries[0].Seq)
		after = p.Next
	}
	if len(seqs) != len(all.Entries) {
		t.Errorf("paged %d records, %d in one page", len(seqs), len(all.Entries))
	}
	if st, _ := get(t, tm.URL+"/api/audit?limit=0", alice, nil); st != 400 {
		t.Errorf("limit=0: %d; want 400", st)
	}
	// The agent's own lines: the principal the master passed, not the forged one.
	testutil.WaitFor(t, "the agent's audit line", func() bool {
		return strings.Contains(agentLog.String(), `msg=audit principal=alice`) || strings.Contains(agentLog.String(), "principal=alice")
	})
	log := agentLog.String()
	if strings.Contains(log, "mallory") {
		t.Errorf("the agent believed a forged principal:\n%s", log)
	}
	var started bool
	for l := range strings.Lines(log) {
		if strings.Contains(l, "msg=audit") && strings.Contains(l, "action=process.start") && strings.Contains(l, "principal=alice") && strings.Contains(l, "argv=\"[echo audited]\"") {
			started = true
		}
	}
	if !started {
		t.Errorf("no agent audit line for the start with alice and its argv:\n%s", log)
	}
}
