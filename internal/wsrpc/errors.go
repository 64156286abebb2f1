package wsrpc

import "encoding/json"

// How a stream answers what it cannot handle: a message up to Limit that
// is not a well-formed JSON-RPC message gets an error response (*Error)
// and the session goes on; one over Limit gets CodeTooLarge; one over the
// hard limit closes the socket with 1009 (gorilla's read limit).

// hardLimit is the read limit: Options.HardLimit, else
// HardLimitFactor*Limit; never below Limit. A peer whose every message
// counts (porthole-master's ingest) sets HardLimit to Limit: a message
// over the limit then closes the socket instead of being skipped.
func (o *Options) hardLimit() int64 {
	if o.HardLimit > 0 {
		return max(o.HardLimit, o.Limit)
	}
	return o.Limit * HardLimitFactor
}

// WriteError sends a JSON-RPC error response. id nil is JSON-RPC's null:
// the answer to a notification or to a message whose id is unknown
// (JSON-RPC has no other way to answer them).
func (s *Stream) WriteError(id *json.RawMessage, code int, msg string) error {
	return s.WriteObject(errorResponse{"2.0", id, errorObject{code, msg}})
}

type errorResponse struct {
	JSONRPC string           `json:"jsonrpc"`
	ID      *json.RawMessage `json:"id"`
	Error   errorObject      `json:"error"`
}

type errorObject struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}
