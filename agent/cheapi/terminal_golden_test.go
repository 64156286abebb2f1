package cheapi_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/cheapi"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
)

// termShell writes the recordings' wrapper: a bash with a fixed prompt
// and environment (README of the recordings).
func termShell(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "shell")
	script := "#!/bin/sh\nexec env -i HOME=" + home + " TERM=xterm PATH=/usr/bin:/bin LANG=C.UTF-8 PS1='$ ' /bin/bash --norc --noprofile\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// termGolden replays a terminal-agent conversation and returns Che's and
// porthole's output (every text frame, concatenated: a PTY's reads cut
// the output anywhere) and their close codes.
func termGolden(t *testing.T, name string, edit ...func([]step) []step) (che, got string, cheClose, gotClose int) {
	return termGoldenSync(t, name, false, edit...)
}

// termGoldenSync is termGolden; with sync, each pause of the script
// (sleep_ms) waits instead until porthole's output has caught up with
// what Che's agent had sent when the client went on: the pauses are
// there to let the shell act (start a command before it is hung up).
func termGoldenSync(t *testing.T, name string, sync bool, edit ...func([]step) []step) (che, got string, cheClose, gotClose int) {
	t.Helper()
	dir := filepath.Join(goldenDir(t), "terminal-agent")
	steps := readScript(t, filepath.Join(dir, name+".script.json"))
	for _, e := range edit {
		steps = e(steps)
	}
	want := received(readRecords(t, filepath.Join(dir, name+".jsonl")))
	clk := clocktest.New()
	c := startChe(t, cheapi.Options{TerminalShell: termShell(t)}, agent.Options{Clock: clk})
	p := dial(t, c.url("ws", "/pty"))
	p.onWaitClose = func() {
		// A command the shell starts as the hang-up arrives may outlive
		// the shell and hold the terminal: the agent then closes the
		// session after its exit drain (1 s by its clock, moved here).
		proc, ok := c.a.Lookup("1")
		if !ok {
			return
		}
		defer func() {
			if t.Failed() {
				t.Logf("DEBUG info %+v pending %d", proc.Info(), clk.Pending())
			}
		}()
		testutil.WaitFor(t, "the shell to exit, or the session to end", func() bool {
			select {
			case <-proc.Done():
				return true
			default:
			}
			return proc.Info().ExitedAt != nil && clk.Pending() > 0
		})
		clk.Advance(time.Second)
	}
	if sync {
		recs := readRecords(t, filepath.Join(dir, name+".jsonl"))
		p.onSleep = func(i int) {
			sends := 0 // the client's messages before the pause
			for _, st := range steps[:i] {
				if st.Send != nil || st.SendRawBinary != nil || st.Close != nil {
					sends++
				}
			}
			var before string // Che's output before the next message
			for _, r := range recs {
				if r.Dir == "send" {
					if sends == 0 {
						break
					}
					sends--
				}
				if r.Dir == "recv" && r.Type == "text" {
					before += r.Data
				}
			}
			for !strings.HasPrefix(normTerminal(p.text()), normTerminal(before)) {
				p.pull(fmt.Sprintf("step %d: the output Che had sent by then, %q", i, before))
			}
		}
	}
	p.play(steps)
	for _, r := range want {
		switch r.Type {
		case "text":
			che += r.Data
		case "close":
			cheClose = r.Code
		}
	}
	for _, r := range p.got {
		switch r.Type {
		case "text":
			if !utf8.ValidString(r.Data) {
				t.Errorf("text frame is not UTF-8: %q", r.Data)
			}
		case "binary":
			t.Errorf("binary frame: %q", r.Data)
		case "close":
			gotClose = r.Code
		}
	}
	return che, p.text(), cheClose, gotClose
}

// sameTerminal compares terminal output. Readline redraws its line
// ("\r\x1b[K\r$ ") when SIGWINCH arrives while it waits at the prompt;
// whether the signal or the next input wins is a race in Che's agent as
// in porthole's, so redraws are not compared.
func sameTerminal(che, got string) bool { return normTerminal(che) == normTerminal(got) }

// A shell hung up while it runs a command may still switch bracketed
// paste on for the next prompt before it exits: that trailing toggle is
// not compared either.
func normTerminal(s string) string {
	return strings.TrimSuffix(strings.ReplaceAll(s, "\r\x1b[K\r$ ", ""), "\x1b[?2004h")
}

func checkTerminal(t *testing.T, name string) {
	che, got, cc, gc := termGoldenSync(t, name, true)
	if !sameTerminal(che, got) {
		t.Errorf("output differs:\n che:      %q\n porthole: %q", che, got)
	}
	if cc != gc {
		t.Errorf("close code %d, che %d", gc, cc)
	}
}

// TestGoldenT1Basic: initial size 200x60, resize [80,24], float resize,
// UTF-8 echo, TERM=xterm, exit closes with 1000.
func TestGoldenT1Basic(t *testing.T) { checkTerminal(t, "t1-basic") }

// TestGoldenT2CloseMessage: {"type":"close"} hangs up the shell; close 1000.
func TestGoldenT2CloseMessage(t *testing.T) { checkTerminal(t, "t2-close-message") }

// TestGoldenT4InvalidJSONAndBinaryIgnored: junk, a binary frame, data
// that is not a string, a resize that is not numbers: all ignored.
func TestGoldenT4InvalidJSONAndBinaryIgnored(t *testing.T) {
	checkTerminal(t, "t4-invalid-json-and-binary-ignored")
}

// TestGoldenT6LargeOutput: 27 KB of 3-byte characters, every frame valid
// UTF-8 (termGolden checks each), the same bytes as Che's.
func TestGoldenT6LargeOutput(t *testing.T) {
	checkTerminal(t, "t6-large-output-and-utf8-boundaries")
}

// TestGoldenT7ClientCloseFrame: the client's close frame is answered with
// an empty one (1005), as Che does.
func TestGoldenT7ClientCloseFrame(t *testing.T) { checkTerminal(t, "t7-client-close-frame") }

// TestGoldenT3UnknownTypeKeepsReading: after {"type":"foo"} Che's agent
// stops reading the socket (the next command never runs, the client's
// close is never answered). porthole ignores the unknown type and goes on.
func TestGoldenT3UnknownTypeKeepsReading(t *testing.T) {
	output := "\rstill-reading\r\n"
	che, got, cc, gc := termGolden(t, "t3-unknown-type-stops-input", func(s []step) []step {
		// The recording waited for the echo of the command (which Che
		// never sent); porthole also runs it: wait for its output too.
		i := len(s) - 2 // before the client's close
		return append(s[:i:i], append([]step{{Wait: &output}}, s[i:]...)...)
	})
	if strings.Contains(che, "still-reading\r\n") || cc != 0 {
		t.Fatalf("the recording no longer shows Che's stop: %q close %d", che, cc)
	}
	if !strings.Contains(got, "echo still-reading\r\n") || !strings.Contains(got, output) {
		t.Errorf("the command after the unknown type did not run: %q", got)
	}
	if gc != 1005 {
		t.Errorf("client's close answered with %d, want 1005", gc)
	}
}

// TestGoldenT5InvalidUTF8Output: after a byte that is not UTF-8, Che's
// agent sent an empty frame and lost or held back what followed (three
// runs, three outputs). porthole replaces the byte by U+FFFD and loses
// nothing.
func TestGoldenT5InvalidUTF8Output(t *testing.T) {
	// Each pause of the script let the shell print its prompt before the
	// next command was typed; under load 300 ms may not, and the typed
	// command is echoed before the prompt. Here each pause waits for the
	// prompt instead.
	prompt := "$ "
	che, got, _, gc := termGolden(t, "t5-invalid-utf8-output", func(s []step) []step {
		for i := range s {
			if s[i].SleepMS != nil {
				s[i] = step{Wait: &prompt}
			}
		}
		return s
	})
	if strings.Contains(che, "a\ufffdb") {
		t.Fatalf("the recording no longer shows Che's loss: %q", che)
	}
	for _, want := range []string{"a\ufffdb\r\nafter-invalid\r\n", "\rnext-command\r\n", "exit\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q: %q", want, got)
		}
	}
	if gc != 1000 {
		t.Errorf("close %d, want 1000", gc)
	}
}

// TestGoldenT8ResizeOneElement: {"type":"resize","data":[80]} killed
// Che's whole terminal-agent (1006). porthole ignores the resize and the
// shell goes on.
func TestGoldenT8ResizeOneElement(t *testing.T) {
	exit := `{"type":"data","data":"exit\r"}`
	che, got, cc, gc := termGolden(t, "t8-resize-one-element", func(s []step) []step {
		// The recording ends waiting for the close of the crash; here
		// the shell is alive, so it is told to exit first.
		prompt := "$ "
		return append(s[:len(s)-1], step{Wait: &prompt}, step{Send: &exit}, s[len(s)-1])
	})
	if strings.Contains(che, "alive") || cc != 0 {
		t.Fatalf("the recording no longer shows Che's crash: %q close %d", che, cc)
	}
	if !strings.Contains(got, "\ralive\r\n") {
		t.Errorf("the shell did not answer after the bad resize: %q", got)
	}
	if gc != 1000 {
		t.Errorf("close %d after exit, want 1000", gc)
	}
}
