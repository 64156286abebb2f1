package master

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// The JSON HTTP API (readers: see scope).

func (m *Master) serveRuntimes(w http.ResponseWriter, r *http.Request, c *Claims) {
	writeJSON(w, m.state.runtimes(scope(c)))
}

func (m *Master) serveRuntime(w http.ResponseWriter, r *http.Request, c *Claims) {
	internal, only := scope(c)
	rid := r.PathValue("rid")
	if err := CheckRuntimeID(rid); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if only != "" && rid != only {
		m.refuse(w, r, &httpError{http.StatusForbidden, "a machine token reads only its own runtime"})
		return
	}
	rts := m.state.runtimes(internal, rid)
	if len(rts) == 0 {
		writeJSONError(w, http.StatusNotFound, "runtime "+strconv.Quote(rid)+" not found")
		return
	}
	writeJSON(w, rts[0])
}

// machineKey returns the machine of the path, when c may read it and it
// exists; otherwise it answers.
func (m *Master) machineKey(w http.ResponseWriter, r *http.Request, c *Claims) (k store.Key, internal, ok bool) {
	internal, only := scope(c)
	k = store.Key{Runtime: r.PathValue("rid"), Machine: r.PathValue("name")}
	if err := checkKey(k.Runtime, k.Machine); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return k, false, false
	}
	if only != "" && k.Runtime != only {
		m.refuse(w, r, &httpError{http.StatusForbidden, "a machine token reads only its own runtime"})
		return k, false, false
	}
	if m.state.machineView(k, false) == nil {
		writeJSONError(w, http.StatusNotFound, "machine "+strconv.Quote(k.Machine)+" of runtime "+strconv.Quote(k.Runtime)+" not found")
		return k, false, false
	}
	return k, internal, true
}

func (m *Master) serveMachine(w http.ResponseWriter, r *http.Request, c *Claims) {
	k, internal, ok := m.machineKey(w, r, c)
	if !ok {
		return
	}
	writeJSON(w, m.state.machineView(k, internal))
}

// serveLogs returns a machine's journal entries (logs and events) after
// seq ?after= (default 0: from the oldest kept), or from time ?since=
// (RFC 3339), at most ?limit= (default and maximum masterapi.MaxLogsPage),
// as a masterapi.LogsPage; next is the ?after= of the next page.
func (m *Master) serveLogs(w http.ResponseWriter, r *http.Request, c *Claims) {
	k, _, ok := m.machineKey(w, r, c)
	if !ok {
		return
	}
	after, since, limit, msg := pageParams(r.URL.Query(), masterapi.MaxLogsPage)
	if msg != "" {
		writeJSONError(w, http.StatusBadRequest, msg)
		return
	}
	page := masterapi.LogsPage{Entries: []json.RawMessage{}, Next: after}
	err := m.state.entries(r.Context(), k, after, 0, func(seq uint64, data []byte) bool {
		page.Next = seq
		if !since.IsZero() && entryTime(data).Before(since) {
			return true
		}
		page.Entries = append(page.Entries, json.RawMessage(append([]byte(nil), data...)))
		return len(page.Entries) < limit
	})
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, page)
}

// entryTime reads an entry's time.
func entryTime(data []byte) time.Time {
	t, _ := EntryTime(data)
	return t
}

// EntryTime reads the time of a journal entry (the store's entry data,
// a masterapi.Entry), for the store's retention by age
// (store.Options.Time). It reads only up to the "time" field, which the
// master writes second.
func EntryTime(data []byte) (time.Time, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return time.Time{}, false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return time.Time{}, false
		}
		if k == "time" {
			var t time.Time
			if err := dec.Decode(&t); err != nil {
				return time.Time{}, false
			}
			return t, true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return time.Time{}, false
		}
	}
	return time.Time{}, false
}

// serveInfo tells clients (the dashboard) what they talk to.
func (m *Master) serveInfo(w http.ResponseWriter, r *http.Request, _ *Claims) {
	writeJSON(w, masterapi.Info{Version: m.opts.Version, ProtocolVersion: protocol.Version})
}
