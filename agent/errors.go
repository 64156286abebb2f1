package agent

import "github.com/porthole-dev/porthole/protocol"

// The agent's process model reports errors as *protocol.Error (a code of
// the protocol and a message); rpc.go's toRPCError puts them on the wire.

func invalidParams(format string, args ...any) *protocol.Error {
	return protocol.Errorf(protocol.CodeInvalidParams, format, args...)
}

func notFound(id string) *protocol.Error {
	return protocol.Errorf(protocol.CodeNotFound, "no process with id %q", id)
}

// exitedError refuses an operation that needs process id running.
func exitedError(id string) *protocol.Error {
	return protocol.Errorf(protocol.CodeNotRunning, "process %s has exited", id)
}

// stdinClosedError refuses input for process id, whose stdin is closed.
func stdinClosedError(id string) *protocol.Error {
	return protocol.Errorf(protocol.CodeNotRunning, "stdin of process %s is closed", id)
}
