package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/agent"
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
}

func (f *agentFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":4444", "address to serve on")
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
}

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
	tok, err := readToken(f.tokenFile, e)
	if err != nil {
		return o, err
	}
	o.Token = tok
	o.InsecureNoAuth = f.insecure
	o.AllowedOrigins = f.origins
	o.Shell = f.shell
	o.Version = Version
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return o, nil
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
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", f.listen, err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	o.Logger.Info("agent listening", "addr", ln.Addr().String(), "version", Version)
	return serve(ctx, a, ln, f.grace, o.Logger)
}

// serve runs the agent on ln until ctx ends, then shuts down: connections
// closed, children hung up, a grace period, then killed.
func serve(ctx context.Context, a *agent.Agent, ln net.Listener, grace time.Duration, log *slog.Logger) error {
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", grace)
	// The agent first: it refuses new requests, ends every session (also
	// long HTTP calls such as process.wait) and gives children their grace
	// period; then the server has nothing left to wait for.
	actx, cancel := context.WithTimeout(context.Background(), grace+5*time.Second)
	defer cancel()
	a.Shutdown(actx, grace)
	sctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
