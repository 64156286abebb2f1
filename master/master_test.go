package master_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// A real bootstrapper reaches RUNNING, another FAILED; a subscriber sees
// both live, GET /api/runtimes has the contract's shape, internal servers
// are hidden from clients and shown to the machine's own token, and a
// client that subscribes late replays how the failure happened.
func TestRunningAndFailing(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	client := tm.clientToken(t)
	const rid = "ws1:env:owner"
	live := subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: "*"})

	port := freePort(t)
	okBoot := bootstrap(t, tm.WS, tm.machineToken(t, rid, "web"), rid, "web", serverConfig(t, port))
	// One endpoint for both (as Che's Kubernetes infrastructure runs it):
	// one connection, so the journal's order is exactly the bootstrapper's.
	failBoot := bootstrap(t, tm.WS, tm.machineToken(t, rid, "broken"), rid, "broken", config(t, failingConfig),
		"-push-logs-endpoint", tm.WS+"/api/websocket")
	failure := che.ErrExitCode("org.demo.failing", 1).Error()

	live.until(t, "web RUNNING and broken FAILED", func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
		w, b := ms[rid+"/web"], ms[rid+"/broken"]
		return w != nil && w.Status == masterapi.MachineRunning && b != nil && b.Status == masterapi.MachineFailed
	})
	<-failBoot.done
	if failBoot.code != 1 {
		t.Errorf("failing bootstrapper exit %d, want 1", failBoot.code)
	}

	// The contract: id, machines[name, status, installers[id, status, error], servers].
	var raw []map[string]any
	if st, body := get(t, tm.URL+"/api/runtimes", client, &raw); st != 200 {
		t.Fatalf("GET /api/runtimes: %d %s", st, body)
	}
	var rts []masterapi.Runtime
	b, _ := json.Marshal(raw)
	json.Unmarshal(b, &rts)
	if len(rts) != 1 || rts[0].ID != rid || len(rts[0].Machines) != 2 {
		t.Fatalf("runtimes = %s", b)
	}
	for _, key := range []string{"id", "machines"} {
		if _, ok := raw[0][key]; !ok {
			t.Errorf("runtime without %q: %s", key, b)
		}
	}
	broken, web := rts[0].Machines[0], rts[0].Machines[1]
	if broken.Name != "broken" || broken.Status != masterapi.MachineFailed || broken.Error != failure {
		t.Errorf("broken = %+v", broken)
	}
	if want := []masterapi.Installer{{ID: "org.demo.failing", Status: che.StatusFailed, Error: failure}}; !slices.Equal(broken.Installers, want) {
		t.Errorf("broken installers = %+v, want %+v", broken.Installers, want)
	}
	if web.Status != masterapi.MachineRunning || len(web.Installers) != 1 || web.Installers[0].Status != che.StatusRunning {
		t.Errorf("web = %+v", web)
	}
	// The client sees the public server only, RUNNING, with its URL.
	wantURL := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	if len(web.Servers) != 1 || web.Servers[0].Name != "web" || web.Servers[0].Status != masterapi.ServerRunning || web.Servers[0].URL != wantURL {
		t.Errorf("web servers seen by a client = %+v, want only web RUNNING at %s", web.Servers, wantURL)
	}
	// The machine's own token sees the internal one too.
	var own masterapi.Runtime
	if st, body := get(t, tm.URL+"/api/runtimes/"+rid, tm.machineToken(t, rid, "web"), &own); st != 200 {
		t.Fatalf("GET runtime with a machine token: %d %s", st, body)
	}
	if n := len(own.Machines[1].Servers); n != 2 {
		t.Errorf("the machine's token sees %d servers, want 2 (internal included)", n)
	}
	// ... and no other runtime.
	if st, _ := get(t, tm.URL+"/api/runtimes/other:env:owner", tm.machineToken(t, rid, "web"), nil); st != 403 {
		t.Errorf("a machine token reading another runtime: %d, want 403", st)
	}

	// A late subscriber replays the failure, event by event.
	late := subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: rid, All: true})
	want := []string{"bootstrapper " + che.StatusStarting, "installer org.demo.failing " + che.StatusStarting, "log " + che.StreamStdout + " 1", "log " + che.StreamStderr + " error",
		"installer org.demo.failing " + che.StatusFailed + " " + failure, "bootstrapper " + che.StatusFailed + " " + failure}
	late.until(t, "the failure replayed", func(_ map[string]*masterapi.Machine, es map[string][]masterapi.Entry) bool {
		return len(es[rid+"/broken"]) >= len(want)
	})
	late.mu.Lock()
	got := render(late.entries[rid+"/broken"])
	late.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("replayed:\n%q\nwant\n%q", got, want)
	}
	// The same through the HTTP API, with sequence numbers 1, 2, ...
	es := logs(t, tm, client, rid, "broken")
	if !slices.Equal(render(es), want) {
		t.Errorf("GET logs: %q", render(es))
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Errorf("entry %d has seq %d", i, e.Seq)
		}
	}
	okBoot.cmd.Process.Kill()
}

func render(es []masterapi.Entry) []string {
	var out []string
	for _, e := range es {
		switch e.Type {
		case masterapi.EntryLog:
			out = append(out, "log "+e.Stream+" "+e.Text)
		case masterapi.EntryInstaller:
			s := "installer " + e.Installer + " " + e.Status
			if e.Error != "" {
				s += " " + e.Error
			}
			out = append(out, s)
		default:
			s := e.Type + " " + e.Status
			if e.Error != "" {
				s += " " + e.Error
			}
			out = append(out, s)
		}
	}
	return out
}
