//go:build linux

package tunnel

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readPolled reads what rc's socket has into a pooled copy buffer (a bulk
// one when bulk is set), holding no buffer while it waits: the poller
// waits, and a buffer is taken only for a read that finds bytes (one that
// finds none gives it back before waiting). It returns the buffer and how
// much it holds; io.EOF at the end. conn is rc's connection (unused here).
func readPolled(_ net.Conn, rc syscall.RawConn, bulk bool) (*[]byte, int, error) {
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		bp = getCopyBuffer(bulk)
		for {
			n, rerr = readNow(fd, *bp)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			putCopyBuffer(bp)
			bp = nil
			return false // wait, holding nothing
		}
		return true
	})
	switch {
	case err == nil && rerr != nil:
		err = rerr
	case err == nil && n == 0:
		err = io.EOF
	}
	if n < 0 {
		n = 0
	}
	if err != nil && n == 0 && bp != nil {
		putCopyBuffer(bp)
		bp = nil
	}
	return bp, n, err
}

// idleOpen reports whether c, a spare data connection, is still open and
// has nothing to read: its peer has neither closed it nor sent anything
// (a one-byte MSG_PEEK that does not wait).
func idleOpen(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	idle := false
	var b [1]byte
	if rc.Control(func(fd uintptr) {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		idle = err == unix.EAGAIN
	}) != nil {
		return false
	}
	return idle
}

// readNow and sendNow are read(2) and send(2) on the non-blocking socket
// fd, made as raw system calls: a call that never waits needs none of
// the runtime's bookkeeping for calls that may block, which wakes its
// monitor thread (sysmon) out of its deep sleep whenever the master was
// idle, that is at every keystroke (as the agent's, agent/output.go).
func readNow(fd uintptr, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sendNow(fd uintptr, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// writerFor returns how a copy writes to w: on a kernel socket, with
// sendNow through w's RawConn, waiting in the poller only when the
// socket's buffer is full; otherwise (TLS, a yamux stream) w.Write.
func writerFor(w io.Writer) func([]byte) error {
	write := func(b []byte) error {
		_, err := w.Write(b)
		return err
	}
	sc, ok := w.(syscall.Conn)
	if !ok {
		return write
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return write
	}
	return func(b []byte) error {
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			for len(b) > 0 {
				n, err := sendNow(fd, b)
				switch err {
				case nil:
					b = b[n:]
				case unix.EINTR:
				case unix.EAGAIN:
					return false // full: wait until writable
				default:
					serr = err
					return true
				}
			}
			return true
		})
		if err == nil {
			err = serr
		}
		return err
	}
}
