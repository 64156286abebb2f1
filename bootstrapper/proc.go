package bootstrapper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// script is an installer's /bin/sh -c SCRIPT: the leader of its own
// session and process group (setsid), as Che runs it, so that stopping it
// reaches everything it started in that group.
type script struct {
	pgid   int
	out    *pipes
	exited chan struct{} // closed once the shell has exited and been reaped
	code   int           // its exit code once exited: 128+n when killed by signal n
}

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
	cmd := exec.Command("/bin/sh", "-c", src)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err := cmd.Start()
	stdout.Close()
	stderr.Close()
	if err != nil {
		unix.Close(r[0])
		unix.Close(r[1])
		return nil, err
	}
	s := &script{pgid: cmd.Process.Pid, exited: make(chan struct{})}
	s.out = o.add(inst, r[0], r[1])
	go func() {
		cmd.Wait()
		s.code = exitCode(cmd.ProcessState)
		close(s.exited)
	}()
	return s, nil
}

func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// groupAlive reports whether process group pgid has a live member; zombies
// (dead, waiting for their parent to reap them) do not count.
func groupAlive(pgid int) bool {
	if err := unix.Kill(-pgid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell: assume so
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if g, state, ok := parseStat(stat); ok && g == pgid && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// parseStat returns the process group and state from /proc/PID/stat:
// "pid (comm) state ppid pgrp ...", where comm may hold spaces and ')'.
func parseStat(stat []byte) (pgrp int, state byte, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	g, err := strconv.Atoi(string(f[2]))
	return g, f[0][0], err == nil
}

// stopGroups stops the process groups: SIGTERM, up to grace for every
// member to exit, then SIGKILL for what is left.
func stopGroups(pgids []int, grace time.Duration) {
	var live []int
	for _, g := range pgids {
		if err := unix.Kill(-g, unix.SIGTERM); !errors.Is(err, unix.ESRCH) {
			live = append(live, g)
		}
	}
	var wg sync.WaitGroup
	for _, g := range live {
		wg.Go(func() {
			if waitGroupGone(g, grace) {
				return
			}
			unix.Kill(-g, unix.SIGKILL)
			waitGroupGone(g, 5*time.Second)
		})
	}
	wg.Wait()
}

// waitGroupGone polls until group g has no live member (there is no event
// for that) or d has passed, and reports whether it is gone.
func waitGroupGone(g int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for groupAlive(g) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
