package bootstrapper

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"
)

// The frames are what jsonrpc2 itself writes for a notification with
// these params, and jsonrpc2 reads them back as notifications.
func TestFramesAreJSONRPC(t *testing.T) {
	enc := testEncoder(t)
	cases := []struct {
		method string
		params []byte
	}{
		{MethodBootstrapperStatus, enc.bootstrapperStatus(StatusFailed, "it broke")},
		{MethodInstallerStatus, enc.installerStatus(1, StatusRunning, "")},
		{MethodInstallerLog, enc.log(0, StreamStderr, []byte("a \"quoted\" line\r"), true)},
		{MethodServerStatus, enc.serverStatus(1, "web", "8080/tcp", StatusStopped)},
		{MethodInstallerLog, enc.lost(0, 7)},
	}
	for _, c := range cases {
		frame := enc.frame(c.method, c.params, 42)
		var params map[string]any
		if err := json.Unmarshal(c.params, &params); err != nil {
			t.Fatal(err)
		}
		params["seq"] = 42
		p, _ := json.Marshal(params)
		raw := json.RawMessage(p)
		want, err := json.Marshal(&jsonrpc2.Request{Method: c.method, Params: &raw, Notif: true})
		if err != nil {
			t.Fatal(err)
		}
		if !jsonEqual(t, frame, want) {
			t.Errorf("%s:\n got %s\nwant %s", c.method, frame, want)
		}
		var req jsonrpc2.Request
		if err := json.Unmarshal(frame, &req); err != nil {
			t.Fatalf("jsonrpc2 cannot read %s: %v", frame, err)
		}
		if !req.Notif || req.Method != c.method {
			t.Errorf("jsonrpc2 reads %s as notif=%v method=%q", frame, req.Notif, req.Method)
		}
		if !bytes.HasPrefix(frame, []byte(`{"jsonrpc":"2.0","method":"`+c.method+`","params":{"machineName":"m","runtimeId":{"workspaceId":"w","envName":"e","ownerId":"o"},"time":"`)) {
			t.Errorf("fields not in Che's order: %s", frame)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return bytes.Equal(xs, ys)
}

func TestLogEncoding(t *testing.T) {
	enc := testEncoder(t)
	var p struct {
		Time      string
		Text      string
		Installer string
		Stream    string
		Partial   bool
		Raw       []byte
		BootID    string
	}
	// Invalid UTF-8: U+FFFD per invalid byte in text, the exact bytes in raw.
	line := []byte("bad \xff\xfe bytes, good é")
	if err := json.Unmarshal(enc.log(1, StreamStdout, line, false), &p); err != nil {
		t.Fatal(err)
	}
	if p.Text != "bad \ufffd\ufffd bytes, good é" || !bytes.Equal(p.Raw, line) {
		t.Fatalf("text %q raw %q", p.Text, p.Raw)
	}
	if p.Installer != "inst.b" || p.Stream != StreamStdout || p.Partial || p.BootID != "0123456789abcdef" {
		t.Fatalf("params %+v", p)
	}
	if _, err := time.Parse(time.RFC3339Nano, p.Time); err != nil {
		t.Fatal(err)
	}
	// Valid UTF-8 has no raw.
	if b := enc.log(0, StreamStdout, []byte("café"), false); strings.Contains(string(b), `"raw"`) {
		t.Fatalf("raw on a valid line: %s", b)
	}
}

func TestParseRuntimeID(t *testing.T) {
	r, err := ParseRuntimeID("ws:env:owner")
	if err != nil || r != (RuntimeID{"ws", "env", "owner"}) || r.String() != "ws:env:owner" {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", "ws", "ws:env", "ws:env:owner:x"} {
		if _, err := ParseRuntimeID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// STARTING announces the plan (ids and servers, never scripts); other
// statuses do not repeat it.
func TestStartingAnnouncesPlan(t *testing.T) {
	plan := Plan([]Installer{
		{ID: "a", Script: "secret-script"},
		{ID: "b", Script: "x", Servers: map[string]Server{"web": {Port: "8080/tcp", Protocol: "http", Path: "/p", Attributes: json.RawMessage(`{"internal":"true"}`)}}},
	})
	enc, err := newEncoder("m", RuntimeID{"w", "e", "o"}, "0123456789abcdef", plan)
	if err != nil {
		t.Fatal(err)
	}
	start := string(enc.bootstrapperStatus(StatusStarting, ""))
	want := `"installers":[{"id":"a"},{"id":"b","servers":{"web":{"port":"8080/tcp","protocol":"http","path":"/p","attributes":{"internal":"true"}}}}]`
	if !strings.Contains(start, want) || strings.Contains(start, "script") {
		t.Errorf("STARTING = %s\nwant it to contain %s and no script", start, want)
	}
	if done := string(enc.bootstrapperStatus(StatusDone, "")); strings.Contains(done, "installers") {
		t.Errorf("DONE repeats the plan: %s", done)
	}
}
