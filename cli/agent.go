package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// agentFlags are the agent's flags, shared with commands that embed it.
type agentFlags struct {
	listen, tokenFile, shell, logLevel string
	insecure                           bool
	origins                            listFlag
	o                                  agent.Options
	grace                              time.Duration

	// The tunnel to porthole-master.
	master, machineTokenFile, runtimeID, machineName string
	// tun is set by options when -master is given; its Handler is not.
	tun *tunnel.AgentOptions
}

// noListener reports whether -listen asks for no local listener.
func (f *agentFlags) noListener() bool { return f.listen == "" || f.listen == "none" }

func (f *agentFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":4444", "address to serve on; '' or none (with -master): serve only through the master")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token (default $PORTHOLE_TOKEN)")
	fs.BoolVar(&f.insecure, "insecure-no-auth", false, "serve without a token (trusted loopback tests only)")
	fs.Var(&f.origins, "allow-origin", "browser origin allowed to connect, e.g. https://ide.example.com (repeatable; * for any)")
	fs.StringVar(&f.shell, "shell", "", "command run when a start request has no argv (default $SHELL or /bin/sh)")
	fs.IntVar(&f.o.MaxProcesses, "max-processes", 512, "processes kept at once, running and exited")
	fs.IntVar(&f.o.RingBytes, "ring", 1<<20, "bytes of output kept per stream (scrollback for reattach)")
	fs.IntVar(&f.o.MaxMessageBytes, "max-message", 1<<20, "largest WebSocket message or HTTP body accepted, bytes")
	fs.DurationVar(&f.o.Retention, "retention", 10*time.Minute, "how long exited processes are kept")
	fs.DurationVar(&f.o.StallTimeout, "stall-timeout", time.Second, "how long a viewer that stops reading may hold a process back")
	fs.DurationVar(&f.o.PingInterval, "ping", 15*time.Second, "keepalive ping interval")
	fs.DurationVar(&f.grace, "grace", 5*time.Second, "on SIGTERM, how long children get after SIGHUP/SIGTERM before SIGKILL")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.o.WebDir, "web", "", "directory of static pages served at / (the built web/terminal)")
	fs.StringVar(&f.master, "master", "", "porthole-master to serve through, ws://HOST:PORT or wss://HOST:PORT: the agent keeps a tunnel open to URL/api/agent")
	fs.StringVar(&f.machineTokenFile, "machine-token-file", "", "file holding the machine token for -master (default $"+envMachineToken+")")
	fs.StringVar(&f.runtimeID, "runtime-id", "", "runtime id for -master, workspace:env:owner")
	fs.StringVar(&f.machineName, "machine-name", "", "machine name for -master")
}

// envMachineToken holds the machine token for -master; children never see it.
const envMachineToken = "PORTHOLE_MACHINE_TOKEN"

// options validates the flags and builds agent options.
func (f *agentFlags) options(e env, stderr *os.File) (agent.Options, error) {
	o := f.o
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return o, usageError{fmt.Sprintf("-log-level %q: want debug, info, warn or error", f.logLevel)}
	}
	for name, v := range map[string]int{"-max-processes": o.MaxProcesses, "-ring": o.RingBytes, "-max-message": o.MaxMessageBytes} {
		if v <= 0 {
			return o, usageError{fmt.Sprintf("%s %d: must be positive", name, v)}
		}
	}
	if o.RingBytes < 4096 {
		return o, usageError{fmt.Sprintf("-ring %d: must be at least 4096", o.RingBytes)}
	}
	for name, v := range map[string]time.Duration{"-stall-timeout": o.StallTimeout, "-ping": o.PingInterval, "-grace": f.grace} {
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
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if f.master != "" {
		if f.tun, err = f.tunnelOptions(e); err != nil {
			return o, err
		}
		f.tun.Logger = o.Logger.With("component", "tunnel")
	}
	return o, nil
}

// tunnelOptions validates the -master flags and builds the tunnel's
// options, all but the handler.
func (f *agentFlags) tunnelOptions(e env) (*tunnel.AgentOptions, error) {
	u, err := url.Parse(f.master)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return nil, usageError{fmt.Sprintf("-master %q: want ws://HOST[:PORT] or wss://HOST[:PORT]", f.master)}
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/agent"
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
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	h.Set(tunnel.HeaderRuntimeID, f.runtimeID)
	h.Set(tunnel.HeaderMachineName, f.machineName)
	h.Set(tunnel.HeaderAgentVersion, Version)
	h.Set(tunnel.HeaderProtocol, protocol.Version)
	h.Set(protocol.HeaderProtocol, protocol.Version) // as on every agent request
	return &tunnel.AgentOptions{URL: u.String(), Header: h, Trust: agent.TrustedContext}, nil
}

// listen opens the local listener, or none for -listen none.
func (f *agentFlags) listener() (net.Listener, error) {
	if f.noListener() {
		return nil, nil
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("-listen %s: %w", f.listen, err)
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
	o, err := f.options(e, stderr)
	if err != nil {
		return err
	}
	a, err := agent.New(o)
	if err != nil {
		return err
	}
	ln, err := f.listener()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	o.Logger.Info("agent started", "addr", addrOf(ln), "master", f.master, "version", Version)
	return serve(ctx, a, ln, f.tun, f.grace, o.Logger)
}

// addrOf is ln's address for logs.
func addrOf(ln net.Listener) string {
	if ln == nil {
		return "none"
	}
	return ln.Addr().String()
}

// serve runs the agent on ln (unless nil) and through the master's tunnel
// (unless tun is nil) until ctx ends, then shuts down: connections closed,
// children hung up, a grace period, then killed; then the tunnel and the
// listener are closed.
func serve(ctx context.Context, a *agent.Agent, ln net.Listener, tun *tunnel.AgentOptions, grace time.Duration, log *slog.Logger) error {
	var srv *http.Server
	served := make(chan error, 1)
	if ln != nil {
		srv = &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { served <- srv.Serve(ln) }()
	}
	tunCtx, stopTunnel := context.WithCancel(context.Background())
	defer stopTunnel()
	tunneled := make(chan error, 1)
	if tun != nil {
		o := *tun
		o.Handler = a.Handler()
		go func() { tunneled <- tunnel.Serve(tunCtx, o) }()
	}
	var err error
	select {
	case err = <-served:
		srv = nil // already ended
	case err = <-tunneled: // only for invalid options
		tun = nil
	case <-ctx.Done():
		log.Info("shutting down", "grace", grace)
	}
	// The agent first: it refuses new requests, ends every session (also
	// long HTTP calls such as process.wait, and those through the tunnel)
	// and gives children their grace period; then the tunnel and the
	// server have nothing left to wait for.
	actx, cancel := context.WithTimeout(context.Background(), grace+5*time.Second)
	defer cancel()
	a.Shutdown(actx, grace)
	if tun != nil {
		stopTunnel()
		<-tunneled
	}
	if srv != nil {
		sctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		srv.Shutdown(sctx)
		if serr := <-served; err == nil && !errors.Is(serr, http.ErrServerClosed) {
			err = serr
		}
	}
	return err
}
