//go:build unix

package tunnel

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// waitReadable returns once rc's socket has bytes to read, its end, or an
// error, holding no buffer meanwhile: the poller waits, and a one-byte
// MSG_PEEK says whether there is anything (it consumes nothing).
func waitReadable(rc syscall.RawConn) error {
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN
	})
}
