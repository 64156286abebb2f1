package che

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The golden fixtures in fixtures/che are the contract in examples: each
// file is one notification. Its params are decoded strictly into the
// method's params type, re-encoded and compared with the original, so that
// renaming, dropping or adding a field, or changing whether it is omitted,
// fails here; and decoded into Event, which must validate.

const fixtureDir = "../../fixtures/che"

var goldens = []struct {
	file   string
	method string
	newV   func() any // nil: Che's own event, checked through Event only
}{
	{"bootstrapper-starting.json", MethodBootstrapperStatus, func() any { return new(BootstrapperStatus) }},
	{"bootstrapper-failed.json", MethodBootstrapperStatus, func() any { return new(BootstrapperStatus) }},
	{"installer-status-running.json", MethodInstallerStatus, func() any { return new(InstallerStatus) }},
	{"installer-log.json", MethodInstallerLog, func() any { return new(InstallerLog) }},
	{"installer-log-raw-partial.json", MethodInstallerLog, func() any { return new(InstallerLog) }},
	{"installer-log-lost.json", MethodInstallerLog, func() any { return new(InstallerLog) }},
	{"server-status.json", MethodServerStatus, func() any { return new(ServerStatus) }},
	{"che-installer-failed.json", MethodInstallerStatus, nil},
}

type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

func strict(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func TestGoldens(t *testing.T) {
	seen := map[string]bool{}
	for _, g := range goldens {
		seen[g.file] = true
		t.Run(g.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(fixtureDir, g.file))
			if err != nil {
				t.Fatal(err)
			}
			var env envelope
			if err := strict(data, &env); err != nil {
				t.Fatalf("envelope: %v", err)
			}
			if env.JSONRPC != "2.0" || env.Method != g.method {
				t.Fatalf("envelope = %q %q; want 2.0 %q (a notification: no id)", env.JSONRPC, env.Method, g.method)
			}
			ev, err := Decode(env.Params)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(env.Method, ev); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if g.newV == nil {
				return
			}
			v := g.newV()
			if err := strict(env.Params, v); err != nil {
				t.Fatalf("params into %T: %v", v, err)
			}
			got, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, env.Params) {
				t.Errorf("re-encoded %T differs:\n got %s\nwant %s", v, got, env.Params)
			}
		})
	}
	files, _ := filepath.Glob(filepath.Join(fixtureDir, "*.json"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("fixture %s is not checked by TestGoldens", f)
		}
	}
}

func TestValidate(t *testing.T) {
	base := func(f func(*Event)) *Event {
		ev := &Event{MachineName: "dev", RuntimeID: RuntimeID{"ws", "env", "me"}, Time: time.Unix(1, 0)}
		f(ev)
		return ev
	}
	cases := []struct {
		name    string
		method  string
		ev      *Event
		wantErr string
	}{
		{"bootstrapper DONE", MethodBootstrapperStatus, base(func(e *Event) { e.Status = StatusDone }), ""},
		{"no machine", MethodBootstrapperStatus, base(func(e *Event) { e.MachineName = ""; e.Status = StatusDone }), "machineName missing"},
		{"no workspace", MethodInstallerLog, base(func(e *Event) { e.RuntimeID.Workspace = ""; e.Stream = StreamStdout }), "runtimeId.workspaceId missing"},
		{"bootstrapper RUNNING", MethodBootstrapperStatus, base(func(e *Event) { e.Status = StatusRunning }), `status "RUNNING": want STARTING, DONE or FAILED`},
		{"installer without id", MethodInstallerStatus, base(func(e *Event) { e.Status = StatusDone }), "installer missing"},
		{"installer STOPPED", MethodInstallerStatus, base(func(e *Event) { e.Installer = "i"; e.Status = StatusStopped }), `status "STOPPED": want STARTING, RUNNING, DONE or FAILED`},
		{"server without name", MethodServerStatus, base(func(e *Event) { e.Installer = "i"; e.Status = StatusRunning }), "installer and server are required"},
		{"server DONE", MethodServerStatus, base(func(e *Event) { e.Installer = "i"; e.Server = "s"; e.Status = StatusDone }), `status "DONE": want RUNNING or STOPPED`},
		{"log stream", MethodInstallerLog, base(func(e *Event) { e.Stream = "stdout" }), `stream "stdout": want STDOUT or STDERR`},
		{"log", MethodInstallerLog, base(func(e *Event) { e.Stream = StreamStderr }), ""},
		{"unknown method", "machine/log", base(func(e *Event) {}), `method "machine/log": want one of`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.method, c.ev)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("Validate = %v; want nil", err)
			case c.wantErr != "" && (err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte(c.wantErr))):
				t.Fatalf("Validate = %v; want %q", err, c.wantErr)
			}
			if got := Known(c.method); got != (c.method != "machine/log") {
				t.Errorf("Known(%q) = %v", c.method, got)
			}
		})
	}
}

func TestParseRuntimeID(t *testing.T) {
	cases := []struct {
		in      string
		want    RuntimeID
		wantErr bool
	}{
		{"ws:env:me", RuntimeID{"ws", "env", "me"}, false},
		{"ws::me", RuntimeID{"ws", "", "me"}, false},
		{"ws:env", RuntimeID{}, true},
		{"a:b:c:d", RuntimeID{}, true},
	}
	for _, c := range cases {
		got, err := ParseRuntimeID(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ParseRuntimeID(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.wantErr)
		}
		if err == nil && got.String() != c.in {
			t.Errorf("String() = %q; want %q", got.String(), c.in)
		}
	}
}

func TestErrorSentences(t *testing.T) {
	cause := errors.New("boom")
	cases := []struct {
		err  error
		want string
	}{
		{ErrCouldNotStart("x", cause), "Installation of 'x' could not start: boom"},
		{ErrExitCode("x", 3), "Exit code for 'x' installation is '3' while expected to be 0"},
		{ErrTimeoutCompleted("x"), "Timeout reached before installation of 'x' completed"},
		{ErrTimeoutFinished("x"), "Timeout reached before installation of 'x' finished"},
		{ErrScriptFailed("x", 2), "Installation 'x' failed, script exit code is 2"},
		{ErrServersNotAvailable("x"), "Process of installation 'x' exit code is 0 but servers are not available"},
		{ErrInterrupted("x", cause), "Installation of 'x' interrupted: boom"},
	}
	for _, c := range cases {
		if c.err.Error() != c.want {
			t.Errorf("got %q; want %q", c.err, c.want)
		}
	}
	if !errors.Is(ErrInterrupted("x", cause), cause) || !errors.Is(ErrCouldNotStart("x", cause), cause) {
		t.Error("the cause is not wrapped")
	}
	if !reflect.DeepEqual(LostText(2), "[porthole] 2 log line(s) lost: the bootstrapper's spool was full while the master could not be reached") {
		t.Error(LostText(2))
	}
}
