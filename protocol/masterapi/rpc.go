package masterapi

import (
	"encoding/json"
	"time"
)

// Client JSON-RPC methods and notifications over /api/rpc.
const (
	MethodRuntimeList        = "runtime.list"        // no params; result []*Runtime
	MethodRuntimeSubscribe   = "runtime.subscribe"   // SubscribeParams; result SubscribeResult
	MethodRuntimeUnsubscribe = "runtime.unsubscribe" // UnsubscribeParams; result {}
	NotifyMachine            = "runtime.machine"     // MachineNotification
	NotifyEntries            = "runtime.entries"     // EntriesNotification
)

// EntriesPerNotification bounds the entries of one runtime.entries.
const EntriesPerNotification = 256

// CodeForbidden is the JSON-RPC error code of a refusal by token: an
// event for another machine than the token's, a machine token
// subscribing to another runtime. The other codes the master sends are
// JSON-RPC's and the agent protocol's (package protocol).
const CodeForbidden = -32008

// SubscribeParams are runtime.subscribe's params.
type SubscribeParams struct {
	// RuntimeID is the runtime, or "*" for every runtime.
	RuntimeID string `json:"runtimeId"`
	// Replay: with none of After, Since and All, only what happens from
	// now on is sent. After gives, per machine name, the last seq the
	// client has (machines not named: from their oldest kept entry);
	// Since replays entries from that time; All replays every kept entry.
	After map[string]uint64 `json:"after,omitempty"`
	Since *time.Time        `json:"since,omitempty"`
	All   bool              `json:"all,omitempty"`
	// After's keys are machine names, or "runtimeId/machineName" (exact
	// when RuntimeID is "*": names may repeat across runtimes).
	// Logs: false leaves installer/log entries out. Default true.
	Logs *bool `json:"logs,omitempty"`
}

// SubscribeResult is runtime.subscribe's result.
type SubscribeResult struct {
	Subscription string `json:"subscription"`
}

// UnsubscribeParams are runtime.unsubscribe's params.
type UnsubscribeParams struct {
	Subscription string `json:"subscription"`
}

// MachineNotification is runtime.machine's params: a machine's state,
// sent at subscription and whenever it changes.
type MachineNotification struct {
	Subscription string   `json:"subscription"`
	Machine      *Machine `json:"machine"`
}

// EntriesNotification is runtime.entries's params: a machine's journal
// entries in order, none skipped except by retention. Each entry is an
// Entry as stored.
type EntriesNotification struct {
	Subscription string            `json:"subscription"`
	RuntimeID    string            `json:"runtimeId"`
	MachineName  string            `json:"machineName"`
	Entries      []json.RawMessage `json:"entries"`
}
