package testutil

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// EnvProgram names the program a re-executed test binary runs. Programs
// sets it in the child before running the program, so the program's own
// children inherit it: a process re-executing itself (os.Executable, or
// /proc/$PPID/exe from an installer script) is the test binary under
// another name, and must run the same program, not the tests.
const EnvProgram = "PORTHOLE_TEST_PROGRAM"

// Programs lets a test binary stand in for the programs it tests (the
// os/exec TestHelperProcess pattern): the end-to-end tests run the test
// binary itself as porthole or porthole-master, so no `go build` is
// needed and the children run under the race detector whenever the
// tests do. Each entry maps a program's name to its main, which gets the
// command line as os.Args holds it (argv[0] the name it was run as) and
// returns the exit code.
//
// The test binary runs program NAME when it was started under that name
// (argv[0] is a link named NAME, see Setup), or else when EnvProgram is
// NAME. TestMain calls Setup first, before anything else.
//
// Tests must not import the packages of these mains into testutil (cli's
// own tests would import themselves); TestMain passes them in:
//
//	var programs = testutil.Programs{"porthole": func(argv []string) int { return cli.Main(argv[1:], os.Environ()) }}
type Programs map[string]func(argv []string) int

// Setup, called first in TestMain, runs the program the process was
// started as and exits. In the test process it makes a temporary
// directory holding, for each program, a link of its name to the test
// binary, and returns it; exec.Command of filepath.Join(dir, NAME) then
// runs program NAME, whatever environment the test gives it. Exit removes
// the directory:
//
//	func TestMain(m *testing.M) {
//		bin = filepath.Join(programs.Setup(), "porthole")
//		goleak.VerifyTestMain(m, goleak.Cleanup(testutil.Exit))
//	}
//
// A test binary run with arguments that are not test flags, as no
// program, exits with status 2 and says why instead of running every test
// again in a child (which would start children of its own).
func (ps Programs) Setup() (dir string) {
	ps.run()
	shortRaceExit()
	exe, err := os.Executable()
	if err == nil {
		dir, err = os.MkdirTemp("", "porthole-programs-")
	}
	if dir != "" {
		linkDirs = append(linkDirs, dir)
	}
	for name := range ps {
		if err == nil {
			err = os.Symlink(exe, filepath.Join(dir, name))
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testutil: link the test binary as %v: %v\n", ps.names(), err)
		Exit(1)
	}
	return dir
}

// linkDirs are the directories Setup made, for Exit to remove. Only
// TestMain touches it, before and after the tests.
var linkDirs []string

// Exit removes the directories Setup made and exits with code: TestMain's
// last step (goleak.Cleanup(testutil.Exit)).
func Exit(code int) {
	for _, dir := range linkDirs {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// run runs the program this process was started as, if any, and exits.
func (ps Programs) run() {
	name := filepath.Base(os.Args[0])
	if _, ok := ps[name]; !ok {
		name = os.Getenv(EnvProgram)
	}
	if main, ok := ps[name]; ok {
		os.Setenv(EnvProgram, name) // for the program's children
		shortRaceExit()
		os.Exit(main(os.Args))
	}
	if name != "" {
		fmt.Fprintf(os.Stderr, "testutil: %s=%s names no program of this test binary (it has %v)\n", EnvProgram, name, ps.names())
		os.Exit(2)
	}
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-test.") {
		fmt.Fprintf(os.Stderr, "testutil: the test binary was run with arguments %q as no program: set %s to one of %v, or run it as a link named for one (Programs.Setup)\n",
			os.Args[1:], EnvProgram, ps.names())
		os.Exit(2)
	}
}

// shortRaceExit makes the race-enabled processes this one starts sleep
// 50 ms when they exit instead of the race runtime's default second
// (GORACE atexit_sleep_ms, time for other goroutines to finish a report):
// the tests start hundreds of short-lived programs. A GORACE naming
// atexit_sleep_ms itself is kept.
func shortRaceExit() {
	if g := os.Getenv("GORACE"); Race && !strings.Contains(g, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=50"))
	}
}

func (ps Programs) names() []string { return slices.Sorted(maps.Keys(ps)) }
