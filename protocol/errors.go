package protocol

import "fmt"

// JSON-RPC error codes. The -327xx and -326xx codes are JSON-RPC 2.0's own;
// the -320xx codes are porthole's.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603

	// CodeNotFound: no process with that id (never existed or removed).
	CodeNotFound = -32001
	// CodeNotRunning: the operation needs a running process.
	CodeNotRunning = -32002
	// CodeLimit: a limit was reached (processes, subscriptions).
	CodeLimit = -32003
	// CodeStartFailed: the process could not be started (no such command,
	// bad cwd, bad user).
	CodeStartFailed = -32004
	// CodeNotTTY: the operation needs a TTY process (resize).
	CodeNotTTY = -32005
	// CodeStillRunning: the operation needs an exited process (remove).
	CodeStillRunning = -32006
	// CodeTooLarge: the message exceeds the agent's message size limit.
	CodeTooLarge = -32007
)

// WebSocket close codes the agent sends.
const (
	// CloseNormal (1000) follows process.exited on an attach socket.
	CloseNormal = 1000
	// CloseGoingAway (1001): the agent is shutting down.
	CloseGoingAway = 1001
	// CloseProtocolError (1002): a frame that breaks this protocol.
	CloseProtocolError = 1002
	// CloseTooBig (1009): a message larger than the limit could not be
	// answered in-band (see docs/protocol.md, Limits).
	CloseTooBig = 1009
	// CloseProcessRemoved (4004): the attached process was removed.
	CloseProcessRemoved = 4004
	// CloseIdle (4008): no pong within the keepalive deadline.
	CloseIdle = 4008
)

// Error is an error of the agent's protocol: one of the codes above and a
// message that names what is wrong. The agent's process model returns it;
// the JSON-RPC layer sends Code and Message as the response's error.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
