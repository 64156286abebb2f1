package master_test

import (
	"bytes"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// masterProc is porthole-master run as a process (so it can be killed).
type masterProc struct {
	cmd  *exec.Cmd
	out  testutil.SyncBuffer
	done chan struct{}
}

func runMaster(t *testing.T, dir, addr string) *masterProc {
	t.Helper()
	p := &masterProc{done: make(chan struct{})}
	p.cmd = exec.Command(masterBin, "-listen", addr, "-data", dir)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("master output:\n%s", p.out.String())
		}
	})
	return p
}

// The master killed with SIGKILL, twice, while a bootstrapper streams
// 30,000 lines, then restarted on the same data: every line is stored
// exactly once, in order, and the statuses are all there.
func TestSIGKILLLosesNothing(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tokens := func(args ...string) string {
		out, err := exec.Command(masterBin, append([]string{"token", "-init", "-data", dir}, args...)...).Output()
		if err != nil {
			t.Fatalf("token %q: %v", args, err)
		}
		return string(bytes.TrimSpace(out))
	}
	const rid, lines = "w:e:o", 30000
	mtok, client := tokens("-runtime-id", rid, "-machine-name", "m"), tokens("-client")
	mp := runMaster(t, dir, addr)
	url := "http://" + addr
	waitUp(t, url)
	// The script paces itself a little, and stops halfway until the test
	// opens its gate after the last kill, so that kills land mid-stream
	// however fast the bootstrapper reconnects.
	gate := filepath.Join(t.TempDir(), "gate")
	cfg := config(t, `[{"id":"org.lines","script":"i=1; while [ $i -le `+strconv.Itoa(lines)+` ]; do echo line-$i; [ $((i % 1000)) -eq 0 ] && sleep 0.05; if [ $i -eq `+strconv.Itoa(lines/2)+` ]; then while [ ! -e `+gate+` ]; do sleep 0.05; done; fi; i=$((i+1)); done"}]`)
	// The flush at the end gets the test's own bound: under load, with the
	// race detector, delivering the second half after the gate opens can
	// take longer than the default 10 s, and this test is about the kills.
	boot := bootstrap(t, "ws://"+addr, mtok, rid, "m", cfg, "-installer-timeout", "120", "-flush-timeout", "50s")
	tm := &testMaster{URL: url}
	for kill := 1; kill <= 2; kill++ {
		// Kill once some lines (more at the second kill) are stored.
		waitFor(t, fmt.Sprintf("kill %d", kill), func() bool {
			var page struct {
				Next uint64 `json:"next"`
			}
			st, _ := getQuiet(url+"/api/runtimes/"+rid+"/machines/m/logs?limit=1&after="+strconv.Itoa(kill*3000), client, &page)
			return st == 200 && page.Next > 0
		})
		select {
		case <-boot.done:
			t.Fatalf("the bootstrapper ended before kill %d: the test would prove nothing", kill)
		default:
		}
		mp.cmd.Process.Kill()
		<-mp.done
		mp = runMaster(t, dir, addr)
		waitUp(t, url)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-boot.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the bootstrapper did not finish")
	}
	if boot.code != 0 {
		t.Fatalf("bootstrapper exit %d", boot.code)
	}
	es := logs(t, tm, client, rid, "m")
	var got []string
	for _, e := range es {
		if e.Type == masterapi.EntryLog {
			got = append(got, e.Text)
		}
	}
	if len(got) != lines {
		t.Errorf("%d lines stored, want %d", len(got), lines)
	}
	for i, l := range got {
		if want := "line-" + strconv.Itoa(i+1); l != want {
			t.Fatalf("line %d is %q, want %q", i, l, want)
		}
	}
	want := []string{"bootstrapper " + che.StatusStarting, "installer org.lines " + che.StatusStarting, "installer org.lines " + che.StatusDone, "bootstrapper " + che.StatusDone}
	var statuses []string
	for _, s := range render(es) {
		if s[:4] != "log " {
			statuses = append(statuses, s)
		}
	}
	if fmt.Sprint(statuses) != fmt.Sprint(want) {
		t.Errorf("statuses %q, want %q", statuses, want)
	}
}

func getQuiet(url, token string, v any) (int, error) {
	req, _ := newGet(url, token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 && v != nil {
		return 200, jsonDecode(resp.Body, v)
	}
	return resp.StatusCode, nil
}

func waitUp(t *testing.T, url string) {
	t.Helper()
	waitFor(t, "the master up", func() bool {
		st, _ := getQuiet(url+"/healthz", "", nil)
		return st == 200
	})
}

var waitFor = testutil.WaitFor
