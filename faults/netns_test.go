//go:build faults

package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The link's addresses. They exist only inside the two namespaces of a
// link (each link has its own pair of namespaces, so links of parallel
// tests do not see each other), never on the host.
const (
	masterIP  = "10.213.0.1"
	machineIP = "10.213.0.2"
	prefixLen = "/30"
	veth      = "ph0" // the veth end's name, the same in both namespaces
	// masterPort is the master's port in its namespace.
	masterPort = 8080
)

// nsPrefix starts the name of every namespace this process makes; the
// pid makes it unique per run, so a later run can tell a dead run's
// leftovers (see removeStale).
var nsPrefix = fmt.Sprintf("phf%d-", os.Getpid())

var linkSeq atomic.Int64

// link is two network namespaces, the master's and the machines', joined
// by a veth pair: master 10.213.0.1/30, machines 10.213.0.2/30, loopback
// up in both. Faults are iptables rules in the machines' namespace, on
// its end of the pair: they cut or thin both directions between the
// machines and the master, and nothing else (each namespace's loopback
// is untouched).
type link struct {
	master, machines string // namespace names
}

// newLink makes a link for t; t's cleanup kills every process left in
// its namespaces and deletes them (which deletes the veth pair and the
// rules with them), even when t fails.
func newLink(t *testing.T) *link {
	t.Helper()
	n := linkSeq.Add(1)
	l := &link{master: fmt.Sprintf("%s%d-m", nsPrefix, n), machines: fmt.Sprintf("%s%d-h", nsPrefix, n)}
	t.Cleanup(l.remove)
	for _, ns := range []string{l.master, l.machines} {
		mustRun(t, "ip", "netns", "add", ns)
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	mustRun(t, "ip", "link", "add", veth, "netns", l.master, "type", "veth", "peer", "name", veth, "netns", l.machines)
	for ns, ip := range map[string]string{l.master: masterIP, l.machines: machineIP} {
		mustRun(t, "ip", "-n", ns, "addr", "add", ip+prefixLen, "dev", veth)
		mustRun(t, "ip", "-n", ns, "link", "set", veth, "up")
	}
	return l
}

// remove kills the processes still in the link's namespaces (orphaned
// installers, say) and deletes the namespaces.
func (l *link) remove() {
	for _, ns := range []string{l.master, l.machines} {
		killNS(ns)
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// killNS SIGKILLs every process in namespace ns: only ever the tests'
// own children, since nothing else runs in the namespaces they make.
func killNS(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// removeStale deletes the namespaces of earlier runs of this suite whose
// process is gone (a run killed before its cleanups).
func removeStale() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, "phf")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			killNS(name)
			exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// rule adds (op "-A") or deletes ("-D") an iptables rule in the machines'
// namespace, on both directions of its end of the link: INPUT -i ph0 and
// OUTPUT -o ph0, each with match (e.g. "-j DROP").
func (l *link) rule(t *testing.T, op string, match ...string) {
	t.Helper()
	for _, dir := range [][]string{{"INPUT", "-i"}, {"OUTPUT", "-o"}} {
		args := append([]string{"netns", "exec", l.machines, "iptables", "-w", op, dir[0], dir[1], veth}, match...)
		mustRun(t, "ip", args...)
	}
}

// partition drops every packet between the machines and the master, in
// both directions, silently (no reset, no ICMP): a link that went dark.
func (l *link) partition(t *testing.T) { l.rule(t, "-A", "-j", "DROP") }

// heal undoes partition.
func (l *link) heal(t *testing.T) { l.rule(t, "-D", "-j", "DROP") }

// loss drops each packet crossing the link with probability p, in each
// direction (iptables' statistic match: this kernel has no netem).
func (l *link) loss(t *testing.T, p float64) {
	l.rule(t, "-A", "-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(p, 'f', -1, 64), "-j", "DROP")
}

// dropCount returns how many packets the DROP rules of the machines'
// namespace dropped (both chains), to show a fault did happen.
func (l *link) dropCount(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", l.machines, "iptables", "-w", "-L", "-v", "-n", "-x").Output()
	if err != nil {
		t.Fatalf("iptables -L: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" {
			if v, err := strconv.Atoi(f[0]); err == nil {
				n += v
			}
		}
	}
	return n
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on an OS thread that has joined network namespace ns, so
// the sockets fn creates (a dial, a listen) belong to ns; they stay there
// whichever thread uses them later. The thread returns to this process's
// namespace before it is released (or, if it cannot, dies with its
// goroutine: the runtime never reuses a thread left locked).
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back from %s: %w", ns, err) // the thread stays locked and exits
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// dialer returns a DialContext whose connections start in namespace ns.
func dialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// listen listens on addr in namespace ns.
func listen(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inNS(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
