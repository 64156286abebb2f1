// Package cheapi makes the porthole agent a drop-in for Eclipse Che's
// in-container agents: the terminal-agent (/pty), the exec-agent
// (JSON-RPC on /connect, REST on /process, /liveness) and che-machine-exec
// (create, check, resize, listContainers on /connect, /attach/{id}). The
// adapters are thin: every process is one of the agent's own (its table,
// its ids, its retention), and every byte of output reaches Che's clients
// through the agent's one viewer loop (agent.Process.Follow). See
// docs/che-compatibility.md for the wire, message by message, next to what
// Che's own agents do.
package cheapi

import (
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
)

// Defaults of Options.
const (
	// DefaultLogBytes bounds the exec-agent log kept per process.
	DefaultLogBytes = 1 << 20
	// DefaultLogLine is the longest log line: a longer run of output
	// without a newline is cut into lines of this many bytes.
	DefaultLogLine = 64 << 10
	// DefaultQueue bounds the messages queued to one JSON-RPC connection;
	// a full queue holds its writers back, for at most the agent's write
	// timeout, after which the connection is closed (1008).
	DefaultQueue = 1024
)

// Options configure the adapters. Zero values mean the defaults.
type Options struct {
	// Shell runs commands (exec-agent: Shell -c COMMAND; machine-exec when
	// the command names none) and is the terminal-agent's shell. Default
	// /bin/bash, else /bin/sh.
	Shell string
	// TerminalShell, if set, replaces Shell for /pty (run with no
	// arguments, as Che's -cmd).
	TerminalShell string
	// LogBytes bounds each exec-agent process's log (the text of its
	// lines); the oldest lines are dropped past it. Default DefaultLogBytes.
	LogBytes int
	// LogLine is the longest log line in bytes. Default DefaultLogLine.
	LogLine int
	// Queue bounds the messages queued per JSON-RPC connection. Default
	// DefaultQueue.
	Queue int
	// MachineName is the machine che-machine-exec's listContainers reports
	// and create accepts. Default $CHE_MACHINE_NAME, else the host name.
	MachineName string
}

func (o *Options) setDefaults() {
	if o.Shell == "" {
		o.Shell = "/bin/sh"
		if _, err := os.Stat("/bin/bash"); err == nil {
			o.Shell = "/bin/bash"
		}
	}
	if o.TerminalShell == "" {
		o.TerminalShell = o.Shell
	}
	if o.LogBytes <= 0 {
		o.LogBytes = DefaultLogBytes
	}
	if o.LogLine <= 0 {
		o.LogLine = DefaultLogLine
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.MachineName == "" {
		o.MachineName = os.Getenv("CHE_MACHINE_NAME")
	}
	if o.MachineName == "" {
		o.MachineName, _ = os.Hostname()
	}
}

// Extension returns the agent extension that serves Che's routes at the
// root of the agent's handler (agent.Options.Extensions):
//
//	GET /connect                 exec-agent and che-machine-exec JSON-RPC
//	GET /pty                     terminal-agent
//	GET /attach/{id}             che-machine-exec attach
//	POST, GET /process           exec-agent REST: start, list
//	GET, DELETE /process/{pid}   exec-agent REST: get, kill
//	GET /process/{pid}/logs      exec-agent REST: logs
//	GET /liveness                200, never authenticated
func Extension(o Options) agent.Extension {
	o.setDefaults()
	return func(a *agent.Agent) map[string]http.Handler {
		s := &server{a: a, opts: o, log: a.Logger().With("component", "che"), tunnels: make(map[string]*tunnel)}
		s.upgrader = websocket.Upgrader{
			ReadBufferSize:  1 << 10,
			WriteBufferSize: 16 << 10,
			// Origins are checked before the upgrade (agent.Authorize).
			CheckOrigin: func(*http.Request) bool { return true },
		}
		return map[string]http.Handler{
			"GET /connect":            s.guard("che-connect", s.serveConnect),
			"GET /pty":                s.guard("che-pty", s.servePTY),
			"GET /attach/{id}":        s.guard("che-attach", s.serveAttach),
			"POST /process":           s.guard("che-rest", s.restStart),
			"GET /process":            s.guard("che-rest", s.restList),
			"GET /process/{pid}":      s.guard("che-rest", s.restGet),
			"DELETE /process/{pid}":   s.guard("che-rest", s.restKill),
			"GET /process/{pid}/logs": s.guard("che-rest", s.restLogs),
			"GET /liveness":           http.HandlerFunc(serveLiveness),
		}
	}
}

// server is the adapters' shared state: the JSON-RPC connections
// (tunnels) by id, for REST's ?channel= and machine-exec's broadcasts.
type server struct {
	a        *agent.Agent
	opts     Options
	log      *slog.Logger
	upgrader websocket.Upgrader

	mu      sync.Mutex
	tunnels map[string]*tunnel
	seq     int
}

func serveLiveness(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }

// cheToken is the token as Che's clients send it: ?token= first (the
// IDE, cloud-shell), else the Authorization header raw (che-go-jsonrpc's
// Dial) or Bearer. "" leaves the agent's own places to Authorize.
func cheToken(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	if scheme, t, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(t)
	}
	return h
}

// guard authenticates a request (agent.Authorize with Che's token
// styles) and registers it as an agent session for the handler's whole
// life; ctx ends at the agent's shutdown.
func (s *server) guard(kind string, h func(w http.ResponseWriter, r *http.Request, sess *session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := s.a.Authorize(r, cheToken(r)); status != 0 {
			http.Error(w, msg, status)
			return
		}
		ctx, end, err := s.a.Session(r, kind)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		sess := &session{ctx: ctx, end: end, log: s.log.With("kind", kind, "remote", r.RemoteAddr)}
		h(w, r, sess)
	})
}
