package agent

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/protocol"
)

// spawnSpec is what the one spawning seam needs to start a child.
type spawnSpec struct {
	argv []string
	env  []string
	dir  string
	cred *syscall.Credential
	tty  bool
	size protocol.WindowSize
}

// child is a started process and the agent's ends of its stdio.
type child struct {
	// cmd is the started command, kept only until done: then process.
	cmd *exec.Cmd
	// process is the started child, for its pid and its Wait. The
	// exec.Cmd that started it is not kept: its stdio are *os.File, so its
	// Wait would only add Process.Wait's result to it.
	process *os.Process
	// master is the PTY master (TTY mode): stdin and stdout at once.
	master *os.File
	// stdin, stdout, stderr are the agent's pipe ends (pipe mode).
	stdin, stdout, stderr *os.File
	// stdinRC is the raw stdin (master or pipe), for writes that must not
	// wait; nil if it has none.
	stdinRC syscall.RawConn
}

// done fills in what the agent keeps of a started child, and drops what
// it does not need once the child runs: the exec.Cmd, with its argv,
// environment (a copy of the agent's: a kilobyte or more) and attributes,
// which every idle session would otherwise keep.
func (c *child) done() *child {
	f := c.master
	if f == nil {
		f = c.stdin
	}
	if rc, err := f.SyscallConn(); err == nil {
		c.stdinRC = rc
	}
	c.process = c.cmd.Process
	c.cmd = nil
	return c
}

// spawn is the single place where the agent starts processes, through
// proc.Start: every child gets its own session (setsid), so that signals
// can address its whole process group and it never shares the agent's
// controlling terminal. A TTY child gets a fresh PTY as its controlling
// terminal, at its initial size, with IUTF8 set; a pipe child gets three
// pipes.
func spawn(s spawnSpec) (*child, error) {
	c := proc.Command{Argv: s.argv, Env: s.env, Dir: s.dir, Cred: s.cred}
	if s.tty {
		return spawnTTY(c, s.size)
	}
	return spawnPipes(c)
}

func spawnTTY(c proc.Command, size protocol.WindowSize) (*child, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open pty: %w", err)
	}
	defer tty.Close()
	// creack/pty's master is in blocking mode (it called Fd()); a blocking
	// read would pin an OS thread per session. Re-open it non-blocking so
	// the Go poller serves reads, writes and deadlines.
	master, err := pollable(ptmx)
	if err != nil {
		return nil, err
	}
	if err := setWinsize(master, size); err != nil {
		master.Close()
		return nil, err
	}
	if err := setIUTF8(tty); err != nil {
		master.Close()
		return nil, err
	}
	c.Stdin, c.Stdout, c.Stderr, c.Ctty = tty, tty, tty, true
	cmd, err := proc.Start(c)
	if err != nil {
		master.Close()
		return nil, err
	}
	return (&child{cmd: cmd, master: master}).done(), nil
}

func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty master non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func setIUTF8(tty *os.File) error {
	fd := int(tty.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("get termios: %w", err)
	}
	t.Iflag |= unix.IUTF8
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set termios: %w", err)
	}
	return nil
}

// setWinsize sets the terminal size through the poller-safe raw conn.
func setWinsize(master *os.File, s protocol.WindowSize) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	ws := &unix.Winsize{Row: s.Rows, Col: s.Cols, Xpixel: s.XPixel, Ypixel: s.YPixel}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil {
		return err
	}
	if ioErr != nil {
		return fmt.Errorf("set window size: %w", ioErr)
	}
	return nil
}

// veof returns the terminal's end-of-file character (normally ^D).
func veof(master *os.File) byte {
	rc, err := master.SyscallConn()
	if err != nil {
		return 4
	}
	c := byte(4)
	rc.Control(func(fd uintptr) {
		if t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err == nil && t.Cc[unix.VEOF] != 0 {
			c = t.Cc[unix.VEOF]
		}
	})
	return c
}

func spawnPipes(c proc.Command) (*child, error) {
	var files []*os.File // every end, for cleanup on failure
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, err
	}
	c.Stdin, c.Stdout, c.Stderr = inR, outW, errW
	cmd, err := proc.Start(c)
	if err != nil {
		closeAll()
		return nil, err
	}
	inR.Close()
	outW.Close()
	errW.Close()
	return (&child{cmd: cmd, stdin: inW, stdout: outR, stderr: errR}).done(), nil
}

// lookupCredential resolves a user name or numeric uid to the credential
// a child runs with (its primary group and supplementary groups).
func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, numErr := strconv.Atoi(name); numErr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	if uint32(uid) != uint32(os.Geteuid()) && os.Geteuid() != 0 {
		return nil, fmt.Errorf("user %q: the agent runs as uid %d and cannot switch users (it needs root)", name, os.Geteuid())
	}
	return cred, nil
}
