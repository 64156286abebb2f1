package entrypoint_test

import (
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/bootstrapper/bootstraptest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol/che"
)

// porthole entrypoint -bootstrap runs the bootstrapper beside the agent and
// the chained command. Outside a PID namespace the entrypoint is a child
// subreaper, and SIGTERM to it still reaches the chained command.
func TestEntrypointRunsBootstrapper(t *testing.T) {
	r := bootstraptest.Start(t, bootstraptest.Options{})
	cfg, err := filepath.Abs("../fixtures/bootstrapper/two-scripts.json")
	if err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	boot := fmt.Sprintf("-file %s -push-endpoint %s/api/websocket -runtime-id w:e:o -machine-name dev", cfg, r.URL)
	cmd := exec.Command(bin, "entrypoint", "-listen", addr, "-grace", "1s", "-bootstrap", boot, "--", "sleep", "1000")
	cmd.Env = testutil.CleanEnv("PORTHOLE_TOKEN=" + token)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	r.Wait(t, testutil.Wait, "bootstrapper DONE", bootstraptest.Has(che.MethodBootstrapperStatus, func(p bootstraptest.Params) bool {
		return p.Status == che.StatusDone && p.MachineName == "dev"
	}))
	testutil.WaitFor(t, "the agent", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
			t.Fatalf("entrypoint exit = %v; want 143 (sleep killed by the forwarded SIGTERM)\n%s", err, out.String())
		}
		exited <- nil
	case <-time.After(testutil.Wait):
		t.Fatalf("entrypoint did not exit within %s of SIGTERM\n%s", testutil.Wait, out.String())
	}
	if !strings.Contains(out.String(), "bootstrapper exited") {
		t.Fatalf("the bootstrapper was not stopped with the entrypoint:\n%s", out.String())
	}
}
