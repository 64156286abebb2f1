package master

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Machine statuses, as Che publishes them.
const (
	MachineStarting = "STARTING"
	MachineRunning  = "RUNNING"
	MachineStopped  = "STOPPED"
	MachineFailed   = "FAILED"
)

// Server statuses, as Che publishes them.
const (
	ServerRunning = "RUNNING"
	ServerStopped = "STOPPED"
	ServerUnknown = "UNKNOWN"
)

// InstallerPending is the status of an installer announced by the
// bootstrapper's plan that has not started yet (porthole's; Che has no
// such status).
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
	Address      string            `json:"address,omitempty"`
	Installers   []Installer       `json:"installers"`
	Servers      []Server          `json:"servers"`
	Agent        AgentState        `json:"agent"`
	Bootstrapper BootstrapperState `json:"bootstrapper"`
	// Seq is the machine's last journal entry (its logs and events).
	Seq     uint64    `json:"seq"`
	Updated time.Time `json:"updated"`
	// Cursors are the highest bootstrapper seq accepted per boot and
	// endpoint ("bootId path"): deduplication, persisted with the rest.
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

// AgentState is the machine's agent as the master last saw it.
type AgentState struct {
	Connected bool      `json:"connected"`
	Version   string    `json:"version,omitempty"`
	Protocol  string    `json:"protocol,omitempty"`
	Via       string    `json:"via,omitempty"` // "tunnel": the agent's outbound connection
	Since     time.Time `json:"since,omitzero"`
}

// BootstrapperState is the machine's bootstrapper connection.
type BootstrapperState struct {
	Connected bool      `json:"connected"`
	Status    string    `json:"status,omitempty"` // STARTING, DONE or FAILED
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

// Entry types.
const (
	EntryBootstrapper = "bootstrapper" // bootstrapper/statusChanged
	EntryInstaller    = "installer"    // installer/statusChanged
	EntryLog          = "log"          // installer/log
	EntryServer       = "server"       // installer/serverStatusChanged
	EntryAgent        = "agent"        // the agent connected (status CONNECTED) or not (DISCONNECTED)
)

// view returns a copy of m fit for a client: internal servers and the
// cursors removed.
func (m *Machine) view(internal bool) *Machine {
	c := *m
	c.Cursors = nil
	c.Installers = slices.Clone(m.Installers)
	c.Servers = nil
	for _, s := range m.Servers {
		if internal || !s.Internal() {
			c.Servers = append(c.Servers, s)
		}
	}
	if c.Installers == nil {
		c.Installers = []Installer{}
	}
	if c.Servers == nil {
		c.Servers = []Server{}
	}
	return &c
}

func (m *Machine) installer(id string) *Installer {
	for i := range m.Installers {
		if m.Installers[i].ID == id {
			return &m.Installers[i]
		}
	}
	m.Installers = append(m.Installers, Installer{ID: id})
	return &m.Installers[len(m.Installers)-1]
}

// attributes reads config.json's attributes (strings in Che's; other
// JSON values are kept as their text).
func attributes(raw json.RawMessage) map[string]string {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		} else {
			out[k] = string(v)
		}
	}
	return out
}

// splitRuntimeID splits "workspace:env:owner".
func splitRuntimeID(id string) (ws, env, owner string) {
	parts := strings.SplitN(id, ":", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return parts[0], parts[1], parts[2]
}
