package master_test

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/master"
)

// M1 and the -data typo: porthole-master token refuses names past their
// bounds or with other characters (the old one minted a token for a
// 33 kB name, which wedged the master), and a data directory without a
// signing key unless -init (the old one silently made a new key).
func TestTokenCommandRefuses(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string) {
		out, err := exec.Command(masterBin, append([]string{"token"}, args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return code, string(out)
	}
	typo := filepath.Join(dir, "typo")
	if code, out := run("-data", typo, "-client"); code != 1 || !strings.Contains(out, "no signing key") || !strings.Contains(out, "-init") {
		t.Errorf("token -data <missing dir>: exit %d, %q; want 1 naming the missing key and -init", code, out)
	}
	if code, out := run("-init", "-data", dir, "-client"); code != 0 {
		t.Fatalf("token -init: exit %d, %s", code, out)
	}
	if code, out := run("-data", dir, "-runtime-id", "w:e:o", "-machine-name", "dev"); code != 0 {
		t.Errorf("token with the key: exit %d, %s", code, out)
	}
	for _, c := range []struct{ rid, name, flag string }{
		{"w:e:o", strings.Repeat("m", 33_000), "-machine-name"},
		{"w:e:o", strings.Repeat("m", master.MaxMachineNameBytes+1), "-machine-name"},
		{"w:e:o", "a/b", "-machine-name"},
		{"w:e:o", "dev\n", "-machine-name"},
		{"w:e:" + strings.Repeat("o", master.MaxRuntimeIDBytes), "dev", "-runtime-id"},
		{"w:e:o<script>", "dev", "-runtime-id"},
		{":e:o", "dev", "-runtime-id"},
	} {
		code, out := run("-data", dir, "-runtime-id", c.rid, "-machine-name", c.name)
		if code != 2 || !strings.Contains(out, c.flag) || len(out) > 1000 {
			t.Errorf("token %.40q %.40q: exit %d, %.300q; want 2 naming %s, briefly", c.rid, c.name, code, out, c.flag)
		}
	}
}

// M1 in the API: a name past its bounds in a path is a 400, not a
// lookup.
func TestAPIRefusesBadNames(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	client := tm.clientToken(t)
	for _, path := range []string{
		"/api/runtimes/" + strings.Repeat("w", 300) + ":e:o",
		"/api/runtimes/w:e:o/machines/" + strings.Repeat("m", 200),
		"/api/runtimes/w:e:o/machines/a%20b/logs",
		"/api/runtimes/nocolons/machines/dev/agent/v1/rpc",
	} {
		if st, body := get(t, tm.URL+path, client, nil); st != http.StatusBadRequest {
			t.Errorf("GET %.60s: %d %s; want 400", path, st, body)
		}
	}
}

// DNS rebinding: with -allowed-host, a request naming another host is
// refused (421); IP addresses and localhost pass.
func TestAllowedHosts(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) { o.AllowedHosts = []string{"master.example"} })
	for host, want := range map[string]int{"evil.example": 421, "evil.example:80": 421, "master.example": 200, "MASTER.example:8080": 200, tm.addr(): 200, "localhost:1": 200, "[::1]:80": 200} {
		req, _ := http.NewRequest("GET", tm.URL+"/healthz", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d; want %d", host, resp.StatusCode, want)
		}
	}
}
