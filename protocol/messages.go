package protocol

import "time"

// JSON-RPC methods a client calls. On an attach socket the "id" parameter
// may be omitted: it defaults to the attached process.
const (
	MethodAgentInfo    = "agent.info"
	MethodStart        = "process.start"
	MethodList         = "process.list"
	MethodGet          = "process.get"
	MethodSignal       = "process.signal"
	MethodKill         = "process.kill"
	MethodResize       = "process.resize"
	MethodCloseStdin   = "process.closeStdin"
	MethodWrite        = "process.write"
	MethodWait         = "process.wait"
	MethodSubscribe    = "process.subscribe"
	MethodUnsubscribe  = "process.unsubscribe"
	MethodRemove       = "process.remove"
	EventStarted       = "process.started"
	EventOutput        = "process.output"
	EventGap           = "process.gap"
	EventEOF           = "process.eof"
	EventExited        = "process.exited"
	EventHello         = "agent.hello"
	StreamStdoutName   = "stdout"
	StreamStderrName   = "stderr"
	StateRunning       = "running"
	StateExited        = "exited"
	DefaultRows        = 24
	DefaultCols        = 80
	MaxWindowDimension = 10000
)

// AgentInfo is the result of agent.info and the params of agent.hello, the
// first message the agent sends on every control socket.
type AgentInfo struct {
	Version         string `json:"version"`
	ProtocolVersion string `json:"protocolVersion"`
	PID             int    `json:"pid"`
	Processes       int    `json:"processes"`
	MaxProcesses    int    `json:"maxProcesses"`
	RingBytes       int    `json:"ringBytes"`
	MaxMessageBytes int    `json:"maxMessageBytes"`
}

// StartParams are the params of process.start.
type StartParams struct {
	// Name is a free label shown in listings.
	Name string `json:"name,omitempty"`
	// Argv is the command and its arguments; empty means the agent's shell.
	Argv []string `json:"argv,omitempty"`
	// Env entries "KEY=VALUE" are added to, and override, the agent's
	// environment (from which the agent's own token is removed).
	Env []string `json:"env,omitempty"`
	// Cwd is the working directory; empty means the agent's.
	Cwd string `json:"cwd,omitempty"`
	// User is a user name or numeric uid to run as; it needs a root agent.
	User string `json:"user,omitempty"`
	// TTY asks for a pseudo-terminal; otherwise stdin, stdout and stderr are
	// separate pipes.
	TTY bool `json:"tty,omitempty"`
	// Size is the initial terminal size (TTY only), so that the process
	// never starts at a wrong size. Zero rows or cols mean 24x80.
	Size WindowSize `json:"size,omitzero"`
	// Hold keeps every byte of output from the start for the first attach
	// with hold=1 (protocol.md §12), for at most the agent's start hold
	// timeout (30 s): nothing is evicted between start and attach. Since
	// protocol 1.2.
	Hold bool `json:"hold,omitempty"`
}

// WindowSize is a terminal size, as in TIOCSWINSZ.
type WindowSize struct {
	Rows   uint16 `json:"rows"`
	Cols   uint16 `json:"cols"`
	XPixel uint16 `json:"xpixel,omitempty"`
	YPixel uint16 `json:"ypixel,omitempty"`
}

// IDParams name a process. On an attach socket ID may be empty.
type IDParams struct {
	ID string `json:"id,omitempty"`
}

// SignalParams are the params of process.signal. Signal is a name ("TERM",
// "SIGTERM", case-insensitive) or a decimal number ("15").
type SignalParams struct {
	ID     string `json:"id,omitempty"`
	Signal string `json:"signal"`
}

// ResizeParams are the params of process.resize.
type ResizeParams struct {
	ID string `json:"id,omitempty"`
	WindowSize
}

// WriteParams are the params of process.write, stdin for JSON-only
// clients. Exactly one of Text and Data is set; Data is base64 (standard
// encoding) in JSON.
type WriteParams struct {
	ID   string `json:"id,omitempty"`
	Text string `json:"text,omitempty"`
	Data []byte `json:"data,omitempty"`
}

// SubscribeParams are the params of process.subscribe: events for one
// process on this control socket. Output events start at the given offsets
// (bytes already received); nil output offsets mean no output events.
type SubscribeParams struct {
	ID     string `json:"id"`
	Stdout *int64 `json:"stdout,omitempty"`
	Stderr *int64 `json:"stderr,omitempty"`
}

// StreamRange is the retained part [Start, End) of an output stream, in
// absolute byte offsets since the process started.
type StreamRange struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// ProcessInfo describes a process: the result of process.start, get and
// wait, the params of process.started and process.exited.
type ProcessInfo struct {
	ID        string      `json:"id"`
	Name      string      `json:"name,omitempty"`
	Argv      []string    `json:"argv"`
	Cwd       string      `json:"cwd,omitempty"`
	User      string      `json:"user,omitempty"`
	TTY       bool        `json:"tty"`
	PID       int         `json:"pid"`
	State     string      `json:"state"`
	Size      *WindowSize `json:"size,omitempty"`
	StartedAt time.Time   `json:"startedAt"`
	ExitedAt  *time.Time  `json:"exitedAt,omitempty"`
	// ExitCode is set once the process exited normally.
	ExitCode *int `json:"exitCode,omitempty"`
	// Signal is the signal name ("KILL") when the process was killed by one.
	Signal  string       `json:"signal,omitempty"`
	Stdout  StreamRange  `json:"stdout"`
	Stderr  *StreamRange `json:"stderr,omitempty"`
	Clients int          `json:"clients"`
	// CPUSeconds and RSSBytes are sampled while the process runs.
	CPUSeconds float64 `json:"cpuSeconds,omitempty"`
	RSSBytes   uint64  `json:"rssBytes,omitempty"`
}

// ListResult is the result of process.list.
type ListResult struct {
	Processes []ProcessInfo `json:"processes"`
}

// OutputEvent is the params of process.output, output for JSON-only
// clients. Offset is the stream offset of the first byte. Exactly one of
// Text (valid UTF-8; a multibyte character is never split between events)
// and Data (base64, for bytes that are not valid UTF-8) is set; Len is the
// byte length either way, so Offset+Len is the next event's Offset.
type OutputEvent struct {
	ID     string `json:"id"`
	Stream string `json:"stream"`
	Offset int64  `json:"offset"`
	Len    int    `json:"len"`
	Text   string `json:"text,omitempty"`
	Data   []byte `json:"data,omitempty"`
}

// GapEvent is the params of process.gap: the bytes [From, To) of a stream
// fell out of the ring before this client got them; output continues at To.
type GapEvent struct {
	ID     string `json:"id"`
	Stream string `json:"stream"`
	From   int64  `json:"from"`
	To     int64  `json:"to"`
}

// EOFEvent is the params of process.eof: the stream is closed at Offset.
type EOFEvent struct {
	ID     string `json:"id"`
	Stream string `json:"stream"`
	Offset int64  `json:"offset"`
}

// Empty is the result of methods that return nothing.
type Empty struct{}

// CopyStatus is the one text message that ends a file-copy socket
// (docs/protocol.md §20): what was copied, or why the copy failed.
type CopyStatus struct {
	Files int   `json:"files"` // regular files
	Dirs  int   `json:"dirs"`
	Links int   `json:"links"` // symlinks
	Bytes int64 `json:"bytes"` // content of regular files
	// Skipped names special files (sockets, devices, FIFOs) left out, at
	// most 100.
	Skipped []string `json:"skipped,omitempty"`
	// Error, when set, says why the copy failed, naming the path.
	Error string `json:"error,omitempty"`
}

// Port detection (docs/protocol.md §21, since 1.1).
const (
	MethodPortsList        = "ports.list"
	MethodPortsSubscribe   = "ports.subscribe"
	MethodPortsUnsubscribe = "ports.unsubscribe"
	EventPortsChanged      = "ports.changed"
)

// ListeningPort is a TCP port something listens on in the agent's
// machine (its network namespace).
type ListeningPort struct {
	Port int `json:"port"`
	// Address is the listening address: "0.0.0.0", "::", "127.0.0.1"...
	Address string `json:"address"`
}

// PortsResult is the result of ports.list and the params of
// ports.changed: every listening port, sorted by port then address.
type PortsResult struct {
	Ports []ListeningPort `json:"ports"`
}
