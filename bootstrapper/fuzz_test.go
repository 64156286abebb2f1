package bootstrapper

import (
	"strings"
	"testing"
)

// FuzzParseConfig: the installers file (Che's config.json) never makes
// ParseConfig panic; what it accepts has installers with distinct ids,
// servers with valid ports, and dependencies listed before their
// dependents.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`[{"id":"org.a","script":"echo a"}]`,
		`[{"id":"org.a","script":"echo a","servers":{"web":{"port":"8080/tcp","protocol":"http"}}},{"id":"org.b","script":"b","dependencies":["org.a:1.0"]}]`,
		`[{"id":"org.a","script":"x","dependencies":["org.a"]}]`,
		`[{"id":"org.a","servers":{"s":{"port":"80/xyz"}}}]`,
		`[]`, `{}`, `[1]`, `[{"id":1}]`, `[{"id":"a"},{"id":"a"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ins, err := ParseConfig(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		seen := map[string]int{}
		for i, in := range ins {
			if in.ID == "" {
				t.Fatalf("installer[%d] accepted without an id", i)
			}
			if _, dup := seen[in.ID]; dup {
				t.Fatalf("id %q accepted twice", in.ID)
			}
			seen[in.ID] = i
			for ref, s := range in.Servers {
				if _, err := ParsePort(s.Port); err != nil {
					t.Fatalf("servers[%q].port %q accepted: %v", ref, s.Port, err)
				}
			}
			for _, dep := range in.Dependencies {
				id, _, _ := strings.Cut(dep, ":")
				if j, ok := seen[id]; !ok || j >= i {
					t.Fatalf("installer[%d] dependency %q accepted, not listed before it", i, dep)
				}
			}
		}
	})
}

// FuzzParsePort: a server's port from config.json.
func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"8080", "8080/tcp", "53/udp", "0", "65536", "+80", "80/", "/tcp", "-1", "080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, port string) {
		ep, err := ParsePort(port)
		if err == nil && !strings.HasPrefix(ep.Addr, "127.0.0.1:") {
			t.Fatalf("ParsePort(%q) = %+v", port, ep)
		}
	})
}
