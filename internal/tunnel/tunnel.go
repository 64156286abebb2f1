// Package tunnel lets the master reach agents that it cannot dial: the
// agent keeps an outbound WebSocket to the master (Serve), yamux
// multiplexes streams over it, and the master opens one stream per HTTP
// request and proxies to the agent's ordinary handler (Accept,
// Session.Proxy). WebSocket upgrades pass through byte for byte, so
// offsets, reattach, exit codes, resize and pings behave as on a direct
// connection.
//
// Roles: the agent is the yamux server and only accepts streams; the
// master is the yamux client and only opens them.
package tunnel

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// Headers of the agent's handshake (besides Authorization: Bearer and
// the machine token), which the master checks against the token's claims.
const (
	HeaderRuntimeID    = "X-Porthole-Runtime-Id"    // workspace:env:owner
	HeaderMachineName  = "X-Porthole-Machine-Name"  // the machine in the runtime
	HeaderAgentVersion = "X-Porthole-Agent-Version" // the agent's build version
	HeaderProtocol     = "X-Porthole-Protocol"      // protocol.Version
)

// Limits and timers of a tunnel, the same on both ends.
const (
	// streamWindow is yamux's per-stream receive window: how much one
	// stream may have in flight. 2 MiB keeps a single transfer near
	// 40 MB/s at 50 ms round trip; a stream whose reader stalls holds at
	// most this much at the receiver.
	streamWindow = 2 << 20
	// keepAliveInterval is how often each end pings the other; a ping
	// unanswered for writeTimeout ends the session, so a dead peer is
	// noticed within keepAliveInterval+writeTimeout (45 s).
	keepAliveInterval = 15 * time.Second
	// writeTimeout bounds how long a frame may wait to be written to the
	// socket before the session is considered dead.
	writeTimeout = 30 * time.Second
	// bufferSize is the WebSocket read and write buffer size.
	bufferSize = 64 << 10
)

// yamuxConfig returns the tuned yamux configuration; yamux's own logs go
// to log at debug level, or nowhere when log is nil.
func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = streamWindow
	c.EnableKeepAlive = true
	c.KeepAliveInterval = keepAliveInterval
	c.ConnectionWriteTimeout = writeTimeout
	if log == nil {
		c.LogOutput = io.Discard
	} else {
		c.LogOutput = nil
		c.Logger = yamuxLogger{log}
	}
	return c
}

// yamuxLogger turns yamux's Printf logs into debug records.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (l yamuxLogger) Printf(format string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (l yamuxLogger) Println(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprintln(v...))) }
