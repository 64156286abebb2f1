//go:build !linux

package wsrpc

import "errors"

// sendNow is Linux's only (fast_linux.go): elsewhere TryWriteBinary
// declines and the caller writes as usual.
func sendNow(fd uintptr, a, b []byte) (int, error) { return 0, errors.ErrUnsupported }

// readNow is Linux's only: elsewhere Options.ReadDirect is ignored.
func readNow(fd uintptr, b []byte) (int, error) { return 0, errors.ErrUnsupported }

// canReadDirect reports whether Options.ReadDirect can be honoured.
const canReadDirect = false
