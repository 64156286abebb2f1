package bootstrapper_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/bootstrapper"
)

func fixturePath(name string) string { return filepath.Join("..", "fixtures", "bootstrapper", name) }

// The fixtures that are valid configs load, with Che's fields.
func TestConfigFixtures(t *testing.T) {
	ins, err := bootstrapper.LoadConfig(fixturePath("che-exec.json"))
	if err != nil {
		t.Fatal(err)
	}
	in := ins[0]
	if len(ins) != 1 || in.ID != "org.eclipse.che.exec" || in.Version != "1.0.1" || in.Name != "Exec" ||
		in.Description != "Agent for command execution" || in.Script != "...sh..." || len(in.Servers) != 2 {
		t.Fatalf("%+v", ins)
	}
	s := in.Servers["exec-agent/ws"]
	if s.Port != "4412/tcp" || s.Protocol != "ws" || s.Path != "/connect" || string(s.Attributes) != `{"secure":"true","unsecuredPaths":"/liveness"}` {
		t.Fatalf("server %+v", s)
	}
	for _, name := range []string{"two-scripts.json", "failing.json", "timeout.json", "server-delayed.json", "server-never.json"} {
		if _, err := bootstrapper.LoadConfig(fixturePath(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Bad configs are refused with a message naming the installer and field.
func TestConfigErrors(t *testing.T) {
	cases := []struct{ name, config, want string }{
		{"fixture: bad port", "@bad-port.json", `installer[2] "org.x": servers["web"].port "80/xyz": unknown protocol`},
		{"fixture: dependency order", "@dependency-order.json", `installer[0] "org.example.app": dependencies[0] "org.example.runtime:1.0.0": listed after it, as installer[1]`},
		{"fixture: malformed", "@malformed.json", "invalid JSON at line 3, column 1"},
		{"missing dependency", `[{"id":"a","dependencies":["b"]}]`, `installer[0] "a": dependencies[0] "b": no such installer in the config`},
		{"self dependency", `[{"id":"a","dependencies":["a"]}]`, `installer[0] "a": dependencies[0] "a": depends on itself`},
		{"not an array", `{"id":"a"}`, "got a JSON object, want a JSON array of installers"},
		{"empty", `[]`, "no installers, nothing to start"},
		{"no id", `[{"script":"true"}]`, "installer[0]: id is missing"},
		{"duplicate", `[{"id":"a"},{"id":"a"}]`, `installer[1] "a": the same id as installer[0]`},
		{"wrong type", `[{"id":"a","script":1}]`, "installer[0]: script: got a JSON number, want a string"},
		{"port number", `[{"id":"a","servers":{"s":{"port":"99999/tcp"}}}]`, `installer[0] "a": servers["s"].port "99999/tcp": not a port number (1-65535)`},
		{"no port", `[{"id":"a","servers":{"s":{"protocol":"http"}}}]`, `installer[0] "a": servers["s"].port "": missing`},
		{"trailing comma", "[\n{\"id\":\"a\"},\n]", "invalid JSON at line 3, column 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if name, ok := strings.CutPrefix(c.config, "@"); ok {
				_, err = bootstrapper.LoadConfig(fixturePath(name))
				if err != nil && !strings.HasPrefix(err.Error(), fixturePath(name)+": ") {
					t.Errorf("error %q does not start with the file's path", err)
				}
			} else {
				_, err = bootstrapper.ParseConfig([]byte(c.config))
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v; want %q", err, c.want)
			}
		})
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string]bootstrapper.Endpoint{
		"4412":     {Network: "tcp", Addr: "127.0.0.1:4412"},
		"4412/tcp": {Network: "tcp", Addr: "127.0.0.1:4412"},
		"53/udp":   {Network: "udp", Addr: "127.0.0.1:53"},
		"80/TCP":   {Network: "tcp", Addr: "127.0.0.1:80"},
	} {
		if got, err := bootstrapper.ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0", "x", "80/sctp", "+80", "80/tcp/x", "-1"} {
		if _, err := bootstrapper.ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
}
