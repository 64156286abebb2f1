package cli_test

// The tmux driver of the terminal tests: a private tmux server whose only
// pane runs `porthole exec -it`, typed into, resized and read back.

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireTmux fails (never skips) when tmux is missing: CI installs it.
func requireTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux not installed: apt-get install tmux")
	}
}

type tmux struct {
	t      *testing.T
	socket string
	env    []string
}

const pane = "e2e" // the session, and so its only pane

func (s *tmux) run(args ...string) string {
	s.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-L", s.socket}, args...)...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// newTmux starts a private tmux server whose only pane runs script (with
// /bin/sh) in a 100x30 window, and kills the server at cleanup.
func newTmux(t *testing.T, script string) *tmux {
	t.Helper()
	requireTmux(t)
	s := &tmux{t: t, socket: fmt.Sprintf("porthole-e2e-%d-%s", os.Getpid(), randHex(4))}
	s.env = append(baseEnv(), "SHELL=/bin/sh")
	if os.Getenv("TERM") == "" || os.Getenv("TERM") == "dumb" {
		s.env = append(s.env, "TERM=xterm-256color")
	}
	s.run("-f", os.DevNull, "new-session", "-d", "-s", pane, "-x", "100", "-y", "30", script)
	socketPath := s.display("#{socket_path}")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pane at the end:\n%s", s.capture())
		}
		cmd := exec.Command("tmux", "-L", s.socket, "kill-server")
		cmd.Env = s.env
		cmd.Run()
		if strings.Contains(socketPath, s.socket) {
			os.Remove(socketPath) // tmux leaves it behind
		}
	})
	return s
}

func (s *tmux) capture() string {
	cmd := exec.Command("tmux", "-L", s.socket, "capture-pane", "-p", "-J", "-t", pane)
	cmd.Env = s.env
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// typeLine types text and Enter into the pane.
func (s *tmux) typeLine(text string) {
	s.t.Helper()
	s.run("send-keys", "-t", pane, "-l", text)
	s.run("send-keys", "-t", pane, "Enter")
}

// waitFor waits until the pane shows re and returns the first match.
func (s *tmux) waitFor(re string, d time.Duration) []string {
	s.t.Helper()
	if m := s.tryWaitFor(re, d); m != nil {
		return m
	}
	s.t.Fatalf("pane did not show %q within %s:\n%s", re, d, s.capture())
	return nil
}

func (s *tmux) tryWaitFor(re string, d time.Duration) []string {
	rx := regexp.MustCompile(re)
	var m []string
	waitUntil(d, func() bool {
		m = rx.FindStringSubmatch(s.capture())
		return m != nil
	})
	return m
}

func (s *tmux) display(format string) string {
	s.t.Helper()
	return strings.TrimSpace(s.run("display-message", "-p", "-t", pane, format))
}

// localLflag returns the local mode flags of the pane's terminal.
func (s *tmux) localLflag() uint32 {
	s.t.Helper()
	path := s.display("#{pane_tty}")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		s.t.Fatalf("open pane tty: %v", err)
	}
	defer unix.Close(fd)
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		s.t.Fatalf("TCGETS %s: %v", path, err)
	}
	return tio.Lflag
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// paneScript runs `porthole exec -url URL ARGS...` in the pane and,
// once it exits, prints its exit status, whether the terminal settings are
// exactly those from before (raw mode restored), and the icanon flag; then
// keeps the pane open.
func paneScript(a *agentProc, args ...string) string {
	cli := []string{"PORTHOLE_TOKEN=" + a.token, shQuote(bin), "exec", "-url", shQuote(a.url)}
	for _, arg := range args {
		cli = append(cli, shQuote(arg))
	}
	return strings.Join([]string{
		"before=$(stty -g)",
		strings.Join(cli, " "),
		"code=$?",
		"after=$(stty -g)",
		"echo CLI-EXIT=$code",
		`if [ "$before" = "$after" ]; then echo TTY-RESTORED; else echo TTY-CHANGED; fi`,
		"echo TTY-MODE=$(stty -a | grep -Eo -- '-?icanon')",
		"sleep 3600",
	}, "; ")
}

// checkRestored waits up to d for the pane's report that the CLI exited,
// and checks the status is want (-1: any failure) and the terminal is as
// it was before the CLI started.
func (s *tmux) checkRestored(want int, d time.Duration) {
	s.t.Helper()
	m := s.waitFor(`CLI-EXIT=(\d+)\s+(TTY-\w+)\s+TTY-MODE=(\S+)`, d)
	if code, _ := strconv.Atoi(m[1]); want >= 0 && code != want || want < 0 && code == 0 {
		s.t.Errorf("CLI exit status %s, want %d", m[1], want)
	}
	if m[2] != "TTY-RESTORED" || m[3] != "icanon" {
		s.t.Errorf("terminal after the CLI exited: %s, %s; want TTY-RESTORED and icanon", m[2], m[3])
	}
	if fl := s.localLflag(); fl&unix.ICANON == 0 || fl&unix.ECHO == 0 {
		s.t.Errorf("pane terminal lflag %#x after exit: want ICANON and ECHO back", fl)
	}
}

// tmuxBefore reports whether `tmux -V` output v is older than major.minor.
func tmuxBefore(v string, major, minor int) bool {
	m := regexp.MustCompile(`(\d+)\.(\d+)`).FindStringSubmatch(v)
	if m == nil {
		return false // "tmux master", "tmux next-3.4": new
	}
	maj, _ := strconv.Atoi(m[1])
	mnr, _ := strconv.Atoi(m[2])
	return maj < major || maj == major && mnr < minor
}
