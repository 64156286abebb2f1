package agent_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
)

// TestWebDir (issue 11): -web DIR serves its pages and nothing else: no
// file through a symbolic link that leads out of DIR, no dotfile, no
// directory listing. Each of the refused requests answered the file or
// the listing before.
func TestWebDir(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("outside-secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"index.html":          "<p>terminal</p>",
		"main.js":             "console.log(1)",
		".env":                "DOT=secret",
		".git/config":         "[core]",
		"assets/app.css":      "body{}",
		"docs/index.html":     "<p>docs</p>",
		"assets/.hidden.txt":  "hidden",
		"assets/sub/file.txt": "in a listed directory",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"escape.txt": filepath.Join(outside, "secret.txt"),
		"escapedir":  outside,
		"up":         "../",
		"inside.js":  "main.js",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	a, err := agent.New(agent.Options{Token: token, WebDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv := "http://" + agenttest.Serve(t, a.Handler())
	tests := []struct {
		path     string
		want     int
		contains string
	}{
		{"/", 200, "<p>terminal</p>"},
		{"/main.js", 200, "console.log(1)"},
		{"/assets/app.css", 200, "body{}"},
		{"/docs/", 200, "<p>docs</p>"},
		{"/inside.js", 200, "console.log(1)"}, // a link that stays inside
		{"/escape.txt", 404, ""},
		{"/escapedir/secret.txt", 404, ""},
		{"/up/", 404, ""},
		{"/.env", 404, ""},
		{"/.git/config", 404, ""},
		{"/assets/.hidden.txt", 404, ""},
		{"/%2eenv", 404, ""},
		{"/assets/", 404, ""}, // no index.html: no listing
		{"/assets/sub/", 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || !strings.Contains(string(body), tc.contains) {
				t.Errorf("GET %s = %d %q; want %d with %q", tc.path, resp.StatusCode, body, tc.want, tc.contains)
			}
			for _, leak := range []string{"outside-secret", "DOT=secret", "[core]", "hidden", "file.txt", "app.css"} {
				if tc.want == 404 && strings.Contains(string(body), leak) {
					t.Errorf("GET %s leaked %q", tc.path, leak)
				}
			}
		})
	}
}

// TestRebindingWithoutToken (issue 11, low): with -insecure-no-auth, a
// page whose own name was made to resolve to the agent (DNS rebinding)
// sends Origin and Host both naming it; that is no longer taken for the
// same origin, while a page on the agent's address (an IP or localhost)
// still is. With a token, the token protects, and same-host stays
// allowed for names too.
func TestRebindingWithoutToken(t *testing.T) {
	open, err := agent.New(agent.Options{InsecureNoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := agenttest.Serve(t, open.Handler())
	_, port, _ := strings.Cut(addr, ":")
	post := func(host, origin string) int {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/rpc", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`))
		req.Host = host
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		host string
		want int
	}{
		{"evil.example:" + port, 403},
		{"127.0.0.1:" + port, 200},
		{"localhost:" + port, 200},
		{"[::1]:" + port, 200},
	} {
		if got := post(tc.host, "http://"+tc.host); got != tc.want {
			t.Errorf("insecure agent, Host and Origin %s: %d; want %d", tc.host, got, tc.want)
		}
	}
	tokened, err := agent.New(agent.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	taddr := agenttest.Serve(t, tokened.Handler())
	req, _ := http.NewRequest("POST", "http://"+taddr+"/v1/rpc", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`))
	req.Host = "agent.example"
	req.Header.Set("Origin", "https://agent.example")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("agent with a token, same-host name: %d; want 200", resp.StatusCode)
	}
}
