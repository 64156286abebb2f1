// Package entrypoint makes porthole a correct PID 1 for a container.
//
// Reaping and exit codes do not mix in one process: a reaper that calls
// wait(-1) steals the status that exec.Cmd.Wait is waiting for (Gitpod and
// Coder both broke exit codes that way, and both moved to two processes).
// So porthole splits the job. The first process, PID 1 (or, outside a PID
// namespace, a child subreaper), only reaps and forwards signals; it
// re-executes itself as the worker (RunInit), which serves the agent, runs
// the bootstrapper and runs the chained command (Work) with ordinary
// exec.Cmd.Wait calls on its own children.
// Orphans are reparented to the first process, never to the worker, so
// the worker's waits can never race a reaper.
package entrypoint

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/internal/proc"
)

// EnvRole marks the re-executed worker process.
const EnvRole = "PORTHOLE_ENTRYPOINT_ROLE"

// RoleWorker is EnvRole's value in the worker.
const RoleWorker = "worker"

// Forwarded are the signals passed on to the worker, and by the worker to
// the chained command.
var Forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// RunInit is the first process of `porthole entrypoint ARGS`: it
// re-executes this binary as `porthole entrypoint ARGS` in the worker role
// (EnvRole), with the container's stdio, and runs Reaper on it. It
// returns the worker's exit code. The worker's environment is this
// process's without secrets; secrets ("NAME=VALUE", the tokens read from
// the container's environment) reach it on a pipe (proc.PassSecrets).
func RunInit(args []string, secrets []string) (int, error) {
	exe, err := proc.Executable()
	if err != nil {
		return 1, err
	}
	proc.ResetIgnoredSignals()
	worker := exec.Command(exe, append([]string{"entrypoint"}, args...)...)
	worker.Env = append(proc.ChildEnv(os.Environ()), EnvRole+"="+RoleWorker)
	worker.Stdin, worker.Stdout, worker.Stderr = os.Stdin, os.Stdout, os.Stderr
	r, err := proc.PassSecrets(worker, secrets)
	if err != nil {
		return 1, err
	}
	if r != nil {
		defer r.Close()
	}
	return Reaper(worker)
}

// Reaper runs the first process's loop: it starts worker, reaps every
// child that dies (orphans included) and forwards signals to the worker,
// until the worker exits; it returns the worker's exit code. Outside PID 1
// it makes this process a child subreaper first, so orphans of the
// worker's descendants still come here.
func Reaper(worker *exec.Cmd) (int, error) {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return 1, fmt.Errorf("become a child subreaper: %w", err)
		}
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, Forwarded...)
	defer signal.Stop(sigs)
	if err := worker.Start(); err != nil {
		return 1, fmt.Errorf("start the worker: %w", err)
	}
	pid := worker.Process.Pid
	// The loop below reaps the worker behind os.Process's back: signals go
	// by pid, which stays the worker's until this loop has reaped it.
	defer forward(sigs, func(sig os.Signal) { unix.Kill(pid, sig.(syscall.Signal)) })()
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 1, fmt.Errorf("wait: %w", err)
		case got == pid:
			reapAll()
			return proc.StatusCode(syscall.WaitStatus(ws)), nil
		}
	}
}

// reapAll collects the zombies already there, without blocking.
func reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// Chain runs the chained command as the worker's child with the
// container's stdio, forwarding the worker's signals to it, and returns
// its wait status once it exits.
func Chain(cmd *exec.Cmd, sigs <-chan os.Signal) (syscall.WaitStatus, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	stop := forward(sigs, func(sig os.Signal) { cmd.Process.Signal(sig) })
	err := cmd.Wait()
	stop()
	if cmd.ProcessState == nil {
		return 0, err
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus), nil
}

// forward passes every signal from sigs to send, in a goroutine of its
// own, until stop is called; stop returns once that goroutine has ended.
func forward(sigs <-chan os.Signal, send func(os.Signal)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case sig := <-sigs:
				send(sig)
			case <-done:
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
