package proc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Group is a process group, named by its id: the pid of the session
// leader Start started.
type Group int

// Signal sends sig to every member of the group. A group with no member
// left is not an error.
func (g Group) Signal(sig syscall.Signal) error {
	if err := unix.Kill(-int(g), sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// Alive reports whether the group has a live member; zombies (dead,
// waiting for their parent to reap them) do not count.
func (g Group) Alive() bool {
	if err := unix.Kill(-int(g), 0); errors.Is(err, unix.ESRCH) {
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
		if pg, state, ok := parseStat(stat); ok && pg == int(g) && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// pollGroup is how often Wait looks at the group: there is no event for
// the last member of a group exiting when it is not our child.
const pollGroup = 10 * time.Millisecond

// Wait returns once the group has no live member, or ctx's cause when
// ctx ends first.
func (g Group) Wait(ctx context.Context) error {
	t := time.NewTicker(pollGroup)
	defer t.Stop()
	for g.Alive() {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	return nil
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
