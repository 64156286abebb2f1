package master

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
)

// MaxLogsPage bounds the entries one GET .../logs returns.
const MaxLogsPage = 10000

// scope authenticates a reader: a client sees every runtime without its
// internal servers; a machine sees only its own runtime, internal servers
// included. only is the runtime a machine token is restricted to.
func (m *Master) scope(w http.ResponseWriter, r *http.Request) (internal bool, only string, ok bool) {
	c, e := m.clientAuth(r, true)
	if e != nil {
		m.refuse(w, r, e)
		return false, "", false
	}
	if c.Kind == KindMachine {
		return true, c.Runtime, true
	}
	return false, "", true
}

func (m *Master) serveRuntimes(w http.ResponseWriter, r *http.Request) {
	internal, only, ok := m.scope(w, r)
	if !ok {
		return
	}
	writeJSON(w, m.state.runtimes(internal, only))
}

func (m *Master) serveRuntime(w http.ResponseWriter, r *http.Request) {
	internal, only, ok := m.scope(w, r)
	if !ok {
		return
	}
	rid := r.PathValue("rid")
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

// machineKey authenticates and returns the machine of the path.
func (m *Master) machineKey(w http.ResponseWriter, r *http.Request) (store.Key, bool, bool) {
	internal, only, ok := m.scope(w, r)
	if !ok {
		return store.Key{}, false, false
	}
	k := store.Key{Runtime: r.PathValue("rid"), Machine: r.PathValue("name")}
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

func (m *Master) serveMachine(w http.ResponseWriter, r *http.Request) {
	k, internal, ok := m.machineKey(w, r)
	if !ok {
		return
	}
	writeJSON(w, m.state.machineView(k, internal))
}

// serveLogs returns a machine's journal entries (logs and events) after
// seq ?after= (default 0: from the oldest kept), or from time ?since=
// (RFC 3339), at most ?limit= (default and maximum MaxLogsPage), as
// {"entries": [...], "next": SEQ}; next is the ?after= of the next page.
func (m *Master) serveLogs(w http.ResponseWriter, r *http.Request) {
	k, _, ok := m.machineKey(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var after uint64
	var since time.Time
	limit := MaxLogsPage
	var err error
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeJSONError(w, http.StatusBadRequest, "after "+strconv.Quote(v)+": want a sequence number")
			return
		}
	}
	if v := q.Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			writeJSONError(w, http.StatusBadRequest, "since "+strconv.Quote(v)+": want an RFC 3339 time")
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit <= 0 || limit > MaxLogsPage {
			writeJSONError(w, http.StatusBadRequest, "limit "+strconv.Quote(v)+": want 1 to "+strconv.Itoa(MaxLogsPage))
			return
		}
	}
	out := []json.RawMessage{}
	next := after
	err = m.state.entries(r.Context(), k, after, 0, func(seq uint64, data []byte) bool {
		next = seq
		if !since.IsZero() && entryTime(data).Before(since) {
			return true
		}
		out = append(out, json.RawMessage(append([]byte(nil), data...)))
		return len(out) < limit
	})
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, map[string]any{"entries": out, "next": next})
}

// entryTime reads an entry's time.
func entryTime(data []byte) time.Time {
	var e struct {
		Time time.Time `json:"time"`
	}
	json.Unmarshal(data, &e)
	return e.Time
}

// serveInfo tells clients (the dashboard) what they talk to.
func (m *Master) serveInfo(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := m.scope(w, r); !ok {
		return
	}
	writeJSON(w, map[string]any{"version": m.opts.Version, "protocolVersion": protocol.Version})
}
