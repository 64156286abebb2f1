package proc

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// helperSigIgn, when set, makes the test binary a helper that starts
// `cat /proc/self/status` through Start and prints the child's SigIgn line
// (see TestChildrenGetDefaultSignals).
const helperSigIgn = "PORTHOLE_PROC_TEST_SIGIGN"

func init() {
	if os.Getenv(helperSigIgn) != "1" {
		return
	}
	own := sigIgn(mustRead("/proc/self/status"))
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	cmd, err := Start(Command{Argv: []string{"cat", "/proc/self/status"}, Stdout: w})
	if err != nil {
		panic(err)
	}
	w.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		b.WriteString(string(buf[:n]))
		if err != nil {
			break
		}
	}
	cmd.Wait()
	fmt.Printf("%x %x\n", own, sigIgn(b.String()))
	os.Exit(0)
}

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// sigIgn returns the SigIgn mask of a /proc/PID/status text.
func sigIgn(status string) uint64 {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				panic(err)
			}
			return m
		}
	}
	panic("no SigIgn line")
}

func bit(s syscall.Signal) uint64 { return 1 << (uint(s) - 1) }

// A porthole started with signals ignored (nohup, `porthole agent &` from a
// script) must not hand that on: the children of Start get the default
// disposition of every signal in childDefaults.
func TestChildrenGetDefaultSignals(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// sh's trap "" ignores the signals, and exec keeps them ignored.
	cmd := exec.Command("sh", "-c", `trap "" HUP INT QUIT TERM PIPE USR1 USR2; exec "$0" -test.run=^$`, self)
	cmd.Env = append(os.Environ(), helperSigIgn+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var own, child uint64
	if _, err := fmt.Sscanf(string(out), "%x %x", &own, &child); err != nil {
		t.Fatalf("helper printed %q: %v", out, err)
	}
	// Go keeps an inherited SIG_IGN only for SIGHUP and SIGINT (it handles
	// the others, and so resets them in children by itself): those two
	// must still be ignored in the helper, or the test proves nothing.
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT} {
		if own&bit(sig) == 0 {
			t.Fatalf("the helper did not start with %v ignored (SigIgn %x): the test proves nothing", sig, own)
		}
	}
	for _, s := range childDefaults {
		sig := s.(syscall.Signal)
		if child&bit(sig) != 0 {
			t.Errorf("the child of Start ignores %v (SigIgn %x); want the default disposition", sig, child)
		}
	}
}
