package agent

import (
	"os"
	"path/filepath"
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
	got, err := listeningPorts()
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
	os.WriteFile(filepath.Join(dir, "tcp"), []byte("header\n 0: zz:1F90 0 0A\n"), 0o644)
	if _, err := listeningPorts(); err == nil {
		t.Error("a bad address: no error")
	}
}
