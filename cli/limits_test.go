package cli_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// TestIdleSocketsDoNotLockOutClients (issue 11, M2): an agent that may
// open 64 descriptors, facing 200 sockets that connect and send nothing,
// still answers a real client at once, and closes all but a few of the
// idle sockets (at most a quarter of its descriptors stay pending). Before,
// the idle sockets took every descriptor and the client waited for the
// header timeout (here ten minutes) to free some.
func TestIdleSocketsDoNotLockOutClients(t *testing.T) {
	a := startAgentWith(t, []string{"prlimit", "--nofile=64:64", "--"}, "-header-timeout", "10m")
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 200 {
		c, err := net.DialTimeout("tcp", a.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(idle), err)
		}
		idle = append(idle, c)
	}
	hc := &http.Client{Timeout: testutil.Wait, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest("POST", "http://"+a.addr+"/v1/rpc", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`))
	req.Header.Set("Authorization", "Bearer "+a.token)
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("a real client behind 200 idle sockets: %v (after %s)", err, time.Since(start))
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"result"`) {
		t.Fatalf("agent.info = %d %s", resp.StatusCode, body)
	}
	// The idle sockets the agent accepted beyond its limit were closed:
	// reading them ends (EOF or reset) rather than timing out.
	isClosed := make([]bool, len(idle))
	closed := 0
	for deadline := time.Now().Add(testutil.Wait); closed < 150 && time.Now().Before(deadline); {
		for i, c := range idle {
			if isClosed[i] {
				continue
			}
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				isClosed[i] = true
				closed++
			}
		}
	}
	if closed < 150 {
		t.Errorf("%d of 200 idle sockets closed by the agent; want at least 150", closed)
	}
}
