//go:build unix

package tunnel

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"

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
			n, rerr = unix.Read(int(fd), *bp)
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
