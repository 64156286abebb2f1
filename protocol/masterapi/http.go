package masterapi

import (
	"encoding/json"
	"time"
)

// The JSON HTTP API's bodies (GET /api/runtimes is []*Runtime,
// GET /api/runtimes/{rid} a Runtime, GET …/machines/{name} a Machine).

// MaxLogsPage bounds the entries one GET …/logs returns.
const MaxLogsPage = 10000

// LogsPage is GET /api/runtimes/{rid}/machines/{name}/logs: entries in
// order; Next is the ?after= of the next page.
type LogsPage struct {
	Entries []json.RawMessage `json:"entries"`
	Next    uint64            `json:"next"`
}

// Info is GET /api/info: what a client talks to.
type Info struct {
	ProtocolVersion string `json:"protocolVersion"` // the agent protocol (protocol.Version) spoken through the master
	Version         string `json:"version"`         // the master's build
}

// Ticket is POST /api/tickets: a short-lived token for ?ticket= of
// WebSocket URLs.
type Ticket struct {
	Expires time.Time `json:"expires"`
	Ticket  string    `json:"ticket"`
}

// Error is the body of every refusal of the HTTP API.
type Error struct {
	Error string `json:"error"`
}
