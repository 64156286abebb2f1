package testutil_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// The programs this test binary stands in for: echo prints its command
// line; parent re-executes itself (as porthole's entrypoint does) and
// prints what the child printed.
var programs = testutil.Programs{
	"echo": func(argv []string) int {
		fmt.Printf("%s %q\n", filepath.Base(argv[0]), argv[1:])
		return 3
	},
	"gorace": func(argv []string) int {
		fmt.Printf("GORACE=%q\n", os.Getenv("GORACE"))
		return 0
	},
	"parent": func(argv []string) int {
		if len(argv) > 1 && argv[1] == "child" {
			fmt.Printf("child %q\n", argv[2:])
			return 0
		}
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		out, err := exec.Command(exe, "child", "x").CombinedOutput()
		fmt.Printf("%s", out)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		return 0
	},
}

var bin string

func TestMain(m *testing.M) {
	bin = programs.Setup()
	goleak.VerifyTestMain(m, goleak.Cleanup(testutil.Exit))
}

func TestPrograms(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wantRace := `GORACE=""`
	if testutil.Race {
		wantRace = `GORACE="atexit_sleep_ms=50"` // for its children
	}
	cases := []struct {
		name     string
		path     string
		args     []string
		env      []string
		wantOut  string
		wantCode int
	}{
		{"by link name", filepath.Join(bin, "echo"), []string{"a", "-b"}, testutil.CleanEnv(), `echo ["a" "-b"]` + "\n", 3},
		{"by variable", exe, []string{"a"}, testutil.CleanEnv(testutil.EnvProgram + "=echo"), fmt.Sprintf("%s [\"a\"]\n", filepath.Base(exe)), 3},
		// The parent's child gets the variable though the test gave the
		// parent none.
		{"re-executing itself", filepath.Join(bin, "parent"), nil, testutil.CleanEnv(testutil.EnvProgram), `child ["x"]` + "\n", 0},
		{"quick exit under the race detector", filepath.Join(bin, "gorace"), nil, testutil.CleanEnv("GORACE"), wantRace, 0},
		{"unknown program", exe, []string{"a"}, testutil.CleanEnv(testutil.EnvProgram + "=nope"), "names no program", 2},
		// Run as no program with arguments: refused, not the tests again.
		{"no program", exe, []string{"agent", "-listen", "x"}, testutil.CleanEnv(testutil.EnvProgram), "as no program", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.path, tc.args...)
			cmd.Env = tc.env
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			code := 0
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || !strings.Contains(string(out), tc.wantOut) {
				t.Fatalf("exit %d, output %q; want %d, %q", code, out, tc.wantCode, tc.wantOut)
			}
		})
	}
}

func TestCleanEnv(t *testing.T) {
	t.Setenv("PORTHOLE_TOKEN", "secret")
	t.Setenv("CHE_MACHINE_TOKEN", "secret")
	t.Setenv("HTTPS_PROXY", "http://proxy")
	t.Setenv("TMUX", "/tmp/tmux")
	t.Setenv("KEEP_ME", "1")
	t.Setenv("DROP_ME", "1")
	env := testutil.CleanEnv("DROP_ME", "SHELL=/bin/sh", "PS1=a=b ")
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PORTHOLE_TOKEN" || k == "CHE_MACHINE_TOKEN" || k == "HTTPS_PROXY" || k == "TMUX" || k == "DROP_ME" {
			t.Errorf("CleanEnv kept %s", kv)
		}
	}
	for _, want := range []string{"KEEP_ME=1", "SHELL=/bin/sh", "PS1=a=b "} {
		if !slices.Contains(env, want) {
			t.Errorf("CleanEnv lacks %s", want)
		}
	}
	if n := len(slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return !strings.HasPrefix(kv, "SHELL=") })); n != 1 {
		t.Errorf("%d SHELL= entries; want 1", n)
	}
}

func TestWaiting(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := testutil.Recv(t, "a value", ch); got != 7 {
		t.Fatalf("Recv = %d; want 7", got)
	}
	done := make(chan struct{})
	close(done)
	testutil.Recv(t, "a closed channel", done)
	n := 0
	testutil.WaitFor(t, "three polls", func() bool { n++; return n == 3 })
	if testutil.Eventually(0, func() bool { return false }) {
		t.Fatal("Eventually of a false condition = true")
	}
}

func TestConfigAndPort(t *testing.T) {
	path := testutil.Config(t, `[]`)
	if b, err := os.ReadFile(path); err != nil || string(b) != "[]" {
		t.Fatalf("config: %q, %v", b, err)
	}
	if p := testutil.FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
	if a := testutil.FreeAddr(t); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q", a)
	}
	var b testutil.SyncBuffer
	fmt.Fprint(&b, "x")
	if b.String() != "x" {
		t.Fatalf("SyncBuffer = %q", b.String())
	}
}
