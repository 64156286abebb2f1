package bootstrapper

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
		{che.MethodBootstrapperStatus, enc.bootstrapperStatus(che.StatusFailed, "it broke", true), new(che.BootstrapperStatus)},
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

// The encoder renders the examples of fixtures/che byte for byte (all
// but installer-log-raw-partial.json, whose text has U+FFFD as a
// character, where encoding/json writes the invalid byte as \ufffd, and
// Che's own che-installer-failed.json).
func TestEncoderRendersGoldens(t *testing.T) {
	plan := []che.PlanInstaller{
		{ID: "org.example.web", Servers: map[string]che.Server{"web": {Port: "8080/tcp", Protocol: "http", Path: "/", Attributes: json.RawMessage(`{"internal":"false"}`)}}},
		{ID: "org.example.tools"},
	}
	enc, err := newEncoder("dev", che.RuntimeID{Workspace: "ws1", Environment: "default", Owner: "alice"}, "b-5f2c", plan)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		file, time string
		seq        uint64
		render     func() unnumbered
	}{
		{"bootstrapper-starting.json", "2026-11-28T21:00:00.123456789Z", 1, func() unnumbered { return enc.bootstrapperStatus(che.StatusStarting, "", true) }},
		{"installer-log.json", "2026-11-28T21:00:00.5Z", 2, func() unnumbered {
			return enc.log(0, che.StreamStdout, []byte("listening on :8080\r"), false)
		}},
		{"installer-status-running.json", "2026-11-28T21:00:01Z", 3, func() unnumbered { return enc.installerStatus(0, che.StatusRunning, "") }},
		{"installer-log-lost.json", "2026-11-28T21:00:02Z", 5, func() unnumbered { return enc.lost(0, 120) }},
		{"server-status.json", "2026-11-28T21:00:07Z", 6, func() unnumbered { return enc.serverStatus(0, "web", "8080/tcp", che.StatusStopped) }},
		{"bootstrapper-failed.json", "2026-11-28T21:00:05Z", 9, func() unnumbered {
			return enc.bootstrapperStatus(che.StatusFailed, che.ErrExitCode("org.example.tools", 3).Error(), true)
		}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("..", "fixtures", "che", c.file))
			if err != nil {
				t.Fatal(err)
			}
			at, err := time.Parse(time.RFC3339Nano, c.time)
			if err != nil {
				t.Fatal(err)
			}
			enc.now = func() time.Time { return at }
			if got := c.render().number(c.seq); !bytes.Equal(got, bytes.TrimSpace(want)) {
				t.Errorf("rendered\n %s\nwant\n %s", got, want)
			}
		})
	}
}

// paramsOf returns the params of ev's frame.
func paramsOf(t *testing.T, ev unnumbered) []byte {
	t.Helper()
	var f struct{ Params json.RawMessage }
	if err := json.Unmarshal(ev.number(1), &f); err != nil || f.Params == nil {
		t.Fatalf("%s: %v", ev.number(1), err)
	}
	return f.Params
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
	start := string(paramsOf(t, enc.bootstrapperStatus(che.StatusStarting, "", true)))
	want := `"installers":[{"id":"a"},{"id":"b","servers":{"web":{"port":"8080/tcp","protocol":"http","path":"/p","attributes":{"internal":"true"}}}}]`
	if !strings.Contains(start, want) || strings.Contains(start, "script") {
		t.Errorf("STARTING = %s\nwant it to contain %s and no script", start, want)
	}
	if done := string(paramsOf(t, enc.bootstrapperStatus(che.StatusDone, "", true))); strings.Contains(done, "installers") {
		t.Errorf("DONE repeats the plan: %s", done)
	}
}
