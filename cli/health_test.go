package cli_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHealth: `porthole health` (the liveness probe of images without
// curl) exits 0 only on a 200, 1 naming the reason otherwise, within its
// -timeout against a server that never answers, and 2 on a bad flag.
func TestHealth(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "store broken", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close) // not defer: the subtests run in parallel after this function returns
	// A listener that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { silent.Close(); close(done) })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
		within time.Duration
	}{
		{"healthy agent", []string{"-url", "http://" + a.addr + "/healthz"}, 0, "ok\n", "", 0},
		{"503", []string{"-url", failing.URL + "/healthz"}, 1, "", "503 Service Unavailable", 0},
		{"nothing listening", []string{"-url", "http://" + closedAddr + "/healthz"}, 1, "", "connection refused", 0},
		{"never answers", []string{"-url", "http://" + silent.Addr().String() + "/healthz", "-timeout", "300ms"}, 1, "", "deadline exceeded", 5 * time.Second},
		{"not http", []string{"-url", "ws://" + a.addr + "/healthz"}, 2, "", "-url", 0},
		{"zero timeout", []string{"-url", "http://" + a.addr + "/healthz", "-timeout", "0s"}, 2, "", "-timeout", 0},
		{"timeout too long", []string{"-timeout", "2m"}, 2, "", "-timeout", 0},
		{"argument", []string{"extra"}, 2, "", "health takes no arguments", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := porthole(t, nil, nil, "", append([]string{"health"}, tc.args...)...)
			if r.code != tc.code {
				t.Errorf("porthole health %q: exit %d, want %d (stderr %q)", tc.args, r.code, tc.code, r.stderr)
			}
			if r.stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.stdout, tc.stdout)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tc.stderr)
			}
			if tc.within > 0 && time.Since(start) > tc.within {
				t.Errorf("took %s, want under %s", time.Since(start), tc.within)
			}
		})
	}
}
