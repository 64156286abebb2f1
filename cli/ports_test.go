package cli_test

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// `porthole ports` lists a listener; `porthole ports -w` sees one open
// and close.
func TestPorts(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	r := porthole(t, a, nil, "", "ports", "-url", a.url)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("\n%d ", port)) {
		t.Fatalf("ports: exit %d, %q %q; want %d listed", r.code, r.stdout, r.stderr, port)
	}

	cmd := exec.Command(bin, "ports", "-w", "-url", a.url)
	cmd.Env = append(baseEnv(), "PORTHOLE_TOKEN="+a.token)
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("ports -w after SIGINT: %v: %s", err, stderr.String())
		}
	}()
	until := func(want string) {
		t.Helper()
		deadline := time.After(testutil.Wait)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("ports -w ended before %q: %s", want, stderr.String())
				}
				if strings.Join(strings.Fields(l), " ") == want {
					return
				}
			case <-deadline:
				t.Fatalf("ports -w: no %q within %s", want, testutil.Wait)
			}
		}
	}
	until("PORT ADDRESS")
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p2 := ln2.Addr().(*net.TCPAddr).Port
	until(fmt.Sprintf("+ %d 127.0.0.1", p2))
	ln2.Close()
	until(fmt.Sprintf("- %d 127.0.0.1", p2))
}
