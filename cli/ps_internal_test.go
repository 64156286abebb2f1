package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/protocol"
)

func TestAge(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{42 * time.Second, "42s"},
		{5*time.Minute + 3*time.Second, "5m03s"},
		{3*time.Hour + 12*time.Minute, "3h12m"},
		{52 * time.Hour, "2d04h"},
	}
	for _, c := range cases {
		if got := age(c.d); got != c.want {
			t.Errorf("age(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

// The ps table: CPU and RSS only while running; AGE until the exit.
func TestWritePS(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exited, code := t0.Add(90*time.Second), 3
	ps := []protocol.ProcessInfo{
		{ID: "1", PID: 10, State: protocol.StateRunning, User: "app", StartedAt: t0, CPUSeconds: 1.5, RSSBytes: 3 << 20, Clients: 2, Name: "web", Argv: []string{"serve"}},
		{ID: "2", PID: 11, TTY: true, State: protocol.StateExited, StartedAt: t0, ExitedAt: &exited, ExitCode: &code, Argv: []string{"make"}},
	}
	var b strings.Builder
	if err := writePS(&b, ps, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ID PID TTY STATE EXIT USER CPU RSS AGE CLIENTS OUTPUT NAME COMMAND",
		`1 10 false running - app 1.50s 3.0MiB 1h00m 2 0 web ["serve"]`,
		`2 11 true exited 3 - - - 1m30s 0 0 - ["make"]`,
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	for i, l := range lines {
		if got := strings.Join(strings.Fields(l), " "); i >= len(want) || got != want[i] {
			t.Errorf("line %d: %q", i, got)
		}
	}
}

func TestProgressLine(t *testing.T) {
	if got := progressLine(12<<20, 3*time.Second); got != "12.0 MiB copied, 4.0 MiB/s" {
		t.Errorf("progressLine = %q", got)
	}
	if got := progressLine(0, 0); got != "0 bytes copied" {
		t.Errorf("progressLine at 0 = %q", got)
	}
	var p *progressReport // nil: counts nothing, stops quietly
	var b strings.Builder
	if w := p.count(&b); w != &b {
		t.Error("a nil progress wraps the writer")
	}
	p.stop()
}

func TestRemotePath(t *testing.T) {
	cases := []struct {
		arg, machine, path string
		remote             bool
	}{
		{":/srv", "", "/srv", true},
		{":rel", "", "rel", true},
		{"dev:/srv/app", "dev", "/srv/app", true},
		{"ws1:default:alice/dev:/srv", "ws1:default:alice/dev", "/srv", true},
		{"./a:/b", "", "./a:/b", false},
		{"/tmp/a:/b", "", "/tmp/a:/b", false},
		{"file", "", "file", false},
		{"a:b", "", "a:b", false},
	}
	for _, c := range cases {
		m, p, r := remotePath(c.arg)
		if m != c.machine || p != c.path || r != c.remote {
			t.Errorf("remotePath(%q) = %q, %q, %v; want %q, %q, %v", c.arg, m, p, r, c.machine, c.path, c.remote)
		}
	}
}
