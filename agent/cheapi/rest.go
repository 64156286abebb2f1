package cheapi

// Che's exec-agent REST API (/process), answers as Che's: JSON bodies
// with a newline, plain-text errors.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// restPID reads {pid} and finds the process; it answers the error itself.
func (s *server) restPID(w http.ResponseWriter, r *http.Request) (*execProc, bool) {
	pid, err := strconv.ParseUint(r.PathValue("pid"), 10, 64)
	if err != nil {
		http.Error(w, "Pid value must be unsigned integer", http.StatusBadRequest)
		return nil, false
	}
	e, rerr := s.lookupExec(pid)
	if rerr != nil {
		http.Error(w, rerr.Message, http.StatusNotFound)
		return nil, false
	}
	return e, true
}

// restStart is POST /process[?channel=tunnel-N&types=stdout,stderr].
func (s *server) restStart(w http.ResponseWriter, r *http.Request, sess *session) {
	defer sess.end(nil)
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(s.a.Settings().MaxMessageBytes)+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > s.a.Settings().MaxMessageBytes {
		http.Error(w, fmt.Sprintf("body exceeds the limit of %d bytes (agent flag -max-message)", s.a.Settings().MaxMessageBytes), http.StatusRequestEntityTooLarge)
		return
	}
	var p struct{ Name, CommandLine, Type string }
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if p.Name == "" {
		http.Error(w, "Command name required", http.StatusBadRequest)
		return
	}
	if p.CommandLine == "" {
		http.Error(w, "Command line required", http.StatusBadRequest)
		return
	}
	var t *tunnel
	if ch := r.URL.Query().Get("channel"); ch != "" {
		if t = s.tunnel(ch); t == nil {
			http.Error(w, fmt.Sprintf("Tunnel with id '%s' doesn't exist. Process won't be started", ch), http.StatusNotFound)
			return
		}
	}
	e, err := s.startExec(p.Name, p.CommandLine, p.Type)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if t != nil {
		mask := evAll
		if types := r.URL.Query().Get("types"); types != "" {
			mask = parseMask(types)
		}
		e.mu.Lock()
		e.subs[t] = mask
		e.mu.Unlock()
	}
	writeJSON(w, e.info())
	e.release()
}

// restList is GET /process[?all=true].
func (s *server) restList(w http.ResponseWriter, r *http.Request, sess *session) {
	defer sess.end(nil)
	all, _ := strconv.ParseBool(r.URL.Query().Get("all"))
	writeJSON(w, s.listExec(all))
}

// restGet is GET /process/{pid}.
func (s *server) restGet(w http.ResponseWriter, r *http.Request, sess *session) {
	defer sess.end(nil)
	if e, ok := s.restPID(w, r); ok {
		writeJSON(w, e.info())
	}
}

// restKill is DELETE /process/{pid}: an empty 200, as Che's code does.
func (s *server) restKill(w http.ResponseWriter, r *http.Request, sess *session) {
	defer sess.end(nil)
	e, ok := s.restPID(w, r)
	if !ok {
		return
	}
	if rerr := e.kill(); rerr != nil {
		http.Error(w, rerr.Message, http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// restLogs is GET /process/{pid}/logs?from&till&limit&skip&format=json|text.
func (s *server) restLogs(w http.ResponseWriter, r *http.Request, sess *session) {
	defer sess.end(nil)
	e, ok := s.restPID(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	from, rerr := parseTime("from", q.Get("from"))
	if rerr == nil {
		var till time.Time
		if till, rerr = parseTime("till", q.Get("till")); rerr == nil {
			limit := queryInt(q.Get("limit"), defaultLogLimit)
			if limit == 0 {
				http.Error(w, "Required 'limit' to be > 0", http.StatusBadRequest)
				return
			}
			skip := queryInt(q.Get("skip"), 0)
			s.writeLogs(w, q.Get("format"), e.logs(from, till, limit, skip))
			return
		}
	}
	http.Error(w, rerr.Message, http.StatusBadRequest)
}

// queryInt reads Che's limit and skip: a value that is not a number >= 0
// falls back to def.
func queryInt(v string, def int) int {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return def
	}
	return n
}

func (s *server) writeLogs(w http.ResponseWriter, format string, lines []logLine) {
	if !strings.EqualFold(format, "text") {
		writeJSON(w, lines)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var b strings.Builder
	for _, l := range lines {
		kind := "STDOUT"
		if l.Kind == kindStderr {
			kind = "STDERR"
		}
		fmt.Fprintf(&b, "[%s] %s \t %s\n", kind, l.Time.Format(time.RFC3339Nano), l.Text)
	}
	io.WriteString(w, b.String())
}
