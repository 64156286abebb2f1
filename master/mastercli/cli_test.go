package mastercli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// -metrics-listen serves /metrics without a token on its own address
// (nothing else there), and -log-format json makes every line of the
// master's log a JSON object.
func TestMetricsListenAndJSONLogs(t *testing.T) {
	addr, maddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	var stderr testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", addr, "-metrics-listen", maddr, "-data", t.TempDir(), "-log-format", "json"}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("porthole-master: %v", err)
		}
		for line := range strings.Lines(stderr.String()) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil {
				t.Errorf("not a JSON log line: %q", line)
			}
		}
	}()
	var body string
	testutil.WaitFor(t, "/metrics on -metrics-listen", func() bool {
		resp, err := http.Get("http://" + maddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	if !strings.Contains(body, "porthole_master_machines{status=\"RUNNING\"} 0") {
		t.Errorf("exposition without porthole_master_machines:\n%.2000s", body)
	}
	if resp, err := http.Get("http://" + maddr + "/api/runtimes"); err != nil || resp.StatusCode != 404 {
		t.Errorf("-metrics-listen serves more than /metrics: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Get("http://" + addr + "/metrics"); err != nil || resp.StatusCode != 401 {
		t.Errorf("/metrics on -listen without a token: %v %v; want 401", resp, err)
	} else {
		resp.Body.Close()
	}
}

// token -name -ttl records the token in the registry; token list shows
// it, token revoke revokes every token of a name, and names what it does
// not know.
func TestTokenListRevoke(t *testing.T) {
	data := t.TempDir()
	tok := func(args ...string) (string, error) {
		var out strings.Builder
		err := run(context.Background(), append([]string{"token", "-data", data}, args...), &out, io.Discard)
		return out.String(), err
	}
	if _, err := tok("-init", "-client", "-name", "alice@example.com", "-ttl", "1h"); err != nil {
		t.Fatal(err)
	}
	if _, err := tok("-client", "-name", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := tok("-runtime-id", "w:e:o", "-machine-name", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := tok("-client", "-name", "bad name"); err == nil || !strings.Contains(err.Error(), `token name "bad name"`) {
		t.Errorf("a bad name: %v", err)
	}
	list := func() string {
		var out strings.Builder
		if err := run(context.Background(), []string{"token", "list", "-data", data}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	if l := list(); strings.Count(l, "alice@example.com") != 2 || !strings.Contains(l, "w:e:o/m") || strings.Count(l, "valid") != 3 {
		t.Fatalf("token list:\n%s", l)
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"token", "revoke", "-data", data, "alice@example.com"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "2 token(s) revoked") {
		t.Fatalf("revoke: %v %q", err, out.String())
	}
	if l := list(); strings.Count(l, "revoked") != 2 || strings.Count(l, "valid") != 1 {
		t.Fatalf("token list after the revocation:\n%s", l)
	}
	if err := run(context.Background(), []string{"token", "revoke", "-data", data, "carol"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), `no token named or numbered "carol"`) {
		t.Errorf("revoking an unknown name: %v", err)
	}
}

// A bad -allow-origin is refused with an error naming the flag and the
// value, before anything starts.
func TestAllowOriginFlag(t *testing.T) {
	for _, v := range []string{"ide.example.com", "ftp://ide.example.com", "https://ide.example.com/path", "https://", "https://u@ide.example.com"} {
		err := run(context.Background(), []string{"-listen", "127.0.0.1:0", "-data", t.TempDir(), "-allow-origin", v}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-allow-origin") || !strings.Contains(err.Error(), v) {
			t.Errorf("-allow-origin %q: %v, want an error naming the flag and the value", v, err)
		}
	}
}
