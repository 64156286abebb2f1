package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// A started process keeps what it needs for its life and nothing of its
// start: no exec.Cmd (argv, environment, attributes), one reader slot per
// viewer in its ring. Every idle session would otherwise carry them
// (docs/performance.md, "Lean session").
func TestProcessKeepsNoStartState(t *testing.T) {
	o := Options{MaxProcesses: 4, Logger: slog.New(slog.DiscardHandler)}
	o.setDefaults()
	m := newManager(&o)
	defer m.shutdown(testutil.Ctx(t), time.Second)
	for _, tty := range []bool{true, false} {
		p, err := m.start(protocol.StartParams{Argv: []string{"sh", "-c", "exit 3"}, TTY: tty})
		if err != nil {
			t.Fatal(err)
		}
		if p.child.cmd != nil {
			t.Errorf("tty %v: the process keeps its exec.Cmd", tty)
		}
		if p.child.process == nil || p.child.process.Pid != p.pid {
			t.Fatalf("tty %v: the process's handle is %v; want pid %d", tty, p.child.process, p.pid)
		}
		<-p.done
		if info := p.Info(false); info.ExitCode == nil || *info.ExitCode != 3 {
			t.Errorf("tty %v: exit code %v; want 3", tty, info.ExitCode)
		}
	}
}
