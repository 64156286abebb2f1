// Package proc is porthole's one place for process control: starting a
// child as the leader of its own session, signalling and stopping process
// groups (SIGTERM, a grace period, then SIGKILL), the shell's exit code
// (128 plus the signal), the running binary's own path and the environment
// children inherit. The agent, the bootstrapper and the entrypoint use it.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
)

// Command describes a child that leads its own session.
type Command struct {
	Argv []string
	// Env is the child's environment; nil means this process's own.
	Env []string
	// Dir is the working directory; empty means this process's own.
	Dir string
	// Cred is the user and groups the child runs as; nil means ours.
	Cred *syscall.Credential
	// Stdin, Stdout and Stderr are the child's stdio; nil is /dev/null.
	Stdin, Stdout, Stderr *os.File
	// Ctty makes Stdin, a terminal, the session's controlling terminal.
	Ctty bool
}

// Start starts c as the leader of a new session (setsid), and so of a new
// process group whose id is its pid: signals can address everything it
// starts, and it never shares our controlling terminal. Its signals have
// their default dispositions even where ours are ignored (signals.go). The
// caller waits for the returned command.
func Start(c Command) (*exec.Cmd, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("empty argv")
	}
	ResetIgnoredSignals()
	cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.Env = c.Env
	cmd.Dir = c.Dir
	// A nil *os.File in an io.Reader or io.Writer would not be nil.
	if c.Stdin != nil {
		cmd.Stdin = c.Stdin
	}
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	}
	if c.Stderr != nil {
		cmd.Stderr = c.Stderr
	}
	// Ctty is the child's fd 0, its stdin.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: c.Cred, Setctty: c.Ctty}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// StatusCode is the shell's view of a wait status: the exit code, or 128
// plus the signal that killed the process.
func StatusCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// ExitCode is StatusCode of a process that was waited for (an
// *exec.ExitError carries one): the exit code, or 128 plus the signal.
func ExitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		return StatusCode(ws)
	}
	return ps.ExitCode()
}

// Executable returns the path of the running binary, to re-execute it:
// os.Executable, which needs /proc, else os.Args[0] looked up in $PATH.
func Executable() (string, error) {
	exe, err := os.Executable()
	if err == nil {
		return exe, nil
	}
	if exe, err = exec.LookPath(os.Args[0]); err != nil {
		return "", fmt.Errorf("find own binary (no /proc, and %q not found): %w", os.Args[0], err)
	}
	return exe, nil
}

// Secret environment variables: the agent's token, the machine token for
// porthole-master and Che's machine token (the bootstrapper's). porthole
// reads them at start, removes them from its own environment and passes
// them to no child (see secrets.go).
const (
	EnvToken           = "PORTHOLE_TOKEN"
	EnvMachineToken    = "PORTHOLE_MACHINE_TOKEN"
	EnvCheMachineToken = "CHE_MACHINE_TOKEN"
)

// SecretEnv lists every secret variable porthole reads.
var SecretEnv = []string{EnvToken, EnvMachineToken, EnvCheMachineToken}

// ChildEnv is the environment a child inherits from environ (typically
// os.Environ()): all of it but the secret variables (SecretEnv),
// EnvSecretsFD and the variables named in drop.
func ChildEnv(environ []string, drop ...string) []string {
	var out []string
	names := append(append(slices.Clone(SecretEnv), EnvSecretsFD), drop...)
next:
	for _, kv := range environ {
		for _, k := range names {
			if strings.HasPrefix(kv, k+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
