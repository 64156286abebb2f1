// Package che is Eclipse Che's bootstrapper event contract, as porthole's
// bootstrapper sends it and porthole-master reads it: the JSON-RPC 2.0
// notification methods, their statuses and streams, the params of each
// (Che's fields first, then porthole's additions), the runtime id, the
// rules a well-formed event follows, and Che's error sentences.
//
// Che's own bootstrapper (agents/go-agents/bootstrapper, booter/events.go)
// sends the first three methods with Che's fields only. porthole adds:
//   - bootId and seq on every event: the boot (one bootstrapper run) and a
//     per-endpoint sequence number, so a master de-duplicates what a
//     reconnection resends;
//   - on installer/log: partial (a long line split), raw (the exact bytes
//     of a line that is not UTF-8), lost (lines dropped while the spool was
//     full);
//   - on bootstrapper/statusChanged STARTING: installers, the plan;
//   - the method installer/serverStatusChanged.
//
// A Che master ignores the fields and the method it does not know. The
// package does no I/O; fixtures/che holds one example of each event.
package che

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The JSON-RPC notification methods. The first three are Che's;
// serverStatusChanged is porthole's, sent after DONE when a server's
// liveness changes.
const (
	MethodBootstrapperStatus = "bootstrapper/statusChanged"
	MethodInstallerStatus    = "installer/statusChanged"
	MethodInstallerLog       = "installer/log"
	MethodServerStatus       = "installer/serverStatusChanged"
)

// Methods lists every method of the contract.
var Methods = []string{MethodBootstrapperStatus, MethodInstallerStatus, MethodInstallerLog, MethodServerStatus}

// Statuses. The bootstrapper is STARTING, DONE or FAILED; an installer
// STARTING, RUNNING (its servers are up), DONE (no servers, exit 0) or
// FAILED; a server (serverStatusChanged) RUNNING or STOPPED.
const (
	StatusStarting = "STARTING"
	StatusRunning  = "RUNNING"
	StatusDone     = "DONE"
	StatusFailed   = "FAILED"
	StatusStopped  = "STOPPED"
)

// Log streams of installer/log.
const (
	StreamStdout = "STDOUT"
	StreamStderr = "STDERR"
)

// RuntimeID identifies the workspace runtime a machine belongs to.
type RuntimeID struct {
	Workspace   string `json:"workspaceId"`
	Environment string `json:"envName"`
	Owner       string `json:"ownerId"`
}

// String is Che's form, "workspace:env:ownerId".
func (r RuntimeID) String() string { return r.Workspace + ":" + r.Environment + ":" + r.Owner }

// ParseRuntimeID parses Che's -runtime-id, "workspace:env:ownerId":
// exactly three colon-separated parts.
func ParseRuntimeID(s string) (RuntimeID, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return RuntimeID{}, fmt.Errorf("%q: want workspace:env:ownerId (three parts separated by ':'), got %d part(s)", s, len(parts))
	}
	return RuntimeID{Workspace: parts[0], Environment: parts[1], Owner: parts[2]}, nil
}

// MachineEvent is what every event carries (Che's MachineEvent).
type MachineEvent struct {
	MachineName string    `json:"machineName"`
	RuntimeID   RuntimeID `json:"runtimeId"`
	Time        time.Time `json:"time"`
}

// Server is a server an installer starts, as Che's installer config and
// the STARTING plan describe it.
type Server struct {
	// Port is "4412", "4412/tcp" or "4412/udp" (tcp when omitted).
	Port     string `json:"port"`
	Protocol string `json:"protocol,omitempty"` // URL scheme for clients (http, ws, …), not checked
	Path     string `json:"path,omitempty"`
	// Attributes are kept verbatim (an object of strings in Che's).
	Attributes json.RawMessage `json:"attributes,omitempty"`
}

// porthole's handshake headers: what porthole-master says of itself on the
// WebSocket handshake response of its bootstrapper endpoints. Che's master
// sends neither, so a bootstrapper that finds none behaves as Che's.
const (
	// HeaderMaxMessage is the largest frame, in bytes, the master accepts;
	// a porthole bootstrapper splits log lines to stay below it.
	HeaderMaxMessage = "Porthole-Max-Message"
	// HeaderCapabilities lists, comma-separated, what the master
	// understands beyond Che's contract (Cap* values).
	HeaderCapabilities = "Porthole-Capabilities"
	// CapServerStatus: the master understands installer/serverStatusChanged.
	CapServerStatus = "serverStatusChanged"
)

// HasCapability reports whether the capabilities header value list names
// capability.
func HasCapability(list, capability string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if strings.TrimSpace(c) == capability {
			return true
		}
	}
	return false
}
