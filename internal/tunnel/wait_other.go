//go:build !linux

package tunnel

import (
	"io"
	"net"
	"syscall"
)

// readPolled reads conn into a pooled copy buffer; where sockets cannot
// be polled for readability, the read waits with its buffer.
func readPolled(conn net.Conn, _ syscall.RawConn, bulk bool) (*[]byte, int, error) {
	bp := getCopyBuffer(bulk)
	n, err := conn.Read(*bp)
	if n == 0 && err != nil {
		putCopyBuffer(bp)
		return nil, 0, err
	}
	return bp, n, err
}

// idleOpen cannot look at the socket here: a dead spare fails its
// request instead.
func idleOpen(net.Conn) bool { return true }

// writerFor returns w.Write: raw writes are for Unix sockets.
func writerFor(w io.Writer) func([]byte) error {
	return func(b []byte) error {
		_, err := w.Write(b)
		return err
	}
}
