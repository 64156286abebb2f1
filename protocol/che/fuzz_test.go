package che

import (
	"encoding/json"
	"testing"
)

// FuzzEvent: the params of every Che event the master receives go through
// Decode then Validate. Neither panics; an event Validate accepts has a
// machine name and a workspace, is of a known method, and survives a
// round trip through JSON unchanged in what Validate checks.
func FuzzEvent(f *testing.F) {
	rid := `"runtimeId":{"workspaceId":"w","envName":"e","ownerId":"o"},"machineName":"dev","time":"2024-01-02T03:04:05.000Z"`
	for _, s := range []struct{ method, params string }{
		{MethodBootstrapperStatus, `{"status":"STARTING",` + rid + `}`},
		{MethodBootstrapperStatus, `{"status":"FAILED","error":"x",` + rid + `}`},
		{MethodInstallerStatus, `{"status":"DONE","installer":"org.a",` + rid + `}`},
		{MethodInstallerLog, `{"installer":"org.a","stream":"STDOUT","text":"hi",` + rid + `}`},
		{MethodServerStatus, `{"status":"RUNNING","installer":"org.a","serverName":"web","serverUrl":"http://x",` + rid + `}`},
		{"unknown/method", `{` + rid + `}`},
		{MethodInstallerLog, `null`},
		{MethodInstallerLog, `{"runtimeId":"w:e:o"}`},
	} {
		f.Add(s.method, []byte(s.params))
	}
	f.Fuzz(func(t *testing.T, method string, params []byte) {
		ev, err := Decode(params)
		if err != nil {
			return
		}
		if err := Validate(method, ev); err != nil {
			return
		}
		if !Known(method) || ev.MachineName == "" || ev.RuntimeID.Workspace == "" {
			t.Fatalf("Validate(%q) accepted %+v", method, ev)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(b)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		if err := Validate(method, again); err != nil {
			t.Fatalf("accepted %q, but not after a round trip (%s): %v", params, b, err)
		}
	})
}

// FuzzParseRuntimeID: the workspace:env:owner id from flags, tokens and
// URLs.
func FuzzParseRuntimeID(f *testing.F) {
	for _, s := range []string{"w:e:o", "w::o", "::", "a:b:c:d", "", "w:e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRuntimeID(s)
		if err != nil {
			return
		}
		if again, err := ParseRuntimeID(r.String()); err != nil || again != r {
			t.Fatalf("ParseRuntimeID(%q) = %+v, whose String %q parses to %+v, %v", s, r, r.String(), again, err)
		}
	})
}
