package bootstrapper

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/protocol/che"
)

// The frames are what jsonrpc2 itself writes for a notification with
// che's params (seq set), and jsonrpc2 reads them back as notifications.
func TestFramesAreJSONRPC(t *testing.T) {
	enc := testEncoder(t)
	cases := []struct {
		method string
		ev     unnumbered
		params any // che's params type the frame's params decode into
	}{
		{che.MethodBootstrapperStatus, enc.bootstrapperStatus(che.StatusFailed, "it broke"), new(che.BootstrapperStatus)},
		{che.MethodInstallerStatus, enc.installerStatus(1, che.StatusRunning, ""), new(che.InstallerStatus)},
		{che.MethodInstallerLog, enc.log(0, che.StreamStderr, []byte("a \"quoted\" line\r"), true), new(che.InstallerLog)},
		{che.MethodServerStatus, enc.serverStatus(1, "web", "8080/tcp", che.StatusStopped), new(che.ServerStatus)},
		{che.MethodInstallerLog, enc.lost(0, 7), new(che.InstallerLog)},
	}
	for _, c := range cases {
		frame := c.ev.number(42)
		var req jsonrpc2.Request
		if err := json.Unmarshal(frame, &req); err != nil {
			t.Fatalf("jsonrpc2 cannot read %s: %v", frame, err)
		}
		if !req.Notif || req.Method != c.method || req.Params == nil {
			t.Fatalf("jsonrpc2 reads %s as notif=%v method=%q", frame, req.Notif, req.Method)
		}
		d := json.NewDecoder(bytes.NewReader(*req.Params))
		d.DisallowUnknownFields()
		if err := d.Decode(c.params); err != nil {
			t.Fatalf("%s: params into %T: %v", frame, c.params, err)
		}
		p, err := json.Marshal(c.params)
		if err != nil {
			t.Fatal(err)
		}
		raw := json.RawMessage(p)
		want, err := json.Marshal(&jsonrpc2.Request{Method: c.method, Params: &raw, Notif: true})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(frame, want) {
			t.Errorf("%s:\n got %s\nwant %s", c.method, frame, want)
		}
		if !bytes.Contains(frame, []byte(`,"seq":42}}`)) {
			t.Errorf("seq is not last: %s", frame)
		}
		if !bytes.HasPrefix(frame, []byte(`{"jsonrpc":"2.0","method":"`+c.method+`","params":{"machineName":"m","runtimeId":{"workspaceId":"w","envName":"e","ownerId":"o"},"time":"`)) {
			t.Errorf("fields not in Che's order: %s", frame)
		}
	}
}

// paramsOf returns the params of ev's frame.
func paramsOf(t *testing.T, ev unnumbered) []byte {
	t.Helper()
	var req jsonrpc2.Request
	if err := json.Unmarshal(ev.number(1), &req); err != nil || req.Params == nil {
		t.Fatalf("%s: %v", ev.number(1), err)
	}
	return *req.Params
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
	if err := json.Unmarshal(paramsOf(t, enc.log(1, che.StreamStdout, line, false)), &p); err != nil {
		t.Fatal(err)
	}
	if p.Text != "bad \ufffd\ufffd bytes, good é" || !bytes.Equal(p.Raw, line) {
		t.Fatalf("text %q raw %q", p.Text, p.Raw)
	}
	if p.Installer != "inst.b" || p.Stream != che.StreamStdout || p.Partial || p.BootID != "0123456789abcdef" {
		t.Fatalf("params %+v", p)
	}
	if _, err := time.Parse(time.RFC3339Nano, p.Time); err != nil {
		t.Fatal(err)
	}
	// Valid UTF-8 has no raw.
	if b := paramsOf(t, enc.log(0, che.StreamStdout, []byte("café"), false)); strings.Contains(string(b), `"raw"`) {
		t.Fatalf("raw on a valid line: %s", b)
	}
}

// STARTING announces the plan (ids and servers, never scripts); other
// statuses do not repeat it.
func TestStartingAnnouncesPlan(t *testing.T) {
	plan := Plan([]Installer{
		{ID: "a", Script: "secret-script"},
		{ID: "b", Script: "x", Servers: map[string]Server{"web": {Port: "8080/tcp", Protocol: "http", Path: "/p", Attributes: json.RawMessage(`{"internal":"true"}`)}}},
	})
	enc, err := newEncoder("m", che.RuntimeID{Workspace: "w", Environment: "e", Owner: "o"}, "0123456789abcdef", plan)
	if err != nil {
		t.Fatal(err)
	}
	start := string(paramsOf(t, enc.bootstrapperStatus(che.StatusStarting, "")))
	want := `"installers":[{"id":"a"},{"id":"b","servers":{"web":{"port":"8080/tcp","protocol":"http","path":"/p","attributes":{"internal":"true"}}}}]`
	if !strings.Contains(start, want) || strings.Contains(start, "script") {
		t.Errorf("STARTING = %s\nwant it to contain %s and no script", start, want)
	}
	if done := string(paramsOf(t, enc.bootstrapperStatus(che.StatusDone, ""))); strings.Contains(done, "installers") {
		t.Errorf("DONE repeats the plan: %s", done)
	}
}
