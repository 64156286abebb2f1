//go:build engine

package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestArm64 runs the arm64 binary from make cross under qemu-user: its
// version, a copy, and an agent (emulated) serving a terminal to the
// native client through a real PTY.
func TestArm64(t *testing.T) {
	bin := need(t, "bin/porthole-linux-arm64")
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static is not installed (Debian's qemu-user-static): %v", err)
	}
	if out, _ := exec.Command("file", "-b", bin).Output(); len(out) > 0 && !strings.Contains(string(out), "ARM aarch64") {
		t.Fatalf("%s is not an arm64 binary: %s", bin, out)
	}

	out, errOut, code := run(nil, "", qemu, bin, "version")
	if code != 0 || !strings.HasPrefix(out, "porthole ") || !strings.Contains(out, "(protocol ") {
		t.Fatalf("porthole version under qemu: exit %d, %q %q", code, out, errOut)
	}

	dir := t.TempDir()
	start := time.Now()
	out, errOut, code = run(nil, "", qemu, bin, "copy", "-to", dir)
	if code != 0 || !strings.HasPrefix(out, "copied porthole") {
		t.Fatalf("porthole copy under qemu: exit %d, %q %q", code, out, errOut)
	}
	figure("arm64 copy under qemu: %d ms", time.Since(start).Milliseconds())
	if got, want := sha256File(t, filepath.Join(dir, "porthole")), sha256File(t, bin); got != want {
		t.Errorf("the copy has sha256 %s, the arm64 binary %s", got, want)
	}
	var m struct {
		Arch   string `json:"arch"`
		Binary struct{ SHA256 string }
	}
	data, err := os.ReadFile(filepath.Join(dir, "porthole.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil || m.Arch != "arm64" || m.Binary.SHA256 != sha256File(t, bin) {
		t.Errorf("manifest %s: want arch arm64 and the binary's sha256 (%v)", data, err)
	}

	// An emulated agent on a free loopback port, the native client.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	token := randHex(16)
	agent := exec.Command(qemu, bin, "agent", "-listen", addr)
	agent.Env = append(os.Environ(), "PORTHOLE_TOKEN="+token)
	var log strings.Builder
	agent.Stdout, agent.Stderr = &log, &log
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	t.Cleanup(func() {
		agent.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("the emulated agent exited with %v after SIGTERM\n%s", err, log.String())
			}
		case <-time.After(wait):
			agent.Process.Kill()
			t.Errorf("the emulated agent did not stop on SIGTERM")
		}
	})
	hc := &http.Client{Timeout: time.Second}
	ready := waitFor(t, wait, "the emulated agent's /healthz", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("the emulated agent exited: %v\n%s", err, log.String())
		default:
		}
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	figure("arm64 agent under qemu: ready in %d ms", ready.Milliseconds())

	t.Run("exit code", func(t *testing.T) {
		out, errOut, code := run([]string{"PORTHOLE_TOKEN=" + token}, "", filepath.Join(root, "bin/porthole"), "exec", "-url", "ws://"+addr, "--", "sh", "-c", "echo hi; exit 4")
		if code != 4 || out != "hi\n" {
			t.Errorf("exec through the emulated agent: exit %d, %q %q; want 4, hi", code, out, errOut)
		}
	})
	t.Run("terminal", func(t *testing.T) {
		terminalWith(t, filepath.Join(root, "bin/porthole"), []string{"PORTHOLE_TOKEN=" + token}, "ws://"+addr, "sh")
	})
}
