package bootstrapper

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/internal/proc"
)

// script is an installer's /bin/sh -c SCRIPT: the leader of its own
// session and process group (setsid), as Che runs it, so that stopping it
// reaches everything it started in that group.
type script struct {
	pgid   proc.Group
	out    *pipes
	exited <-chan struct{} // closed once the shell has exited and been reaped
	child  *proc.Child
}

// code is the shell's exit code once exited: 128+n when killed by signal n.
func (s *script) code() int { return s.child.ExitCode() }

// startScript runs src with the bootstrapper's environment and working
// directory, stdin from /dev/null, and its stdout and stderr read by o.
func startScript(o *outputs, inst int, src string) (*script, error) {
	var r, w [2]int // stdout, stderr: read and write ends
	for i := range 2 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			for j := range i {
				unix.Close(r[j])
				unix.Close(w[j])
			}
			return nil, fmt.Errorf("pipe: %w", err)
		}
		r[i], w[i] = p[0], p[1]
		unix.SetNonblock(r[i], true) // the child's end stays blocking
	}
	stdout, stderr := os.NewFile(uintptr(w[0]), "stdout"), os.NewFile(uintptr(w[1]), "stderr")
	cmd, err := proc.Start(proc.Command{Argv: []string{"/bin/sh", "-c", src}, Env: proc.ChildEnv(os.Environ()), Stdout: stdout, Stderr: stderr})
	stdout.Close()
	stderr.Close()
	if err != nil {
		unix.Close(r[0])
		unix.Close(r[1])
		return nil, err
	}
	c := proc.Watch(cmd)
	return &script{pgid: proc.Group(c.Pid()), out: o.add(inst, r[0], r[1]), exited: c.Done(), child: c}, nil
}
