package dashboard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestNotBuilt(t *testing.T) {
	h := newHandler(fstest.MapFS{".keep": {}})
	w := get(t, h, "/")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "make web") || !strings.Contains(w.Body.String(), "/api/runtimes") {
		t.Errorf("GET / = %d %q; want 200 and how to build the dashboard", w.Code, w.Body.String())
	}
	if w.Header().Get("Content-Security-Policy") == "" {
		t.Error("no Content-Security-Policy")
	}
	if w := get(t, h, "/main.js"); w.Code != http.StatusNotFound {
		t.Errorf("GET /main.js = %d; want 404", w.Code)
	}
}

func TestBuilt(t *testing.T) {
	h := newHandler(fstest.MapFS{
		".keep":      {},
		"index.html": {Data: []byte("<!doctype html><title>dash</title>")},
		"main.js":    {Data: []byte("console.log(1)")},
	})
	cases := []struct {
		path, want string
		code       int
	}{
		{"/", "<title>dash</title>", 200},
		{"/main.js", "console.log(1)", 200},
		{"/.keep", "", 404},
		{"/nope.js", "", 404},
	}
	for _, c := range cases {
		w := get(t, h, c.path)
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.want) {
			t.Errorf("GET %s = %d %q; want %d with %q", c.path, w.Code, w.Body.String(), c.code, c.want)
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options", c.path)
		}
	}
	r := httptest.NewRequest("POST", "/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d, Allow %q; want 405 with Allow: GET, HEAD", w.Code, w.Header().Get("Allow"))
	}
	w = get(t, h, "/main.js")
	tag := w.Header().Get("ETag")
	if tag == "" {
		t.Fatal("GET /main.js: no ETag")
	}
	if w := get(t, h, "/main.js", "If-None-Match", tag); w.Code != http.StatusNotModified {
		t.Errorf("GET /main.js with If-None-Match = %d; want 304", w.Code)
	}
}

// The embedded directory is either the placeholder alone or a build.
func TestEmbedded(t *testing.T) {
	w := get(t, Handler(), "/")
	if w.Code != http.StatusOK {
		t.Fatalf("GET / = %d", w.Code)
	}
	t.Logf("dashboard built into this binary: %v", Built())
}
