package bench

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
	runtimecopier "github.com/porthole-dev/porthole/runtime-copier"
)

// timeIt returns the median of n runs of f, in milliseconds, and logs it
// with the range of the runs under name.
func timeIt(b *testing.B, name string, n int, f func() error) float64 {
	b.Helper()
	var xs spread
	for range n {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		xs.add(float64(time.Since(start).Microseconds()) / 1000)
	}
	b.Logf("%s: %s ms, %d runs", name, xs.format("%.2f"), n)
	return xs.med()
}

// BenchmarkCopy: porthole copy, first run and idempotent run, in process
// and as a whole command, beside cp of the same file and the bare start of
// the binary.
func BenchmarkCopy(b *testing.B) {
	bin := porthole(b)
	const n = 7
	fresh := func() string {
		d, err := os.MkdirTemp(b.TempDir(), "vol")
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	var dir string
	first := timeIt(b, "copy, first run, in process", n, func() error {
		dir = fresh()
		_, err := runtimecopier.Copy(runtimecopier.Options{Dest: dir, Source: bin, Version: "bench"})
		return err
	})
	idem := timeIt(b, "copy, idempotent run, in process", n, func() error {
		r, err := runtimecopier.Copy(runtimecopier.Options{Dest: dir, Source: bin, Version: "bench"})
		if err == nil && r.Written {
			b.Fatal("idempotent copy wrote")
		}
		return err
	})
	cmdFirst := timeIt(b, "porthole copy, first run", n, func() error { return exec.Command(bin, "copy", "-to", fresh()).Run() })
	cmdDir := fresh()
	exec.Command(bin, "copy", "-to", cmdDir).Run()
	cmdIdem := timeIt(b, "porthole copy, idempotent run", n, func() error { return exec.Command(bin, "copy", "-to", cmdDir).Run() })
	cp := timeIt(b, "cp", n, func() error { return exec.Command("cp", bin, filepath.Join(fresh(), "x")).Run() })
	start := timeIt(b, "porthole version (bare start)", n, func() error { return exec.Command(bin, "version").Run() })
	report(b, map[string]float64{
		"first_ms": first, "idempotent_ms": idem,
		"cmd_first_ms": cmdFirst, "cmd_idempotent_ms": cmdIdem,
		"cp_cmd_ms": cp, "start_cmd_ms": start, "first_cp_ratio": cmdFirst / cp,
	})
	verdict(b, "copy first run (in process), ms", first, "<", 50)
	verdict(b, "copy idempotent run (in process), ms", idem, "<", 5)
	verdict(b, "porthole copy first run (whole command), ms", cmdFirst, "<", 50)
	verdict(b, "porthole copy idempotent run (whole command), ms", cmdIdem, "<", 5)
}

// readyTime starts bin with args on a free port and returns the time until
// the port accepts a connection; then it stops the server with SIGTERM.
func readyTime(b *testing.B, bin string, args ...string) func() error {
	return func() error {
		addr := testutil.FreeAddr(b)
		cmd := exec.Command(bin, append(args, "-listen", addr)...)
		cmd.Env = append(os.Environ(), "PORTHOLE_TOKEN="+token)
		if err := cmd.Start(); err != nil {
			return err
		}
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return nil
			}
			time.Sleep(100 * time.Microsecond)
		}
		b.Fatalf("%s %q never accepted connections", bin, args)
		return nil
	}
}

// BenchmarkEntrypointReady: from exec of porthole entrypoint (reaper, then
// worker) to the agent accepting connections, beside porthole agent (one
// process) and the bare start of the binary.
func BenchmarkEntrypointReady(b *testing.B) {
	bin := porthole(b)
	const n = 11
	entry := timeIt(b, "porthole entrypoint ready", n, readyTime(b, bin, "entrypoint"))
	agentOnly := timeIt(b, "porthole agent ready", n, readyTime(b, bin, "agent"))
	start := timeIt(b, "porthole version (bare start)", n, func() error { return exec.Command(bin, "version").Run() })
	report(b, map[string]float64{
		"entrypoint_ready_ms": entry, "agent_ready_ms": agentOnly, "start_cmd_ms": start,
		"entrypoint_agent_ratio": entry / agentOnly,
	})
	verdict(b, "entrypoint ready, ms", entry, "<", 20)
}
