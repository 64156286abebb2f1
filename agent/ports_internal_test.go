package agent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/porthole-dev/porthole/protocol"
)

// /proc/net/tcp{,6} as the kernel writes them on little-endian machines:
// only LISTEN (0A) sockets count.
func TestParseProcNetTCP(t *testing.T) {
	dir := t.TempDir()
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
`
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
`
	os.WriteFile(filepath.Join(dir, "tcp"), []byte(tcp), 0o644)
	os.WriteFile(filepath.Join(dir, "tcp6"), []byte(tcp6), 0o644)
	old := procNetTCP
	defer func() { procNetTCP = old }()
	procNetTCP = []string{filepath.Join(dir, "tcp"), filepath.Join(dir, "tcp6"), filepath.Join(dir, "missing")}
	got, err := newPortScanner(PortsAll).listeningPorts()
	if err != nil {
		t.Fatal(err)
	}
	want := []protocol.ListeningPort{{Port: 22, Address: "0.0.0.0"}, {Port: 53, Address: "::1"}, {Port: 8080, Address: "127.0.0.1"}, {Port: 8080, Address: "::"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("port %d: %v, want %v", i, got[i], want[i])
		}
	}
	os.WriteFile(filepath.Join(dir, "tcp"), []byte("header\n 0: zz:1F90 0 0A 0 0 0 0 0 1\n"), 0o644)
	if _, err := newPortScanner(PortsAll).listeningPorts(); err == nil {
		t.Error("a bad address: no error")
	}
	os.WriteFile(filepath.Join(dir, "tcp"), []byte("header\n 0: 0100007F:1F90 0 0A 0 0 0 0 0 x\n"), 0o644)
	if _, err := newPortScanner(PortsAll).listeningPorts(); err == nil {
		t.Error("a bad inode: no error")
	}
}

// PortsOwn reports a socket held by a descendant of its root and not one
// held only outside the tree; it scans processes again only when the
// listening sockets changed.
func TestPortScopeOwn(t *testing.T) {
	shared, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	mine, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	f, err := shared.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	// A child (the root of the scanned tree) holds shared as its fd 3;
	// this test process, outside that tree, holds mine.
	child := exec.Command("sh", "-c", "exec cat")
	child.ExtraFiles = []*os.File{f}
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer func() { stdin.Close(); child.Wait() }()

	port := func(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }
	has := func(ps []protocol.ListeningPort, p int) bool {
		return slices.ContainsFunc(ps, func(lp protocol.ListeningPort) bool { return lp.Port == p })
	}
	all, err := newPortScanner(PortsAll).listeningPorts()
	if err != nil {
		t.Fatal(err)
	}
	if !has(all, port(shared)) || !has(all, port(mine)) {
		t.Fatalf("all: %v lacks %d or %d", all, port(shared), port(mine))
	}
	sc := newPortScanner(PortsOwn)
	sc.root = child.Process.Pid
	own, err := sc.listeningPorts()
	if err != nil {
		t.Fatal(err)
	}
	if !has(own, port(shared)) || has(own, port(mine)) {
		t.Fatalf("own (root %d): %v, want %d and not %d", sc.root, own, port(shared), port(mine))
	}
}

// PortsOwn scans processes only when the listening sockets changed
// (the tables here are files the test writes: the machine's own change
// as other tests run).
func TestPortScopeOwnScansOnChange(t *testing.T) {
	dir := t.TempDir()
	tcp := filepath.Join(dir, "tcp")
	line := func(port, inode int) string {
		return fmt.Sprintf("   0: 0100007F:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0 100 0 0 10 0\n", port, inode)
	}
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	os.WriteFile(tcp, []byte(header+line(8080, 111)), 0o644)
	old := procNetTCP
	defer func() { procNetTCP = old }()
	procNetTCP = []string{tcp}
	sc := newPortScanner(PortsOwn)
	for i := range 3 {
		if _, err := sc.listeningPorts(); err != nil {
			t.Fatal(err)
		}
		if sc.scans != 1 {
			t.Fatalf("read %d with the same sockets: %d scans; want 1", i+1, sc.scans)
		}
	}
	os.WriteFile(tcp, []byte(header+line(8080, 111)+line(9090, 222)), 0o644)
	if _, err := sc.listeningPorts(); err != nil {
		t.Fatal(err)
	}
	if sc.scans != 2 {
		t.Fatalf("after a new socket: %d scans; want 2", sc.scans)
	}
}

func TestParentPID(t *testing.T) {
	if got, ok := parentPID(os.Getpid()); !ok || got != os.Getppid() {
		t.Errorf("parentPID(self) = %d, %v; want %d", got, ok, os.Getppid())
	}
	if _, ok := parentPID(-1); ok {
		t.Error("parentPID(-1): ok")
	}
}
