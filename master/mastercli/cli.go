// Package mastercli is porthole-master's command line: the server and
// the token command. cmd/porthole-master is a thin main around Main.
package mastercli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/porthole-dev/porthole/internal/httpserve"
	"github.com/porthole-dev/porthole/internal/logging"
	"github.com/porthole-dev/porthole/internal/tlsconf"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/dashboard"
	"github.com/porthole-dev/porthole/master/store"
)

// pruneEvery is how often the journal's retention is applied to every
// machine (-keep-age; a commit applies the others to the machines it
// writes).
const pruneEvery = 10 * time.Minute

// Version is set at build time with -ldflags "-X .../mastercli.Version=...".
var Version = "dev"

const usage = `porthole-master: receives every machine's statuses and logs, serves them
to clients and a dashboard, and proxies terminals to the agents.

Usage:
  porthole-master -listen ADDR -data DIR [flags]       serve (flags below)
  porthole-master token -data DIR -runtime-id ID -machine-name NAME [-ttl D]
                                                       print a machine token
  porthole-master token -data DIR -client -name WHO [-ttl D]
                                                       print a client token
                                  (DIR must hold the signing key; -init creates it)
  porthole-master token list -data DIR                 list the tokens issued
  porthole-master token revoke -data DIR NAME|ID       revoke tokens (a running master
                                                       closes their connections)
  porthole-master version
`

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// flagError is a usage error the flag package has printed already, with
// the usage: Main only sets the exit code.
type flagError struct{ usageError }

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	err := run(context.Background(), args, stdout, stderr)
	var ue usageError
	var fe flagError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &fe):
		return 2
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "porthole-master:", ue.msg)
		return 2
	default:
		fmt.Fprintln(stderr, "porthole-master:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return runToken(args[1:], stdout, stderr)
		case "version", "-version", "--version":
			fmt.Fprintf(stdout, "porthole-master %s\n", Version)
			return nil
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			fmt.Fprintln(stdout)
			runServe(ctx, []string{"-h"}, stdout) // prints the serve flags; ErrHelp
			return nil
		}
		if !strings.HasPrefix(args[0], "-") {
			fmt.Fprint(stderr, usage)
			return usageError{fmt.Sprintf("unknown command %q", args[0])}
		}
	}
	return runServe(ctx, args, stderr)
}

func newFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return flagError{usageError{err.Error()}}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	return nil
}

// dataDir checks -data: it must be given; it is created when missing.
func dataDir(dir string) error {
	if dir == "" {
		return usageError{"-data DIR is required: the directory of the store and the signing key"}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("-data %s: %w", dir, err)
	}
	return nil
}

func runToken(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return runTokenList(args[1:], stdout, stderr)
		case "revoke":
			return runTokenRevoke(args[1:], stdout, stderr)
		}
	}
	fs := newFlagSet("porthole-master token", stderr)
	data := fs.String("data", "", "the master's data directory (holds the signing key and the token registry)")
	rid := fs.String("runtime-id", "", "machine token: the runtime id, workspace:env:owner")
	name := fs.String("machine-name", "", "machine token: the machine name")
	client := fs.Bool("client", false, "print a client token instead")
	who := fs.String("name", "", "client token: who it is for (a person, a team, a script), the principal of logs and the audit trail; 'unnamed' if not given")
	ttl := fs.Duration("ttl", 0, fmt.Sprintf("how long the token is valid (0: %s for a client token, %s for a machine token; -1s: never expires)", master.DefaultClientTTL, master.DefaultMachineTTL))
	initKey := fs.Bool("init", false, "create the data directory and its signing key when missing (otherwise a missing key is an error: a mistyped -data would mint tokens no master accepts)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *initKey {
		if err := dataDir(*data); err != nil {
			return err
		}
	} else if *data == "" {
		return usageError{"-data DIR is required: the directory of the store and the signing key"}
	}
	switch {
	case *client && (*rid != "" || *name != ""):
		return usageError{"-client and -runtime-id/-machine-name exclude each other"}
	case !*client && (*rid == "" || *name == ""):
		return usageError{"a machine token needs -runtime-id and -machine-name (or -client for a client token)"}
	case !*client && *who != "":
		return usageError{"-name is a client token's: a machine token's name is RUNTIME/MACHINE"}
	case !*client && strings.Count(*rid, ":") != 2:
		return usageError{fmt.Sprintf("-runtime-id %q: want workspace:env:owner (three parts separated by ':')", *rid)}
	}
	if !*client {
		if err := master.CheckRuntimeID(*rid); err != nil {
			return usageError{"-runtime-id: " + err.Error()}
		}
		if err := master.CheckMachineName(*name); err != nil {
			return usageError{"-machine-name: " + err.Error()}
		}
	}
	s, err := loadSigner(*data, *initKey)
	if err != nil {
		return err
	}
	o := master.IssueOptions{Kind: master.KindMachine, Runtime: *rid, Machine: *name, TTL: *ttl}
	if *client {
		o = master.IssueOptions{Kind: master.KindClient, Name: *who, TTL: *ttl}
	}
	switch {
	case *ttl == 0 && *client:
		o.TTL = master.DefaultClientTTL
	case *ttl == 0:
		o.TTL = master.DefaultMachineTTL
	case *ttl < 0:
		o.TTL = 0
	}
	tok, rec, err := s.Issue(o)
	if err != nil {
		return usageError{err.Error()}
	}
	if err := master.NewRegistry(*data).Add(rec); err != nil {
		return fmt.Errorf("token registry: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// loadSigner reads data's signing key (creating it with init).
func loadSigner(data string, init bool) (*master.Signer, error) {
	load := master.ReadSigner
	if init {
		load = master.LoadSigner
	}
	s, err := load(data)
	if errors.Is(err, master.ErrNoSigningKey) {
		return nil, fmt.Errorf("-data %s: %w; is the directory right? The master creates the key when it first starts; -init creates it here", data, err)
	}
	return s, err
}

// runTokenList is `porthole-master token list -data DIR`.
func runTokenList(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("porthole-master token list", stderr)
	data := fs.String("data", "", "the master's data directory (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return usageError{"-data DIR is required"}
	}
	recs, err := master.NewRegistry(*data).List()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tKIND\tISSUED\tEXPIRES\tSTATUS")
	now := time.Now()
	for _, r := range recs {
		exp, status := "never", "valid"
		if r.Expires != nil {
			exp = r.Expires.Format(time.RFC3339)
			if now.After(*r.Expires) {
				status = "expired"
			}
		}
		if r.Revoked != nil {
			status = "revoked " + r.Revoked.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Kind, r.Issued.Format(time.RFC3339), exp, status)
	}
	return tw.Flush()
}

// runTokenRevoke is `porthole-master token revoke -data DIR NAME|ID`.
func runTokenRevoke(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("porthole-master token revoke", stderr)
	data := fs.String("data", "", "the master's data directory (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return flagError{usageError{err.Error()}}
	}
	if *data == "" || fs.NArg() != 1 {
		return usageError{"usage: porthole-master token revoke -data DIR NAME|ID"}
	}
	n, err := master.NewRegistry(*data).Revoke(fs.Arg(0), time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d token(s) revoked; a running master refuses them and closes their connections within a second or two\n", n)
	return nil
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("porthole-master", stderr)
	listen := fs.String("listen", ":8080", "address to serve everything on")
	data := fs.String("data", "", "directory of the embedded store and the signing key (required)")
	bins := fs.String("binaries", "", "directory of the binaries served at /agent-binaries/ (default: this executable's)")
	keep := fs.Int("keep-entries", store.DefaultKeepEntries, "journal entries (log lines and events) kept per machine")
	keepBytes := fs.Int64("keep-bytes", store.DefaultKeepBytes, "journal bytes kept per machine on disk; the oldest entries beyond are dropped")
	keepAge := fs.Duration("keep-age", 0, "journal entries older than this are dropped (checked every "+pruneEvery.String()+"); 0 keeps them whatever their age")
	tlsCert := fs.String("tls-cert", "", "serve -listen over TLS (https, wss) with this PEM certificate, reloaded when the file changes (needs -tls-key)")
	tlsKey := fs.String("tls-key", "", "the PEM private key of -tls-cert")
	auditMax := fs.Int64("audit-max-bytes", master.DefaultAuditMaxBytes, "bytes of audit trail kept on disk (DATA/audit.jsonl and audit.1.jsonl; the oldest half goes first)")
	auditAge := fs.Duration("audit-max-age", 0, "audit records older than this are not served (0: kept until -audit-max-bytes drops them)")
	metricsListen := fs.String("metrics-listen", "", "also serve /metrics on this address without authentication, for a Prometheus scraper ('': only on -listen, to client tokens)")
	var logFlags logging.Flags
	logFlags.Register(fs)
	var o master.Options
	fs.IntVar(&o.MaxEventBytes, "max-message", master.DefaultMaxEventBytes, "largest WebSocket message accepted from a bootstrapper or client, bytes")
	fs.DurationVar(&o.PingInterval, "ping", master.DefaultPingInterval, "keepalive ping interval of every WebSocket")
	fs.DurationVar(&o.DialBackTimeout, "dial-back-timeout", master.DefaultDialBackTimeout, "how long a connection to an agent waits for the data connection the agent dials back before it goes through the agent's tunnel; negative: data connections are not used")
	allowedHosts := fs.String("allowed-host", "", "comma-separated host names the master answers to besides IP addresses and localhost (a request with another Host header gets 421: stops DNS rebinding); empty: any")
	var origins originsFlag
	fs.Var(&origins, "allow-origin", "origin of another site's pages allowed to use the client endpoints (live socket, API, tickets, agent proxy) with a token or ticket, e.g. https://ide.example.com (repeatable; * for any)")
	var ho httpserve.Options
	fs.IntVar(&ho.MaxPending, "max-pending-conns", httpserve.DefaultMaxPending, "connections not serving a request (before their first, or idle) kept at once; beyond, new ones are closed")
	fs.IntVar(&ho.MaxPendingPerIP, "max-pending-per-ip", httpserve.DefaultMaxPendingPerIP, "the same, from one IP address (raise it behind a reverse proxy)")
	fs.IntVar(&o.TailBytes, "tail-bytes", master.DefaultTailBytes, "journal bytes per machine kept in memory for subscribers (older ones are read from the store)")
	fs.IntVar(&o.TailTotalBytes, "tail-total-bytes", master.DefaultTailTotalBytes, "journal bytes kept in memory for every machine together")
	fs.IntVar(&o.MachineRate, "machine-rate", master.DefaultMachineRate, "bytes of events per second one machine may push (beyond, its connections are read more slowly)")
	fs.IntVar(&o.MachineBurst, "machine-burst", master.DefaultMachineBurst, "bytes one machine may push at once above -machine-rate (at least -max-message)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		return usageError{err.Error()}
	}
	if *keep <= 0 {
		return usageError{fmt.Sprintf("-keep-entries %d: must be positive", *keep)}
	}
	if *keepBytes <= 0 {
		return usageError{fmt.Sprintf("-keep-bytes %d: must be positive", *keepBytes)}
	}
	if *keepAge < 0 {
		return usageError{fmt.Sprintf("-keep-age %s: must not be negative", *keepAge)}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max-pending-conns", ho.MaxPending}, {"max-pending-per-ip", ho.MaxPendingPerIP}, {"tail-bytes", o.TailBytes}, {"tail-total-bytes", o.TailTotalBytes}, {"machine-rate", o.MachineRate}, {"machine-burst", o.MachineBurst}} {
		if f.v <= 0 {
			return usageError{fmt.Sprintf("-%s %d: must be positive", f.name, f.v)}
		}
	}
	if o.MaxEventBytes < 4096 {
		return usageError{fmt.Sprintf("-max-message %d: must be at least 4096", o.MaxEventBytes)}
	}
	if o.PingInterval <= 0 {
		return usageError{fmt.Sprintf("-ping %s: must be positive", o.PingInterval)}
	}
	if o.DialBackTimeout == 0 {
		return usageError{"-dial-back-timeout 0: want a positive duration, or a negative one to not use data connections"}
	}
	if err := dataDir(*data); err != nil {
		return err
	}
	signer, err := master.LoadSigner(*data)
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(*data, "porthole.db"), store.Options{KeepEntries: *keep, KeepBytes: *keepBytes, KeepAge: *keepAge, Time: master.EntryTime})
	if err != nil {
		return err
	}
	defer st.Close()
	pctx, stopPrune := context.WithCancel(ctx)
	pruned := make(chan struct{})
	defer func() { stopPrune(); <-pruned }() // before st.Close
	go func() {
		defer close(pruned)
		for {
			if n, err := st.Prune(time.Now()); err != nil {
				log.Error("journal retention", "err", err)
			} else if n > 0 {
				log.Info("journal retention: entries dropped", "entries", n)
			}
			select {
			case <-pctx.Done():
				return
			case <-time.After(pruneEvery):
			}
		}
	}()
	o.Logger, o.Store, o.Signer, o.Version, o.BinariesDir, o.TokensDir = log, st, signer, Version, *bins, *data
	o.AuditDir, o.AuditMaxBytes, o.AuditMaxAge = *data, *auditMax, *auditAge
	o.Web = dashboard.Handler()
	for _, h := range strings.Split(*allowedHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			o.AllowedHosts = append(o.AllowedHosts, h)
		}
	}
	o.AllowedOrigins = origins
	m, err := master.New(o)
	if err != nil {
		return err
	}
	var tlsConf *tls.Config
	if *tlsCert != "" || *tlsKey != "" {
		r, err := tlsconf.NewReloader(*tlsCert, *tlsKey, log)
		if err != nil {
			return usageError{err.Error()}
		}
		tlsConf = tlsconf.Server(r)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", *listen, err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := httpserve.New(m.Handler(), ho)
	srv.ConnContext = master.ConnContext // revoked and expired tokens' connections are closed
	srv.ErrorLog = serverLog(log)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if *metricsListen != "" {
		mln, err := net.Listen("tcp", *metricsListen)
		if err != nil {
			srv.Close()
			<-errc
			return fmt.Errorf("-metrics-listen %s: %w", *metricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.MetricsHandler())
		msrv := httpserve.New(mux, httpserve.Options{})
		msrv.ErrorLog = serverLog(log)
		served := make(chan struct{})
		go func() { defer close(served); msrv.Serve(mln) }()
		defer func() { msrv.Close(); <-served }()
		log.Info("metrics listening", "addr", mln.Addr().String())
	}
	log.Info("porthole-master listening", "addr", ln.Addr().String(), "data", *data, "version", Version)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serr := m.Shutdown(sctx)
	srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return serr
}

// serverLog routes net/http's own messages (TLS handshake errors, say)
// into the master's log, at debug level: they name a client's failure,
// not the master's, and would otherwise break -log-format json.
func serverLog(log *slog.Logger) *stdlog.Logger {
	return slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug)
}

// originsFlag is -allow-origin, repeatable: each value is checked as it
// is parsed (master.ParseAllowedOrigin).
type originsFlag []string

func (f *originsFlag) String() string { return strings.Join(*f, ",") }

func (f *originsFlag) Set(v string) error {
	o, err := master.ParseAllowedOrigin(v)
	if err != nil {
		return err
	}
	*f = append(*f, o)
	return nil
}
