package cli

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/cheapi"
	"github.com/porthole-dev/porthole/internal/logging"
	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/internal/tlsconf"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// agentFlags are the agent's flags, shared with commands that embed it.
type agentFlags struct {
	listen, tokenFile, shell string
	insecure                 bool
	origins                  listFlag
	o                        agent.Options
	grace                    time.Duration
	logging                  logging.Flags
	// The listener's connection limits (agent.ServeOptions).
	headerTimeout, readTimeout, idleTimeout time.Duration
	maxPending                              int
	// gcPercent is -gc-percent: 0 means the default (agent.DefaultGCPercent,
	// or $GOGC when set); options resolves it, runOptions applies it.
	gcPercent int

	metricsListen string
	// TLS: the listener's certificate; the CA certificates trusted for a wss:// -master.
	tlsCert, tlsKey, cacert string
	// The tunnel to porthole-master.
	master, machineTokenFile, runtimeID, machineName string
	// tun is set by options when -master is given.
	tun *agent.MasterOptions

	// Che's agents (package agent/cheapi).
	che      bool
	cheShell string
	cheLog   int
}

// noListener reports whether -listen asks for no local listener.
func (f *agentFlags) noListener() bool { return f.listen == "" || f.listen == "none" }

func (f *agentFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":4444", "address to serve on; '' or none (with -master): serve only through the master")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token (default $PORTHOLE_TOKEN)")
	fs.BoolVar(&f.insecure, "insecure-no-auth", false, "serve without a token (trusted loopback tests only)")
	fs.Var(&f.origins, "allow-origin", "browser origin allowed to connect, e.g. https://ide.example.com (repeatable; * for any)")
	fs.StringVar(&f.shell, "shell", "", "command run when a start request has no argv (default $SHELL or /bin/sh)")
	fs.IntVar(&f.o.MaxProcesses, "max-processes", agent.DefaultMaxProcesses, "processes kept at once, running and exited")
	fs.IntVar(&f.o.RingBytes, "ring", agent.DefaultRingBytes, "bytes of output kept per stream (scrollback for reattach)")
	fs.IntVar(&f.o.MaxMessageBytes, "max-message", agent.DefaultMaxMessageBytes, "largest WebSocket message or HTTP body accepted, bytes")
	fs.DurationVar(&f.o.Retention, "retention", agent.DefaultRetention, "how long exited processes are kept")
	fs.DurationVar(&f.o.StallTimeout, "stall-timeout", agent.DefaultStallTimeout, "how long a viewer that stops reading may hold a process back")
	fs.DurationVar(&f.o.PingInterval, "ping", agent.DefaultPingInterval, "keepalive ping interval")
	fs.DurationVar(&f.grace, "grace", agent.DefaultGrace, "on SIGTERM, how long children get after SIGHUP/SIGTERM before SIGKILL")
	fs.DurationVar(&f.headerTimeout, "header-timeout", agent.DefaultHeaderTimeout, "how long a connection may take to send a request's headers")
	fs.DurationVar(&f.readTimeout, "read-timeout", agent.DefaultReadTimeout, "how long a request's headers and body may take (not a WebSocket's life)")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", agent.DefaultIdleTimeout, "how long a kept-alive connection may wait for its next request")
	fs.IntVar(&f.gcPercent, "gc-percent", 0, fmt.Sprintf("the Go GC's target heap growth between collections, percent of the live heap (default %d, or $GOGC when set): lower keeps less memory per session for more collections", agent.DefaultGCPercent))
	fs.IntVar(&f.maxPending, "max-pending-conns", agent.DefaultMaxPendingConns, "connections not in a request (new or idle) kept at once; beyond, the oldest is closed (at most a quarter of RLIMIT_NOFILE)")
	f.logging.Register(fs)
	fs.StringVar(&f.o.WebDir, "web", "", "directory of static pages served at / (the built web/terminal)")
	fs.StringVar(&f.master, "master", "", "porthole-master to serve through, ws://HOST:PORT or wss://HOST:PORT: the agent keeps a tunnel open to URL/api/agent")
	fs.StringVar(&f.machineTokenFile, "machine-token-file", "", "file holding the machine token for -master (default $"+envMachineToken+")")
	fs.StringVar(&f.runtimeID, "runtime-id", "", "runtime id for -master, workspace:env:owner")
	fs.StringVar(&f.machineName, "machine-name", "", "machine name for -master")
	fs.BoolVar(&f.che, "che", false, "also speak Eclipse Che's terminal-agent (/pty), exec-agent (/connect, /process, /liveness) and che-machine-exec (/connect, /attach/ID): docs/che-compatibility.md")
	fs.StringVar(&f.cheShell, "che-shell", "", "with -che: the shell of terminals and commands (default /bin/bash, else /bin/sh)")
	fs.IntVar(&f.cheLog, "che-log-bytes", cheapi.DefaultLogBytes, "with -che: bytes of exec-agent log kept per process (oldest lines dropped past it)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve -listen over TLS with this PEM certificate (reloaded when the file changes; needs -tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "the PEM private key of -tls-cert")
	fs.StringVar(&f.o.RecordDir, "record", "", "record every terminal session in this directory, an asciicast v2 file each (docs/operations.md)")
	fs.Int64Var(&f.o.RecordMax, "record-max", agent.DefaultRecordMax, "bytes at most per recording; beyond, it stops with a marker")
	fs.BoolVar(&f.o.RecordInput, "record-input", false, "with -record, record what is typed too (passwords included: think twice)")
	fs.StringVar(&f.o.PortScope, "ports", agent.PortsAll, "listening ports reported (ports.list, ports.changed, the master's port links): all (the network namespace's: a container's) or own (those of porthole's process tree: for a machine sharing the host's network)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics at /metrics on this address, without authentication ('': none; bind it where only the scraper reaches)")
	fs.StringVar(&f.cacert, "cacert", "", "PEM certificate(s) trusted for a wss:// -master, beside the system's")
}

// envMachineToken holds the machine token for -master; children never see it.
const envMachineToken = proc.EnvMachineToken

// options validates the flags and builds agent options.
func (f *agentFlags) options(e env, stderr *os.File) (agent.Options, error) {
	o := f.o
	log, err := f.logging.Logger(stderr)
	if err != nil {
		return o, usageError{err.Error()}
	}
	for name, v := range map[string]int{"-max-processes": o.MaxProcesses, "-ring": o.RingBytes, "-max-message": o.MaxMessageBytes, "-max-pending-conns": f.maxPending} {
		if v <= 0 {
			return o, usageError{fmt.Sprintf("%s %d: must be positive", name, v)}
		}
	}
	switch {
	case f.gcPercent < 0:
		return o, usageError{fmt.Sprintf("-gc-percent %d: must be positive", f.gcPercent)}
	case f.gcPercent == 0 && e["GOGC"] == "":
		f.gcPercent = agent.DefaultGCPercent
	}
	if o.RecordDir != "" {
		if st, err := os.Stat(o.RecordDir); err != nil || !st.IsDir() {
			return o, usageError{fmt.Sprintf("-record %q: not a directory", o.RecordDir)}
		}
	}
	if o.PortScope != agent.PortsAll && o.PortScope != agent.PortsOwn {
		return o, usageError{fmt.Sprintf("-ports %q: want %s or %s", o.PortScope, agent.PortsAll, agent.PortsOwn)}
	}
	if o.RecordMax < 4096 {
		return o, usageError{fmt.Sprintf("-record-max %d: must be at least 4096", o.RecordMax)}
	}
	if o.RingBytes < 4096 {
		return o, usageError{fmt.Sprintf("-ring %d: must be at least 4096", o.RingBytes)}
	}
	for name, v := range map[string]time.Duration{"-stall-timeout": o.StallTimeout, "-ping": o.PingInterval, "-grace": f.grace,
		"-header-timeout": f.headerTimeout, "-read-timeout": f.readTimeout, "-idle-timeout": f.idleTimeout} {
		if v <= 0 {
			return o, usageError{fmt.Sprintf("%s %s: must be positive", name, v)}
		}
	}
	if f.master == "" {
		if f.noListener() {
			return o, usageError{fmt.Sprintf("-listen %q: no listener needs -master (nothing else would serve the agent)", f.listen)}
		}
		for _, fl := range []struct{ name, v string }{{"-machine-token-file", f.machineTokenFile}, {"-runtime-id", f.runtimeID}, {"-machine-name", f.machineName}} {
			if fl.v != "" {
				return o, usageError{fl.name + " needs -master"}
			}
		}
	}
	tok, err := readToken(f.tokenFile, e)
	if err != nil {
		return o, err
	}
	if tok == "" && !f.insecure && f.noListener() {
		// Served only through the master, which authenticates clients:
		// the agent still needs a token, which nobody ever presents.
		tok = rand.Text()
	}
	o.Token = tok
	o.InsecureNoAuth = f.insecure
	o.AllowedOrigins = f.origins
	o.Shell = f.shell
	o.Version = Version
	o.Logger = log
	if f.che {
		if f.cheLog <= 0 {
			return o, usageError{fmt.Sprintf("-che-log-bytes %d: must be positive", f.cheLog)}
		}
		o.Extensions = append(o.Extensions, cheapi.Extension(cheapi.Options{Shell: f.cheShell, LogBytes: f.cheLog, MachineName: f.machineName}))
	} else if f.cheShell != "" {
		return o, usageError{"-che-shell needs -che"}
	}
	if f.master != "" {
		if f.tun, err = f.masterOptions(e); err != nil {
			return o, err
		}
	}
	return o, nil
}

// masterOptions validates the -master flags and builds the agent's
// options for the tunnel to the master.
func (f *agentFlags) masterOptions(e env) (*agent.MasterOptions, error) {
	u, err := url.Parse(f.master)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return nil, usageError{fmt.Sprintf("-master %q: want ws://HOST[:PORT] or wss://HOST[:PORT]", f.master)}
	}
	var tok string
	if f.machineTokenFile != "" {
		if tok, err = readSecretFile("-machine-token-file", f.machineTokenFile); err != nil {
			return nil, err
		}
	} else if tok = e[envMachineToken]; tok == "" {
		return nil, usageError{"-master needs a machine token: -machine-token-file FILE or $" + envMachineToken}
	}
	if f.runtimeID == "" {
		return nil, usageError{"-master needs -runtime-id (workspace:env:owner)"}
	}
	if f.machineName == "" {
		return nil, usageError{"-master needs -machine-name"}
	}
	conf, err := tlsconf.Client(f.cacert)
	if err != nil {
		return nil, usageError{fmt.Sprintf("-cacert %s: %v", f.cacert, err)}
	}
	return &agent.MasterOptions{URL: f.master, Token: tok, RuntimeID: f.runtimeID, MachineName: f.machineName, TLS: conf}, nil
}

// listen opens the local listener (over TLS with -tls-cert), or none for
// -listen none.
func (f *agentFlags) listener(log *slog.Logger) (net.Listener, error) {
	if f.noListener() {
		return nil, nil
	}
	var conf *tls.Config
	if f.tlsCert != "" || f.tlsKey != "" {
		r, err := tlsconf.NewReloader(f.tlsCert, f.tlsKey, log)
		if err != nil {
			return nil, usageError{err.Error()}
		}
		conf = tlsconf.Server(r)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("-listen %s: %w", f.listen, err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	return ln, nil
}

func runAgent(ctx context.Context, args []string, e env, stderr *os.File) error {
	fs := newFlagSet("agent", stderr)
	var f agentFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("agent takes no arguments; got %q", fs.Args())}
	}
	o, err := f.runOptions(e, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	o.Logger.Info("agent started", "addr", addrOf(o.Listener), "master", f.master, "version", Version)
	return agent.Run(ctx, o)
}

// runOptions validates the flags and opens the listener: the options of
// agent.Run, also those of the entrypoint's agent. The agent serves on the
// listener (unless -listen none) and through the master (with -master).
func (f *agentFlags) runOptions(e env, stderr *os.File) (agent.RunOptions, error) {
	o, err := f.options(e, stderr)
	if err != nil {
		return agent.RunOptions{}, err
	}
	ln, err := f.listener(o.Logger)
	if err != nil {
		return agent.RunOptions{}, err
	}
	if f.gcPercent > 0 { // 0: $GOGC, which the runtime read at start
		debug.SetGCPercent(f.gcPercent)
	}
	var mln net.Listener
	if f.metricsListen != "" {
		if mln, err = net.Listen("tcp", f.metricsListen); err != nil {
			if ln != nil {
				ln.Close()
			}
			return agent.RunOptions{}, fmt.Errorf("-metrics-listen %s: %w", f.metricsListen, err)
		}
	}
	return agent.RunOptions{Options: o, ServeOptions: agent.ServeOptions{Listener: ln, Master: f.tun, Grace: f.grace, MetricsListener: mln,
		HeaderTimeout: f.headerTimeout, ReadTimeout: f.readTimeout, IdleTimeout: f.idleTimeout, MaxPendingConns: f.maxPending}}, nil
}

// addrOf is ln's address for logs.
func addrOf(ln net.Listener) string {
	if ln == nil {
		return "none"
	}
	return ln.Addr().String()
}
