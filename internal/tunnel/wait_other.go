//go:build !unix

package tunnel

import "syscall"

// waitReadable returns at once where sockets cannot be peeked: the read
// that follows waits, with its buffer.
func waitReadable(syscall.RawConn) error { return nil }
