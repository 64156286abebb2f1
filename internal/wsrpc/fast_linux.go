package wsrpc

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendNow writes a then b to the socket fd in one sendmsg that does not
// wait (the socket's buffer takes what it can) and raises no SIGPIPE. It
// is a raw system call: one that never blocks needs none of the runtime's
// bookkeeping, which would wake its monitor thread (agent/output.go
// readNow).
func sendNow(fd uintptr, a, b []byte) (int, error) {
	var iov [2]unix.Iovec
	iov[0].Base = &a[0]
	iov[0].SetLen(len(a))
	k := 1
	if len(b) > 0 {
		iov[1].Base = &b[0]
		iov[1].SetLen(len(b))
		k = 2
	}
	var msg unix.Msghdr
	msg.Iov = &iov[0]
	msg.SetIovlen(k)
	n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// readNow is read(2) on the non-blocking socket fd, as a raw system call
// for the same reason (read.go).
func readNow(fd uintptr, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// canReadDirect reports whether Options.ReadDirect can be honoured.
const canReadDirect = true
