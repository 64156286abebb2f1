package logging_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/internal/logging"
)

func TestFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		wantErr string
		json    bool
		debug   bool
	}{
		{nil, "", false, false},
		{[]string{"-log-format", "json"}, "", true, false},
		{[]string{"-log-format", "json", "-log-level", "debug"}, "", true, true},
		{[]string{"-log-level", "warn"}, "", false, false},
		{[]string{"-log-format", "xml"}, `-log-format "xml": want text or json`, false, false},
		{[]string{"-log-level", "loud"}, `-log-level "loud": want debug, info, warn or error`, false, false},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			var f logging.Flags
			f.Register(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			log, err := f.Logger(&buf)
			if c.wantErr != "" {
				if err == nil || err.Error() != c.wantErr {
					t.Fatalf("error %v; want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Info("hello", "machine", "m1")
			log.Debug("detail")
			out := buf.String()
			if c.json {
				var first map[string]any
				line, _, _ := strings.Cut(out, "\n")
				if err := json.Unmarshal([]byte(line), &first); err != nil || first["msg"] != "hello" || first["machine"] != "m1" {
					t.Fatalf("not a JSON line with msg and machine: %q (%v)", line, err)
				}
			} else if c.args == nil && !strings.Contains(out, `msg=hello machine=m1`) {
				t.Fatalf("text: %q", out)
			}
			if got := strings.Contains(out, "detail"); got != c.debug {
				t.Fatalf("debug line shown: %v; want %v (%q)", got, c.debug, out)
			}
			if c.args != nil && c.args[len(c.args)-1] == "warn" && out != "" {
				t.Fatalf("warn level logged info: %q", out)
			}
		})
	}
}
