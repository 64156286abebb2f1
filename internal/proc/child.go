package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// Child is a started command and the goroutine that waits for it. The
// goroutine ends once the command has exited and been reaped; whoever
// holds the Child waits for Done.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of cmd.Wait, once done
}

// Watch waits for cmd, which has been started, in a goroutine of its own.
func Watch(cmd *exec.Cmd) *Child {
	c := &Child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c
}

// Pid is the child's process id; for a child from Start, also its Group.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is what cmd.Wait returned: nil for exit code 0, an *exec.ExitError
// otherwise. Only valid once Done is closed.
func (c *Child) Err() error { return c.err }

// ExitCode is the child's exit code, 128 plus the signal that killed it.
// Only valid once Done is closed.
func (c *Child) ExitCode() int {
	if c.cmd.ProcessState == nil {
		return -1
	}
	return ExitCode(c.cmd.ProcessState)
}

// Signal sends sig to the child alone (not its group). Once the child has
// been reaped it does nothing: its pid may name another process by then.
func (c *Child) Signal(sig syscall.Signal) error {
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Wait returns nil once the child has exited and been reaped, or ctx's
// cause when ctx ends first.
func (c *Child) Wait(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
