package master

// The audit trail: who (the token's name), when, from where, did what on
// which machine, for every request the master proxies to an agent and
// every ticket it issues. Records are appended, one JSON line each, to
// DATA/audit.jsonl before the request goes on; at AuditMaxBytes/2 the file
// becomes audit.1.jsonl (the previous one dropped), so the trail holds
// between AuditMaxBytes/2 and AuditMaxBytes of the latest records. The
// agent logs the actions it performs itself, with the same principal
// (agent/session.go audit).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// DefaultAuditMaxBytes bounds the audit trail on disk (Options.AuditMaxBytes).
const DefaultAuditMaxBytes = 64 << 20

// auditLog is the trail's files.
type auditLog struct {
	dir      string // "" : no trail (nothing recorded, GET /api/audit empty)
	maxBytes int64
	maxAge   time.Duration // > 0: older records are not served

	mu   sync.Mutex
	f    *os.File
	size int64
	seq  uint64
}

func (l *auditLog) path(n int) string {
	if n == 0 {
		return filepath.Join(l.dir, "audit.jsonl")
	}
	return filepath.Join(l.dir, "audit.1.jsonl")
}

// open opens the current file and finds the last sequence number.
func openAudit(dir string, maxBytes int64, maxAge time.Duration) (*auditLog, error) {
	l := &auditLog{dir: dir, maxBytes: maxBytes, maxAge: maxAge}
	if dir == "" {
		return l, nil
	}
	if l.maxBytes <= 0 {
		l.maxBytes = DefaultAuditMaxBytes
	}
	for n := 1; n >= 0; n-- {
		l.scan(n, func(e *masterapi.AuditEntry) bool { l.seq = max(l.seq, e.Seq); return true })
	}
	f, err := os.OpenFile(l.path(0), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	l.f, l.size = f, st.Size()
	return l, nil
}

// record appends e, numbered and timed.
func (l *auditLog) record(e masterapi.AuditEntry) error {
	if l.dir == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if l.size+int64(len(b)) > l.maxBytes/2 && l.size > 0 {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	return err
}

// rotate makes the current file the old one; mu held.
func (l *auditLog) rotate() error {
	l.f.Close()
	if err := os.Rename(l.path(0), l.path(1)); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path(0), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	l.f, l.size = f, 0
	return nil
}

func (l *auditLog) close() {
	if l.f != nil {
		l.mu.Lock()
		l.f.Close()
		l.mu.Unlock()
	}
}

// scan calls fn with each record of file n, oldest first, until it
// returns false.
func (l *auditLog) scan(n int, fn func(*masterapi.AuditEntry) bool) bool {
	f, err := os.Open(l.path(n))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		return true
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var e masterapi.AuditEntry
			if json.Unmarshal(line, &e) == nil && !fn(&e) {
				return false
			}
		}
		if err != nil {
			return true
		}
	}
}

// auditFilter selects records.
type auditFilter struct {
	after                               uint64
	since                               time.Time
	principal, runtime, machine, action string
	limit                               int
}

func (f *auditFilter) match(e *masterapi.AuditEntry) bool {
	return e.Seq > f.after && !e.Time.Before(f.since) &&
		(f.principal == "" || e.Principal == f.principal) && (f.runtime == "" || e.Runtime == f.runtime) &&
		(f.machine == "" || e.Machine == f.machine) && (f.action == "" || e.Action == f.action)
}

// page returns the records f selects, oldest first.
func (l *auditLog) page(f auditFilter) masterapi.AuditPage {
	p := masterapi.AuditPage{Entries: []masterapi.AuditEntry{}, Next: f.after}
	if l.maxAge > 0 {
		if oldest := time.Now().Add(-l.maxAge); f.since.Before(oldest) {
			f.since = oldest
		}
	}
	l.mu.Lock() // a page sees whole records: none is being written
	defer l.mu.Unlock()
	for n := 1; n >= 0; n-- {
		if !l.scan(n, func(e *masterapi.AuditEntry) bool {
			if e.Seq <= f.after {
				return true
			}
			p.Next = e.Seq
			if f.match(e) {
				p.Entries = append(p.Entries, *e)
			}
			return len(p.Entries) < f.limit
		}) {
			break
		}
	}
	return p
}

// serveAudit is GET /api/audit?after=&since=&principal=&runtimeId=&machine=&action=&limit=.
func (m *Master) serveAudit(w http.ResponseWriter, r *http.Request, _ *Claims) {
	q := r.URL.Query()
	f := auditFilter{principal: q.Get("principal"), runtime: q.Get("runtimeId"), machine: q.Get("machine"), action: q.Get("action"), limit: masterapi.MaxAuditPage}
	var msg string
	if f.after, f.since, f.limit, msg = pageParams(q, masterapi.MaxAuditPage); msg != "" {
		writeJSONError(w, http.StatusBadRequest, msg)
		return
	}
	writeJSON(w, m.audit.page(f))
}

// auditProxied records a client's request to machine k's agent: what it
// asks for, read from the path and, for the agent's HTTP JSON-RPC
// endpoint, from the body (which it leaves for the agent to read).
func (m *Master) auditProxied(r *http.Request, c *Claims, rid, name, path string) {
	e := masterapi.AuditEntry{Principal: c.Principal(), TokenID: c.revocable(), Remote: r.RemoteAddr, Runtime: rid, Machine: name}
	switch {
	case path == "/v1/rpc" && r.Method == http.MethodGet:
		e.Action = "rpc"
	case path == "/v1/rpc" && r.Method == http.MethodPost:
		body, _ := io.ReadAll(io.LimitReader(r.Body, int64(m.opts.MaxEventBytes)+1))
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		var req struct {
			Method string `json:"method"`
			Params struct {
				ID     string   `json:"id"`
				Argv   []string `json:"argv"`
				Signal string   `json:"signal"`
			} `json:"params"`
		}
		json.Unmarshal(body, &req)
		e.Action, e.Process, e.Argv, e.Signal = req.Method, req.Params.ID, req.Params.Argv, req.Params.Signal
		if e.Action == "" {
			e.Action = "rpc"
		}
	case strings.HasPrefix(path, "/v1/processes/") && strings.HasSuffix(path, "/attach"):
		e.Action, e.Process = "attach", strings.TrimSuffix(strings.TrimPrefix(path, "/v1/processes/"), "/attach")
	default:
		e.Action, e.Method, e.Path = "http", r.Method, path
	}
	if e.Action == protocol.MethodStart && e.Argv == nil {
		e.Argv = []string{} // the agent's shell
	}
	if err := m.audit.record(e); err != nil {
		m.log.Error("audit record not written", "err", err, "principal", e.Principal, "action", e.Action)
	}
}

// pageParams reads ?after= (a sequence number), ?since= (RFC 3339) and
// ?limit= (1 to max, default max); msg names what is wrong.
func pageParams(q map[string][]string, maxLimit int) (after uint64, since time.Time, limit int, msg string) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	limit = maxLimit
	var err error
	if v := get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, since, 0, "after " + strconv.Quote(v) + ": want a sequence number"
		}
	}
	if v := get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return 0, since, 0, "since " + strconv.Quote(v) + ": want an RFC 3339 time"
		}
	}
	if v := get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit <= 0 || limit > maxLimit {
			return 0, since, 0, "limit " + strconv.Quote(v) + ": want 1 to " + strconv.Itoa(maxLimit)
		}
	}
	return after, since, limit, ""
}
