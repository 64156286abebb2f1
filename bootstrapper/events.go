package bootstrapper

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// The JSON-RPC notifications the bootstrapper sends. The first three are
// Che's (booter/events.go); serverStatusChanged is porthole's, sent after
// DONE when a server's liveness changes. A Che master has no handler for
// it and ignores it.
const (
	MethodBootstrapperStatus = "bootstrapper/statusChanged"
	MethodInstallerStatus    = "installer/statusChanged"
	MethodInstallerLog       = "installer/log"
	MethodServerStatus       = "installer/serverStatusChanged"
)

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

// Log streams.
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

// machineEvent is what every event carries (Che's MachineEvent).
type machineEvent struct {
	MachineName string    `json:"machineName"`
	RuntimeID   RuntimeID `json:"runtimeId"`
	Time        time.Time `json:"time"`
}

// The params of each method, field for field as Che sends them, then
// porthole's additions. bootId is last but one; the spool appends seq.
type (
	bootstrapperStatus struct {
		machineEvent
		Status string `json:"status"`
		Error  string `json:"error,omitempty"`
		// Installers is the plan, on STARTING only: each installer's id
		// and servers (port, protocol, path, attributes), so that a master
		// can show servers it did not configure itself. No scripts.
		Installers []PlanInstaller `json:"installers,omitempty"`
		BootID     string          `json:"bootId"`
	}
	installerStatus struct {
		machineEvent
		Status    string `json:"status"`
		Installer string `json:"installer"`
		Error     string `json:"error,omitempty"`
		BootID    string `json:"bootId"`
	}
	installerLog struct {
		machineEvent
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
		// because the spool was full: how many (see spool).
		Lost   uint64 `json:"lost,omitempty"`
		BootID string `json:"bootId"`
	}
	serverStatus struct {
		machineEvent
		Installer string `json:"installer"`
		Server    string `json:"server"`
		Port      string `json:"port"`
		Status    string `json:"status"`
		BootID    string `json:"bootId"`
	}
)

// encoder renders events as complete JSON-RPC notifications. The
// envelope of each method is rendered once by jsonrpc2.Request (a
// notification: no id); per event only the params are marshalled and the
// sequence number appended, under the spool's lock, so that sequence
// numbers follow the spool's order.
type encoder struct {
	machine    string
	runtime    RuntimeID
	boot       string
	installers []string // ids, by index in the config
	plan       []PlanInstaller
	envelopes  map[string][2][]byte
}

// PlanInstaller is an installer as announced with STARTING: its id and
// servers, without its script.
type PlanInstaller struct {
	ID      string            `json:"id"`
	Servers map[string]Server `json:"servers,omitempty"`
}

// Plan returns what STARTING announces of installers.
func Plan(installers []Installer) []PlanInstaller {
	p := make([]PlanInstaller, len(installers))
	for i, in := range installers {
		p[i] = PlanInstaller{ID: in.ID, Servers: in.Servers}
	}
	return p
}

func newEncoder(machine string, rid RuntimeID, boot string, plan []PlanInstaller) (*encoder, error) {
	installers := make([]string, len(plan))
	for i, in := range plan {
		installers[i] = in.ID
	}
	e := &encoder{machine: machine, runtime: rid, boot: boot, installers: installers, plan: plan, envelopes: map[string][2][]byte{}}
	for _, m := range []string{MethodBootstrapperStatus, MethodInstallerStatus, MethodInstallerLog, MethodServerStatus} {
		pre, post, err := envelope(m)
		if err != nil {
			return nil, err
		}
		e.envelopes[m] = [2][]byte{pre, post}
	}
	return e, nil
}

// envelope returns what jsonrpc2 writes before and after the params of a
// notification of method.
func envelope(method string) (pre, post []byte, err error) {
	mark := json.RawMessage(`{"porthole":"params"}`)
	b, err := json.Marshal(&jsonrpc2.Request{Method: method, Params: &mark, Notif: true})
	if err != nil {
		return nil, nil, fmt.Errorf("render %s envelope: %w", method, err)
	}
	i := bytes.Index(b, mark)
	if i < 0 || bytes.Count(b, mark) != 1 {
		return nil, nil, fmt.Errorf("render %s envelope: params not found in %s", method, b)
	}
	return b[:i], b[i+len(mark):], nil
}

func (e *encoder) event() machineEvent {
	return machineEvent{MachineName: e.machine, RuntimeID: e.runtime, Time: time.Now()}
}

func (e *encoder) installer(i int) string {
	if i >= 0 && i < len(e.installers) {
		return e.installers[i]
	}
	return ""
}

// frame completes params (a JSON object from one of the params types)
// with "seq" and wraps it in the method's envelope.
func (e *encoder) frame(method string, params []byte, seq uint64) []byte {
	env := e.envelopes[method]
	b := make([]byte, 0, len(env[0])+len(params)+len(env[1])+28)
	b = append(b, env[0]...)
	b = append(b, params[:len(params)-1]...) // without the closing brace
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '}')
	return append(b, env[1]...)
}

func (e *encoder) marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil { // the params types cannot fail to marshal
		panic(fmt.Sprintf("bootstrapper: marshal %T: %v", v, err))
	}
	return b
}

func (e *encoder) bootstrapperStatus(status, errText string) []byte {
	p := bootstrapperStatus{machineEvent: e.event(), Status: status, Error: errText, BootID: e.boot}
	if status == StatusStarting {
		p.Installers = e.plan
	}
	return e.marshal(p)
}

func (e *encoder) installerStatus(inst int, status, errText string) []byte {
	return e.marshal(installerStatus{machineEvent: e.event(), Status: status, Installer: e.installer(inst), Error: errText, BootID: e.boot})
}

func (e *encoder) serverStatus(inst int, server, port, status string) []byte {
	return e.marshal(serverStatus{machineEvent: e.event(), Installer: e.installer(inst), Server: server, Port: port, Status: status, BootID: e.boot})
}

// log renders one line (or piece of a line) of output. Invalid UTF-8 is
// replaced in text by encoding/json (U+FFFD per invalid byte) and kept
// exactly in raw.
func (e *encoder) log(inst int, stream string, text []byte, partial bool) []byte {
	p := installerLog{machineEvent: e.event(), Text: string(text), Installer: e.installer(inst), Stream: stream, Partial: partial, BootID: e.boot}
	if !utf8.Valid(text) {
		p.Raw = text
	}
	return e.marshal(p)
}

// lost renders the event that stands for n dropped log lines, the first
// of which came from installer inst.
func (e *encoder) lost(inst int, n uint64) []byte {
	text := fmt.Sprintf("[porthole] %d log line(s) lost: the bootstrapper's spool was full while the master could not be reached", n)
	return e.marshal(installerLog{machineEvent: e.event(), Text: text, Installer: e.installer(inst), Stream: StreamStderr, Lost: n, BootID: e.boot})
}
