package che

import (
	"encoding/json"
	"fmt"
	"time"
)

// The params of each method as the bootstrapper sends them: field for
// field as Che does, then porthole's additions. bootId is last but one and
// seq last: a sender may set Seq, or leave it zero and append it.
type (
	// BootstrapperStatus is the params of bootstrapper/statusChanged.
	BootstrapperStatus struct {
		MachineEvent
		Status string `json:"status"`
		Error  string `json:"error,omitempty"`
		// Installers is the plan, on STARTING only: each installer's id
		// and servers, so that a master can show servers it did not
		// configure itself. No scripts.
		Installers []PlanInstaller `json:"installers,omitempty"`
		BootID     string          `json:"bootId"`
		Seq        uint64          `json:"seq,omitempty"`
	}
	// InstallerStatus is the params of installer/statusChanged.
	InstallerStatus struct {
		MachineEvent
		Status    string `json:"status"`
		Installer string `json:"installer"`
		Error     string `json:"error,omitempty"`
		BootID    string `json:"bootId"`
		Seq       uint64 `json:"seq,omitempty"`
	}
	// InstallerLog is the params of installer/log: one line of output, or
	// a piece of one.
	InstallerLog struct {
		MachineEvent
		Text      string `json:"text"`
		Installer string `json:"installer"`
		Stream    string `json:"stream"`
		// Partial: the line goes on in the next event of this stream (a
		// line longer than the bound is split).
		Partial bool `json:"partial,omitempty"`
		// Raw holds the line's exact bytes (base64) when they are not
		// valid UTF-8; Text then has U+FFFD for each invalid byte.
		Raw []byte `json:"raw,omitempty"`
		// Lost is set on the event that stands for log lines dropped
		// because the bootstrapper's spool was full: how many.
		Lost   uint64 `json:"lost,omitempty"`
		BootID string `json:"bootId"`
		Seq    uint64 `json:"seq,omitempty"`
	}
	// ServerStatus is the params of installer/serverStatusChanged.
	ServerStatus struct {
		MachineEvent
		Installer string `json:"installer"`
		Server    string `json:"server"`
		Port      string `json:"port"`
		Status    string `json:"status"`
		BootID    string `json:"bootId"`
		Seq       uint64 `json:"seq,omitempty"`
	}
)

// PlanInstaller is an installer as announced with STARTING: its id and
// servers, without its script.
type PlanInstaller struct {
	ID      string            `json:"id"`
	Servers map[string]Server `json:"servers,omitempty"`
}

// Event is the params of any method, as a receiver reads them: the union
// of the fields above. Validate says whether it is well formed for its
// method.
type Event struct {
	MachineName string          `json:"machineName"`
	RuntimeID   RuntimeID       `json:"runtimeId"`
	Time        time.Time       `json:"time"`
	Status      string          `json:"status"`
	Installer   string          `json:"installer"`
	Error       string          `json:"error"`
	Text        string          `json:"text"`
	Stream      string          `json:"stream"`
	Partial     bool            `json:"partial"`
	Raw         []byte          `json:"raw"`
	Lost        uint64          `json:"lost"`
	Server      string          `json:"server"`
	Port        string          `json:"port"`
	Installers  []PlanInstaller `json:"installers"`
	BootID      string          `json:"bootId"`
	Seq         uint64          `json:"seq"`
}

// Decode reads the params of one event.
func Decode(params json.RawMessage) (*Event, error) {
	var ev Event
	if err := json.Unmarshal(params, &ev); err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	return &ev, nil
}

// Known reports whether method is one of the contract's.
func Known(method string) bool {
	switch method {
	case MethodBootstrapperStatus, MethodInstallerStatus, MethodInstallerLog, MethodServerStatus:
		return true
	}
	return false
}

// Validate returns what is wrong with ev as the params of method, naming
// the field, or nil. An unknown method is an error.
func Validate(method string, ev *Event) error {
	switch {
	case ev.MachineName == "":
		return fmt.Errorf("machineName missing")
	case ev.RuntimeID.Workspace == "":
		return fmt.Errorf("runtimeId.workspaceId missing")
	}
	switch method {
	case MethodBootstrapperStatus:
		switch ev.Status {
		case StatusStarting, StatusDone, StatusFailed:
		default:
			return fmt.Errorf("status %q: want STARTING, DONE or FAILED", ev.Status)
		}
	case MethodInstallerStatus:
		if ev.Installer == "" {
			return fmt.Errorf("installer missing")
		}
		switch ev.Status {
		case StatusStarting, StatusRunning, StatusDone, StatusFailed:
		default:
			return fmt.Errorf("status %q: want STARTING, RUNNING, DONE or FAILED", ev.Status)
		}
	case MethodServerStatus:
		if ev.Installer == "" || ev.Server == "" {
			return fmt.Errorf("installer and server are required")
		}
		switch ev.Status {
		case StatusRunning, StatusStopped:
		default:
			return fmt.Errorf("status %q: want RUNNING or STOPPED", ev.Status)
		}
	case MethodInstallerLog:
		switch ev.Stream {
		case StreamStdout, StreamStderr:
		default:
			return fmt.Errorf("stream %q: want STDOUT or STDERR", ev.Stream)
		}
	default:
		return fmt.Errorf("method %q: want one of %v", method, Methods)
	}
	return nil
}
