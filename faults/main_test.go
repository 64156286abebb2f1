//go:build faults

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/cli"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master/mastercli"
)

// The programs under test: by default the test binary re-executed
// (testutil.Programs), or, with $PORTHOLE_BIN set (make faults sets it
// to bin/), the release binaries that `make build` made.
var programs = testutil.Programs{
	"porthole":        func(argv []string) int { return cli.Main(argv[1:], os.Environ()) },
	"porthole-master": func(argv []string) int { return mastercli.Main(argv[1:], os.Stdout, os.Stderr) },
}

var porthole, masterBin string

// unavailable says why this machine cannot run the suite ("" when it
// can): it needs root, iproute2 with network namespaces, and iptables.
var unavailable string

func TestMain(m *testing.M) {
	dir := programs.Setup()
	porthole, masterBin = filepath.Join(dir, "porthole"), filepath.Join(dir, "porthole-master")
	if bin := os.Getenv("PORTHOLE_BIN"); bin != "" {
		porthole, masterBin = filepath.Join(bin, "porthole"), filepath.Join(bin, "porthole-master")
		for _, p := range []string{porthole, masterBin} {
			if _, err := os.Stat(p); err != nil {
				fmt.Fprintf(os.Stderr, "faults: PORTHOLE_BIN=%s: %v (run make build)\n", bin, err)
				testutil.Exit(2)
			}
		}
	}
	unavailable = checkHost()
	if unavailable == "" {
		removeStale()
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(testutil.Exit))
}

// checkHost returns why the suite cannot run here, or "".
func checkHost() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces, veth, iptables)"
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found (make faults installs iproute2 and iptables)"
		}
	}
	probe := nsPrefix + "probe"
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", probe).Run()
	if out, err := exec.Command("ip", "netns", "exec", probe, "iptables", "-w", "-A", "INPUT",
		"-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP").CombinedOutput(); err != nil {
		return fmt.Sprintf("iptables with the statistic match in a namespace: %v: %s", err, out)
	}
	return ""
}

// needHost skips t when the machine cannot run the suite, except under
// CI (CI set), where that is a failure: the suite must not pass by
// running nothing.
func needHost(t *testing.T) {
	t.Helper()
	switch {
	case unavailable == "":
	case os.Getenv("CI") != "":
		t.Fatalf("the fault-injection suite cannot run: %s", unavailable)
	default:
		t.Skipf("fault-injection suite skipped: %s", unavailable)
	}
}
