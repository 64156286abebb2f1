package master

import (
	"net/http/httptest"
	"testing"
)

// A server's redirects stay under the site's prefix; other sites' do not
// change.
func TestRebase(t *testing.T) {
	const prefix = "/api/runtimes/w:e:o/machines/dev/ports/8080/~/KEY"
	cases := []struct{ loc, want string }{
		{"/login", prefix + "/login"},
		{"/", prefix + "/"},
		{"/?next=/a", prefix + "/?next=/a"},
		{prefix + "/already", prefix + "/already"},
		{"http://127.0.0.1:8080/x?y=1", prefix + "/x?y=1"},
		{"http://127.0.0.1:8080", prefix + "/"},
		{"http://localhost:8080/x", prefix + "/x"},
		{"http://127.0.0.1:80800/x", "http://127.0.0.1:80800/x"}, // another port
		{"http://127.0.0.1:9090/x", "http://127.0.0.1:9090/x"},
		{"https://example.com/x", "https://example.com/x"},
		{"//example.com/x", "//example.com/x"},
		{"relative/x", "relative/x"},
	}
	for _, c := range cases {
		if got := rebase(c.loc, "127.0.0.1:8080", 8080, prefix); got != c.want {
			t.Errorf("rebase(%q) = %q, want %q", c.loc, got, c.want)
		}
	}
}

// The log never holds a site key.
func TestLogPathHidesSiteKey(t *testing.T) {
	cases := []struct{ path, want string }{
		{"/api/runtimes/r/machines/m/ports/80/~/secret.key/a/b", "/api/runtimes/r/machines/m/ports/80/~/KEY/a/b"},
		{"/api/runtimes/r/machines/m/ports/80/~/secret.key", "/api/runtimes/r/machines/m/ports/80/~/KEY"},
		{"/api/runtimes", "/api/runtimes"},
	}
	for _, c := range cases {
		if got := logPath(httptest.NewRequest("GET", c.path, nil)); got != c.want {
			t.Errorf("logPath(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}
