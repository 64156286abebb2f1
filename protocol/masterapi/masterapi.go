// Package masterapi is porthole-master's client API: the runtimes,
// machines and journal entries the master publishes (GET /api/runtimes…,
// JSON-RPC over /api/rpc), the JSON-RPC methods, their params and
// notifications, and the master's error codes. docs/master.md describes
// it; fixtures/masterapi holds one example of each message.
//
// A Go program reads the master importing this package only: it does no
// I/O and imports the standard library and protocol packages alone (a test
// keeps it so).
package masterapi

import (
	"strings"
	"time"
)

// Machine statuses, as Che publishes them: STARTING (bootstrapper
// STARTING), RUNNING (bootstrapper DONE), FAILED (bootstrapper FAILED),
// STOPPED (the bootstrapper closed normally after DONE).
const (
	MachineStarting = "STARTING"
	MachineRunning  = "RUNNING"
	MachineStopped  = "STOPPED"
	MachineFailed   = "FAILED"
)

// Server statuses, as Che publishes them: UNKNOWN until the server's
// installer is RUNNING.
const (
	ServerRunning = "RUNNING"
	ServerStopped = "STOPPED"
	ServerUnknown = "UNKNOWN"
)

// InstallerPending is the status of an installer announced by the
// bootstrapper's plan that has not started yet (porthole's; Che has no
// such status). The others are Che's installer statuses
// (protocol/che: STARTING, RUNNING, DONE, FAILED).
const InstallerPending = "PENDING"

// Runtime is a workspace runtime: its machines.
type Runtime struct {
	ID          string     `json:"id"`
	WorkspaceID string     `json:"workspaceId"`
	EnvName     string     `json:"envName"`
	OwnerID     string     `json:"ownerId"`
	Machines    []*Machine `json:"machines"`
}

// Machine is what the master knows of one machine.
type Machine struct {
	RuntimeID string `json:"runtimeId"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Error     string `json:"error,omitempty"`
	BootID    string `json:"bootId,omitempty"`
	// Address is the host the machine's servers are reached on: the
	// agent's announcement, else where its bootstrapper connects from.
	Address    string      `json:"address,omitempty"`
	Installers []Installer `json:"installers"`
	Servers    []Server    `json:"servers"`
	// Ports are the TCP ports something listens on in the machine, as
	// its agent last reported them (ports.changed, docs/protocol.md §21),
	// by port: empty while no agent is connected. A client sees neither
	// an internal server's port nor any port of it.
	Ports        []ListeningPort   `json:"ports"`
	Agent        AgentState        `json:"agent"`
	Bootstrapper BootstrapperState `json:"bootstrapper"`
	// Seq is the machine's last journal entry (its logs and events).
	Seq     uint64    `json:"seq"`
	Updated time.Time `json:"updated"`
	// Cursors are the highest bootstrapper seq accepted per boot and
	// endpoint ("bootId path"): deduplication, persisted with the rest;
	// never sent to clients.
	Cursors map[string]uint64 `json:"cursors,omitempty"`
}

// Installer is an installer's last status.
type Installer struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Server is a server an installer starts.
type Server struct {
	Name       string            `json:"name"`
	Installer  string            `json:"installer"`
	Port       string            `json:"port"`
	Protocol   string            `json:"protocol,omitempty"`
	Path       string            `json:"path,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Status     string            `json:"status"`
	URL        string            `json:"url,omitempty"`
}

// Internal reports the attribute internal=true: such servers are for
// machines of the runtime only and never shown to clients.
func (s Server) Internal() bool { return strings.EqualFold(s.Attributes["internal"], "true") }

// ListeningPort is a TCP port something listens on in the machine, and
// the addresses it listens on ("0.0.0.0", "::", "127.0.0.1"…). The
// master serves it to clients like a declared server
// (/api/runtimes/{rid}/machines/{name}/ports/{port}/).
type ListeningPort struct {
	Port      int      `json:"port"`
	Addresses []string `json:"addresses"`
}

// AgentState is the machine's agent as the master last saw it.
type AgentState struct {
	Connected bool      `json:"connected"`
	Version   string    `json:"version,omitempty"`
	Protocol  string    `json:"protocol,omitempty"`
	Via       string    `json:"via,omitempty"` // ViaTunnel: the agent's outbound connection
	Since     time.Time `json:"since,omitzero"`
}

// ViaTunnel is AgentState.Via for an agent connected through its tunnel.
const ViaTunnel = "tunnel"

// BootstrapperState is the machine's bootstrapper connection.
type BootstrapperState struct {
	Connected bool      `json:"connected"`
	Status    string    `json:"status,omitempty"` // the bootstrapper's last: STARTING, DONE or FAILED
	Since     time.Time `json:"since,omitzero"`
}

// Entry is one event of a machine's journal: a log line, a status change,
// an agent connecting. Seq numbers a machine's entries from 1.
type Entry struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Type      string    `json:"type"` // see the Entry* constants
	Installer string    `json:"installer,omitempty"`
	Status    string    `json:"status,omitempty"`
	Error     string    `json:"error,omitempty"`
	Text      string    `json:"text,omitempty"`
	Stream    string    `json:"stream,omitempty"`
	Partial   bool      `json:"partial,omitempty"`
	Raw       []byte    `json:"raw,omitempty"`
	Lost      uint64    `json:"lost,omitempty"`
	Server    string    `json:"server,omitempty"`
	Port      string    `json:"port,omitempty"`
	BootID    string    `json:"bootId,omitempty"`
}

// Entry types: which event an entry records. The first four are the
// bootstrapper's (protocol/che methods), with its status, stream and
// fields as it sent them.
const (
	EntryBootstrapper = "bootstrapper" // bootstrapper/statusChanged
	EntryInstaller    = "installer"    // installer/statusChanged
	EntryLog          = "log"          // installer/log
	EntryServer       = "server"       // installer/serverStatusChanged
	EntryAgent        = "agent"        // the agent connected (AgentConnected) or not (AgentDisconnected)
)

// Statuses of an EntryAgent entry.
const (
	AgentConnected    = "CONNECTED"
	AgentDisconnected = "DISCONNECTED"
)

// AuditEntry is one record of porthole-master's audit trail (GET
// /api/audit): who did what, when, from where, on which machine.
type AuditEntry struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Principal string    `json:"principal"` // the token's name
	TokenID   string    `json:"tokenId,omitempty"`
	Remote    string    `json:"remote"`
	// Action: "ticket", "site" (a browser opened a machine's server:
	// a site key issued for Port), "rpc" (a control socket opened), "attach", a
	// JSON-RPC method of the agent's HTTP endpoint ("process.start",
	// "process.signal", "process.kill", …), or "http" (another request
	// to the agent).
	Action  string   `json:"action"`
	Runtime string   `json:"runtimeId,omitempty"`
	Machine string   `json:"machine,omitempty"`
	Process string   `json:"process,omitempty"`
	Argv    []string `json:"argv,omitempty"`
	Signal  string   `json:"signal,omitempty"`
	Method  string   `json:"method,omitempty"` // the HTTP method, for "http"
	Path    string   `json:"path,omitempty"`   // the agent path, for "http" and "attach"; the server's, for "site"
	Port    int      `json:"port,omitempty"`   // the machine's port, for "site"
}

// AuditPage is GET /api/audit's answer; Next is the ?after= of the next
// page.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	Next    uint64       `json:"next"`
}

// MaxAuditPage is the most entries of one GET /api/audit page.
const MaxAuditPage = 1000
