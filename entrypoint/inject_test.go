package entrypoint_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/cli"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// The test binary stands in for porthole (testutil.Programs), but for
// TestInjectIntoBusyboxRoot: see buildPorthole.
var programs = testutil.Programs{"porthole": func(argv []string) int { return cli.Main(argv[1:], os.Environ()) }}

// bin runs porthole: a link to the test binary.
var bin string

func TestMain(m *testing.M) {
	bin = filepath.Join(programs.Setup(), "porthole")
	goleak.VerifyTestMain(m, goleak.Cleanup(testutil.Exit))
}

const token = "inject-test-token"

// buildPorthole builds the static binary into dir. TestInjectIntoBusyboxRoot
// needs a real build, not the test binary: it runs porthole in a root
// holding nothing but busybox, and a test binary built with -race is
// dynamically linked (cgo), so it could not start there.
func buildPorthole(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "porthole")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "github.com/porthole-dev/porthole/cmd/porthole")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// busyboxRoot builds a root filesystem holding nothing but a static
// busybox: no libc, no cp of its own used by porthole.
func busyboxRoot(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not installed: apt-get install busybox-static (CI installs it)")
	}
	if out, _ := exec.Command("file", "-L", bb).Output(); len(out) > 0 && !bytes.Contains(out, []byte("statically linked")) {
		t.Fatalf("%s is not static (%s): apt-get install busybox-static", bb, out)
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "proc", "tmp", "porthole/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "sleep", "echo", "cat", "ls", "stty", "seq", "true", "ps", "kill"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// containerDev gives the root a /dev as container runtimes do: its own
// devpts instance with /dev/ptmx pointing into it, and /dev/null.
func containerDev(t *testing.T, root string) {
	t.Helper()
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%q: %v: %s", args, err, out)
		}
	}
	pts := filepath.Join(root, "dev/pts")
	null := filepath.Join(root, "dev/null")
	os.MkdirAll(pts, 0o755)
	os.WriteFile(null, nil, 0o666)
	run("mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts", pts)
	t.Cleanup(func() { exec.Command("umount", "-l", pts).Run() })
	run("mount", "--bind", "/dev/null", null)
	t.Cleanup(func() { exec.Command("umount", "-l", null).Run() })
	if err := os.Symlink("pts/ptmx", filepath.Join(root, "dev/ptmx")); err != nil {
		t.Fatal(err)
	}
}

// children returns the host pids whose parent is ppid, and how many of
// them are zombies.
func children(ppid int) (pids []int, zombies int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; cut at the last ')'.
		rest := string(b[bytes.LastIndexByte(b, ')')+2:])
		f := strings.Fields(rest)
		if len(f) < 2 || f[1] != strconv.Itoa(ppid) {
			continue
		}
		pids = append(pids, pid)
		if f[0] == "Z" {
			zombies++
		}
	}
	return pids, zombies
}

// TestInjectIntoBusyboxRoot is the injection story end to end: copy the
// binary into a "volume", bind it into a libc-free root filesystem, run
// porthole entrypoint as PID 1 of a new PID namespace chaining the image's
// own command, then use the terminal, reap orphans, and stop with SIGTERM.
func TestInjectIntoBusyboxRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root for mount, unshare and chroot (CI runs as root)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare not installed: apt-get install util-linux")
	}
	bin := buildPorthole(t, t.TempDir())
	root := busyboxRoot(t)
	volume := t.TempDir()

	// The init container's job: porthole copy into the shared volume.
	copyCmd := func() string {
		out, err := exec.Command(bin, "copy", "-to", volume).CombinedOutput()
		if err != nil {
			t.Fatalf("porthole copy: %v: %s", err, out)
		}
		return string(out)
	}
	if out := copyCmd(); !strings.Contains(out, "copied porthole") {
		t.Fatalf("first copy: %s", out)
	}
	if out := copyCmd(); !strings.Contains(out, "nothing written") {
		t.Fatalf("second copy is not a no-op: %s", out)
	}
	containerDev(t, root)
	mnt := filepath.Join(root, "porthole/bin")
	if out, err := exec.Command("mount", "--bind", "-o", "ro", volume, mnt).CombinedOutput(); err != nil {
		t.Fatalf("bind mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })

	// The sidecar: its entrypoint overridden to porthole entrypoint, its
	// original command after --.
	addr := testutil.FreeAddr(t)
	original := `echo original-started; trap 'echo got-term; exit 42' TERM; while true; do sleep 0.05; done`
	chroot, err := exec.LookPath("chroot")
	if err != nil {
		t.Fatal("chroot not found: apt-get install coreutils")
	}
	sidecar := exec.Command("unshare", "--pid", "--fork", "--mount-proc="+filepath.Join(root, "proc"),
		chroot, root, "/porthole/bin/porthole", "entrypoint", "-listen", addr, "-grace", "1s", "--", "/bin/sh", "-c", original)
	sidecar.Env = []string{"PATH=/bin", "PORTHOLE_TOKEN=" + token}
	var out testutil.SyncBuffer
	sidecar.Stdout, sidecar.Stderr = &out, &out
	if err := sidecar.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sidecar.Wait() }()
	t.Cleanup(func() {
		sidecar.Process.Kill()
		syscall.Kill(-sidecar.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(testutil.Wait):
		}
	})
	testutil.WaitFor(t, "the original command's output", func() bool { return strings.Contains(out.String(), "original-started") })
	testutil.WaitFor(t, "the agent's health endpoint", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	// porthole is PID 1 of the namespace: unshare's only child.
	var pid1 int
	testutil.WaitFor(t, "PID 1", func() bool {
		kids, _ := children(sidecar.Process.Pid)
		if len(kids) == 1 {
			pid1 = kids[0]
		}
		return pid1 != 0
	})
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid1)); strings.TrimSpace(string(comm)) != "porthole" {
		t.Fatalf("PID 1 is %q, not porthole", comm)
	}

	ctx := testutil.Ctx(t)
	c, err := client.Dial(ctx, client.Options{URL: "ws://" + addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A terminal through the agent, inside the busybox root.
	t.Run("terminal", func(t *testing.T) {
		p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"/bin/sh"}, TTY: true, Env: []string{"PS1=bb$ "}})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		p.Stdin.Write([]byte("echo pid1=$(cat /proc/1/comm); ls /porthole/bin; exit 3\n"))
		b, _ := io.ReadAll(p.Stdout)
		var xe *client.ExitError
		if err := p.Wait(); !errors.As(err, &xe) || xe.Code != 3 {
			t.Fatalf("shell exit = %v; want code 3", err)
		}
		for _, want := range []string{"pid1=porthole", "porthole.json"} {
			if !bytes.Contains(b, []byte(want)) {
				t.Fatalf("terminal output %q lacks %q", b, want)
			}
		}
	})

	// Hundreds of orphans reparented to PID 1 are reaped, while the agent's
	// own processes keep their exact exit codes.
	t.Run("orphans and exit codes", func(t *testing.T) {
		const orphans = 300
		storm, err := c.Start(ctx, protocol.StartParams{Argv: []string{"/bin/sh", "-c",
			fmt.Sprintf("i=0; while [ $i -lt %d ]; do (sleep 0.1 &); i=$((i+1)); done; echo spawned", orphans)}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Go(func() {
				p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"/bin/sh", "-c", fmt.Sprintf("sleep 0.0%d; exit %d", i%10, i%7)}})
				if err != nil {
					errs <- err
					return
				}
				defer p.Close()
				go io.Copy(io.Discard, p.Stderr)
				io.Copy(io.Discard, p.Stdout)
				err = p.Wait()
				code := 0
				var xe *client.ExitError
				if errors.As(err, &xe) {
					code = xe.Code
				} else if err != nil {
					errs <- err
					return
				}
				if code != i%7 {
					errs <- fmt.Errorf("process %d exited %d; want %d", i, code, i%7)
				}
			})
		}
		go io.Copy(io.Discard, storm.Stderr)
		sb, _ := io.ReadAll(storm.Stdout)
		if err := storm.Wait(); err != nil || !bytes.Contains(sb, []byte("spawned")) {
			t.Fatalf("orphan storm: %q, %v", sb, err)
		}
		storm.Close()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// PID 1's children are the worker and the orphans still asleep;
		// none stays a zombie.
		testutil.WaitFor(t, "orphans to be reaped", func() bool {
			kids, zombies := children(pid1)
			return zombies == 0 && len(kids) <= 1
		})
	})

	// SIGTERM to PID 1 reaches the chained command; the namespace exits
	// with its code.
	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 42 {
			t.Fatalf("sidecar exit = %v; want 42\n%s", err, out.String())
		}
	case <-time.After(testutil.Wait):
		t.Fatalf("sidecar did not exit within %s of SIGTERM\n%s", testutil.Wait, out.String())
	}
	if !strings.Contains(out.String(), "got-term") {
		t.Fatalf("the chained command never saw SIGTERM:\n%s", out.String())
	}
	exited <- nil // for the cleanup
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "level=ERROR") {
			t.Errorf("entrypoint logged an error: %s", sc.Text())
		}
	}
}
