package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait is the upper bound for anything the tests wait on.
const wait = 30 * time.Second

// startScript starts sh -c script in its own session with its stdout in
// a pipe, and waits for the script's first line, which says it is ready.
func startScript(t *testing.T, script string) *Child {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd, err := Start(Command{Argv: []string{"/bin/sh", "-c", script}, Stdout: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := Watch(cmd)
	t.Cleanup(func() {
		Group(c.Pid()).Signal(syscall.SIGKILL)
		<-c.Done()
	})
	r.SetReadDeadline(time.Now().Add(wait))
	if line, err := bufio.NewReader(r).ReadString('\n'); line != "ready\n" {
		t.Fatalf("script %q: first line %q, %v; want ready", script, line, err)
	}
	return c
}

// TestStop: every group gets SIGTERM; what ignores it gets SIGKILL once
// the grace period is over, and Stop returns when all are gone.
func TestStop(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		grace    time.Duration
		first    []syscall.Signal
		wantCode int
		// wantGrace: Stop cannot return before the grace period is over.
		wantGrace bool
		exited    bool // wait for the leader to exit before Stop
	}{
		{name: "exits on TERM", script: "echo ready; exec sleep 1000", grace: wait, wantCode: 128 + int(syscall.SIGTERM)},
		{name: "ignores TERM", script: "trap '' TERM; echo ready; sleep 1000", grace: 200 * time.Millisecond, wantCode: 128 + int(syscall.SIGKILL), wantGrace: true},
		{name: "member ignores TERM", script: "(trap '' TERM; echo ready; exec sleep 1000) & wait", grace: 200 * time.Millisecond, wantCode: 128 + int(syscall.SIGTERM), wantGrace: true},
		{name: "HUP first", script: "trap 'exit 7' HUP; trap '' TERM; echo ready; while :; do sleep 1; done", grace: wait, first: []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM}, wantCode: 7},
		{name: "already exited", script: "echo ready", grace: wait, exited: true, wantCode: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startScript(t, tc.script)
			g := Group(c.Pid())
			if tc.exited {
				c.Wait(waitCtx(t))
			}
			start := time.Now()
			Stop(context.Background(), tc.grace, []Target{g}, tc.first...)
			took := time.Since(start)
			if g.Alive() {
				t.Fatal("the group is still alive after Stop")
			}
			if tc.wantGrace && took < tc.grace {
				t.Errorf("Stop returned after %v, before the grace period of %v", took, tc.grace)
			}
			if err := c.Wait(waitCtx(t)); err != nil {
				t.Fatalf("the leader was not reaped: %v", err)
			}
			if got := c.ExitCode(); got != tc.wantCode {
				t.Errorf("exit code %d; want %d", got, tc.wantCode)
			}
		})
	}
}

// TestStopContext: when ctx ends before the grace period, what is left is
// killed then.
func TestStopContext(t *testing.T) {
	c := startScript(t, "trap '' TERM; echo ready; sleep 1000")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Stop(ctx, time.Hour, []Target{c})
	if err := c.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := c.ExitCode(), 128+int(syscall.SIGKILL); got != want {
		t.Errorf("exit code %d; want %d", got, want)
	}
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	t.Cleanup(cancel)
	return ctx
}

// TestExitCode: the shell's view, the same from a Child, an
// *exec.ExitError and a raw wait status.
func TestExitCode(t *testing.T) {
	tests := []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"exit 255", 255},
		{"kill -TERM $$", 128 + int(syscall.SIGTERM)},
		{"kill -KILL $$", 128 + int(syscall.SIGKILL)},
		{"kill -INT $$", 128 + int(syscall.SIGINT)},
	}
	for _, tc := range tests {
		t.Run(tc.script, func(t *testing.T) {
			err := exec.Command("/bin/sh", "-c", tc.script).Run()
			var ee *exec.ExitError
			switch {
			case tc.want == 0 && err != nil:
				t.Fatal(err)
			case tc.want != 0 && !errors.As(err, &ee):
				t.Fatalf("err = %v; want an *exec.ExitError", err)
			case ee != nil:
				if got := ExitCode(ee.ProcessState); got != tc.want {
					t.Errorf("ExitCode(ExitError) = %d; want %d", got, tc.want)
				}
				if got := StatusCode(ee.Sys().(syscall.WaitStatus)); got != tc.want {
					t.Errorf("StatusCode = %d; want %d", got, tc.want)
				}
			}
			cmd, err := Start(Command{Argv: []string{"/bin/sh", "-c", tc.script}})
			if err != nil {
				t.Fatal(err)
			}
			c := Watch(cmd)
			if err := c.Wait(waitCtx(t)); err != nil {
				t.Fatal(err)
			}
			if got := c.ExitCode(); got != tc.want {
				t.Errorf("Child.ExitCode = %d; want %d", got, tc.want)
			}
			if (c.Err() == nil) != (tc.want == 0) {
				t.Errorf("Child.Err = %v for exit code %d", c.Err(), tc.want)
			}
		})
	}
}

// TestStart: the child leads its own session and group, with the
// environment, directory, user and controlling terminal asked for.
func TestStart(t *testing.T) {
	dir := t.TempDir()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	tests := []struct {
		name string
		c    Command
		root bool // needs root to switch users
		want string
	}{
		{name: "env", c: Command{Argv: []string{"/bin/sh", "-c", "echo $A:${B:-unset}"}, Env: []string{"A=1"}}, want: "1:unset"},
		{name: "dir", c: Command{Argv: []string{"/bin/sh", "-c", "pwd"}, Dir: dir}, want: dir},
		{name: "user", c: Command{Argv: []string{"/bin/sh", "-c", "id -u; id -g"}, Cred: &syscall.Credential{Uid: 65534, Gid: 65534}}, root: true, want: "65534\n65534"},
		{name: "no controlling terminal", c: Command{Argv: []string{"/bin/sh", "-c", "(exec </dev/tty) 2>/dev/null && echo tty || echo none"}}, want: "none"},
		{name: "controlling terminal", c: Command{Argv: []string{"/bin/sh", "-c", "(exec </dev/tty) 2>/dev/null && echo tty || echo none"}, Stdin: tty, Ctty: true}, want: "tty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("switching users needs root")
			}
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			c := tc.c
			c.Stdout = w
			cmd, err := Start(c)
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			child := Watch(cmd)
			r.SetReadDeadline(time.Now().Add(wait))
			var out strings.Builder
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				if out.Len() > 0 {
					out.WriteByte('\n')
				}
				out.WriteString(sc.Text())
			}
			if err := child.Wait(waitCtx(t)); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("output %q; want %q (exit %d)", got, tc.want, child.ExitCode())
			}
		})
	}
}

// TestStartSession: the child leads a new session and process group.
func TestStartSession(t *testing.T) {
	c := startScript(t, "echo ready; exec sleep 1000")
	pid := c.Pid()
	if sid, err := unix.Getsid(pid); sid != pid {
		t.Errorf("session %d, %v; want the child's own, %d", sid, err, pid)
	}
	if pg, err := unix.Getpgid(pid); pg != pid {
		t.Errorf("process group %d, %v; want the child's own, %d", pg, err, pid)
	}
	if _, err := Start(Command{}); err == nil {
		t.Error("Start with no argv: no error")
	}
}

// TestChildEnv: the secrets and the named variables are gone, the rest is
// kept in order.
func TestChildEnv(t *testing.T) {
	environ := []string{"PATH=/bin", "PORTHOLE_TOKEN=t", "HOME=/root", "PORTHOLE_MACHINE_TOKEN=m", "CHE_MACHINE_TOKEN=c", "PORTHOLE_SECRETS_FD=3", "PORTHOLE_ENTRYPOINT_ROLE=worker", "PORTHOLE_TOKENS=kept", "PORTHOLE_URL=ws://x"}
	tests := []struct {
		name string
		drop []string
		want []string
	}{
		{"secrets", nil, []string{"PATH=/bin", "HOME=/root", "PORTHOLE_ENTRYPOINT_ROLE=worker", "PORTHOLE_TOKENS=kept", "PORTHOLE_URL=ws://x"}},
		{"secrets and role", []string{"PORTHOLE_ENTRYPOINT_ROLE"}, []string{"PATH=/bin", "HOME=/root", "PORTHOLE_TOKENS=kept", "PORTHOLE_URL=ws://x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChildEnv(environ, tc.drop...); !slices.Equal(got, tc.want) {
				t.Errorf("ChildEnv = %q; want %q", got, tc.want)
			}
		})
	}
	if got := ChildEnv(nil); got != nil {
		t.Errorf("ChildEnv(nil) = %q; want nil", got)
	}
}

// TestExecutable: the running binary, here the test binary.
func TestExecutable(t *testing.T) {
	exe, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.Executable()
	if exe != want {
		t.Errorf("Executable() = %q; want %q", exe, want)
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		stat  string
		pgrp  int
		state byte
		ok    bool
	}{
		{"12 (sh) S 1 12 12 0 -1", 12, 'S', true},
		{"13 (a b) c) Z 12 7 7 0", 7, 'Z', true},
		{"14 (sh S 1 12", 0, 0, false},
		{"15 (sh) S 1", 0, 0, false},
		{"16 (sh) SS 1 16", 0, 0, false},
		{"17 (sh) R 1 x", 0, 0, false},
	}
	for _, tc := range tests {
		pgrp, state, ok := parseStat([]byte(tc.stat))
		if ok != tc.ok || (ok && (pgrp != tc.pgrp || state != tc.state)) {
			t.Errorf("parseStat(%q) = %d, %q, %v; want %d, %q, %v", tc.stat, pgrp, state, ok, tc.pgrp, tc.state, tc.ok)
		}
	}
}

// TestGroupAlive: a group whose leader exited lives on in its members.
func TestGroupAlive(t *testing.T) {
	c := startScript(t, "sleep 1000 & echo ready")
	if err := c.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	g := Group(c.Pid())
	if !g.Alive() {
		t.Fatal("the group of a running sleep is not alive")
	}
	if err := g.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(waitCtx(t)); err != nil {
		t.Fatalf("the group is alive after SIGKILL: %v", err)
	}
	if err := g.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("signal to a gone group: %v; want nil", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("given up")
	cancel(cause)
	c2 := startScript(t, "echo ready; exec sleep 1000")
	if err := Group(c2.Pid()).Wait(ctx); err != cause {
		t.Errorf("Wait on a live group with an ended context = %v; want its cause", err)
	}
	if err := c2.Wait(ctx); err != cause {
		t.Errorf("Child.Wait with an ended context = %v; want its cause", err)
	}
}

// TestCloexecInherited (issue 11): a descriptor this process holds
// without close-on-exec, as one it inherited, reaches a child until
// CloexecInherited, and no longer after.
func TestCloexecInherited(t *testing.T) {
	file := filepath.Join(t.TempDir(), "root-only")
	if err := os.WriteFile(file, []byte("root-only-content\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(file, unix.O_RDONLY, 0) // no O_CLOEXEC: as inherited
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	read := func() string {
		out, _ := exec.Command("/bin/sh", "-c", fmt.Sprintf("cat /proc/self/fd/%d || cat <&%d", fd, fd)).CombinedOutput()
		return string(out)
	}
	if out := read(); !strings.Contains(out, "root-only-content") {
		t.Fatalf("control: the child could not read the inherited descriptor %d: %s", fd, out)
	}
	if err := CloexecInherited(); err != nil {
		t.Fatal(err)
	}
	if out := read(); strings.Contains(out, "root-only-content") {
		t.Fatalf("the child read descriptor %d after CloexecInherited: %s", fd, out)
	}
	// The descriptor itself is still open, for this process.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("descriptor %d closed: %v", fd, err)
	}
}

// TestPassSecrets: secrets reach a re-executed child on a pipe, not in
// its environment, and bad ones are refused with the variable named.
func TestPassSecrets(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `env; echo ==; cat <&"$`+EnvSecretsFD+`"`)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	r, err := PassSecrets(cmd, []string{"PORTHOLE_TOKEN=t1", "CHE_MACHINE_TOKEN=c1"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	env, piped, _ := strings.Cut(string(out), "==\n")
	if strings.Contains(env, "t1") || strings.Contains(env, "c1") || !strings.Contains(env, EnvSecretsFD+"=3") {
		t.Errorf("environment %q: want %s=3 and no secret", env, EnvSecretsFD)
	}
	if piped != "PORTHOLE_TOKEN=t1\nCHE_MACHINE_TOKEN=c1\n" {
		t.Errorf("pipe %q", piped)
	}
	for _, bad := range [][]string{{"HOME=/root"}, {"PORTHOLE_TOKEN=a\nb"}, {"PORTHOLE_TOKEN=" + strings.Repeat("x", MaxSecretsBytes)}} {
		cmd := exec.Command("true")
		cmd.Env = []string{}
		if _, err := PassSecrets(cmd, bad); err == nil {
			t.Errorf("PassSecrets(%.40q): no error", bad)
		}
	}
	if r, err := PassSecrets(exec.Command("true"), nil); r != nil || err != nil {
		t.Errorf("no secrets: %v, %v; want nothing", r, err)
	}
}

// TestReceiveSecrets: what PassSecrets sent comes back as environment
// entries, the descriptor is closed, and a bad descriptor or content is
// an error naming PORTHOLE_SECRETS_FD.
func TestReceiveSecrets(t *testing.T) {
	pipe := func(content string) int {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.WriteString(content)
		w.Close()
		fd, err := unix.Dup(int(r.Fd()))
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	fd := pipe("PORTHOLE_TOKEN=t1\n")
	got, err := ReceiveSecrets([]string{"A=1", EnvSecretsFD + "=" + strconv.Itoa(fd)})
	if err != nil || !slices.Equal(got, []string{"A=1", "PORTHOLE_TOKEN=t1"}) {
		t.Errorf("ReceiveSecrets = %q, %v", got, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Errorf("descriptor %d still open", fd)
	}
	if got, err := ReceiveSecrets([]string{"A=1"}); err != nil || !slices.Equal(got, []string{"A=1"}) {
		t.Errorf("without %s: %q, %v", EnvSecretsFD, got, err)
	}
	for _, bad := range []string{"x", "1", "-5", "99999", strconv.Itoa(pipe("HOME=/root\n")), strconv.Itoa(pipe(strings.Repeat("x", MaxSecretsBytes+1)))} {
		if _, err := ReceiveSecrets([]string{EnvSecretsFD + "=" + bad}); err == nil || !strings.Contains(err.Error(), EnvSecretsFD) {
			t.Errorf("%s=%s: %v; want an error naming it", EnvSecretsFD, bad, err)
		}
	}
}
