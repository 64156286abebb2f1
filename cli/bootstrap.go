package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/bootstrapper"
	"github.com/porthole-dev/porthole/internal/logging"
	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/internal/tlsconf"
	"github.com/porthole-dev/porthole/protocol/che"
)

// bootstrapFlags are Che's bootstrapper flags (bootstrapper/cfg/cfg.go),
// with its names, types and defaults, then porthole's own.
type bootstrapFlags struct {
	file, push, pushLogs, runtimeID, machine, cacert string
	enableAuth                                       bool
	installerTimeout, checkPeriod, reconnectPeriod   int

	backoff                bool
	liveness               secondsFlag
	serverEvents           string
	spoolDir               string
	logging                logging.Flags
	spoolMemory, spoolMax  byteSize
	maxLine                int
	stopGrace, flushWithin time.Duration
}

func (f *bootstrapFlags) register(fs *flag.FlagSet, e env) {
	cwd, _ := os.Getwd()
	authDefault, _ := strconv.ParseBool(e["CHE_AUTH_ENABLED"])
	fs.StringVar(&f.file, "file", filepath.Join(cwd, "config.json"), "path to the installers configuration file")
	fs.StringVar(&f.push, "push-endpoint", "", "WebSocket endpoint where to push statuses (required, ws:// or wss://)")
	fs.StringVar(&f.pushLogs, "push-logs-endpoint", "", "WebSocket endpoint where to push logs (none: logs are not pushed)")
	fs.BoolVar(&f.enableAuth, "enable-auth", authDefault, "authenticate to the master with $CHE_MACHINE_TOKEN (default $CHE_AUTH_ENABLED, else false)")
	fs.StringVar(&f.runtimeID, "runtime-id", "", "the runtime, as 'workspace:environment:ownerId' (required)")
	fs.StringVar(&f.machine, "machine-name", "", "the name of the machine this bootstrapper runs in (required)")
	fs.IntVar(&f.installerTimeout, "installer-timeout", 120, "seconds given to each installer to complete")
	fs.IntVar(&f.checkPeriod, "server-check-period", 3, "seconds between server checks, at the most")
	fs.IntVar(&f.reconnectPeriod, "logs-endpoint-reconnect-period", 10, "seconds between reconnection attempts after the first (0: never reconnect)")
	fs.StringVar(&f.cacert, "cacert", "", "PEM certificate(s) trusted for wss://, beside the system's")

	fs.BoolVar(&f.backoff, "server-check-backoff", true, "check servers at once and with a growing wait up to -server-check-period (false: every period, as Che)")
	f.liveness = secondsFlag(3 * time.Second)
	fs.Var(&f.liveness, "liveness-period", "after DONE, how often servers are checked, in seconds or as a duration (0: never)")
	fs.StringVar(&f.spoolDir, "spool-dir", os.TempDir(), "directory for the spool file that holds events beyond -spool-memory ('' : memory only)")
	f.spoolMemory, f.spoolMax = 8<<20, 256<<20
	fs.Var(&f.spoolMemory, "spool-memory", "bytes of undelivered events kept in memory per connection (K, M, G suffixes)")
	fs.Var(&f.spoolMax, "spool-max", "bytes of undelivered events per connection, memory and file; beyond, the oldest log lines are dropped")
	fs.IntVar(&f.maxLine, "max-line", 8<<10, "longer output lines are split into pieces of this many bytes")
	fs.DurationVar(&f.stopGrace, "stop-grace", 2*time.Second, "how long installers get between SIGTERM and SIGKILL")
	fs.DurationVar(&f.flushWithin, "flush-timeout", 0, "at the end, how long to try to deliver the events left (default 3 × -logs-endpoint-reconnect-period, at least 10s: three reconnection attempts)")
	f.logging.Register(fs)
	fs.StringVar(&f.serverEvents, "server-status-events", bootstrapper.ServerEventsAuto, "after DONE, push each server's liveness change as installer/serverStatusChanged: auto (when the master announces it understands it), always or never")
}

// options validates the flags, naming the one at fault, and reads the
// config file.
func (f *bootstrapFlags) options(e env, stderr *os.File) (bootstrapper.Options, error) {
	var o bootstrapper.Options
	bad := func(format string, args ...any) (bootstrapper.Options, error) {
		return o, usageError{fmt.Sprintf(format, args...)}
	}
	if f.push == "" {
		return bad("-push-endpoint is required: the master's WebSocket endpoint for statuses")
	}
	if err := checkWS(f.push); err != nil {
		return bad("-push-endpoint %q: %v", f.push, err)
	}
	if f.pushLogs != "" {
		if err := checkWS(f.pushLogs); err != nil {
			return bad("-push-logs-endpoint %q: %v", f.pushLogs, err)
		}
	}
	if f.runtimeID == "" {
		return bad("-runtime-id is required: workspace:env:ownerId")
	}
	rid, err := che.ParseRuntimeID(f.runtimeID)
	if err != nil {
		return bad("-runtime-id %v", err)
	}
	if f.machine == "" {
		return bad("-machine-name is required")
	}
	if f.installerTimeout <= 0 {
		return bad("-installer-timeout %d: must be > 0", f.installerTimeout)
	}
	if f.checkPeriod <= 0 {
		return bad("-server-check-period %d: must be > 0", f.checkPeriod)
	}
	if f.liveness < 0 {
		return bad("-liveness-period %s: must be >= 0", f.liveness.String())
	}
	if f.spoolMemory < 64<<10 {
		return bad("-spool-memory %d: must be at least 64K", f.spoolMemory)
	}
	if f.spoolMax < f.spoolMemory {
		return bad("-spool-max %d: must be at least -spool-memory (%d)", f.spoolMax, f.spoolMemory)
	}
	if f.maxLine < 64 {
		return bad("-max-line %d: must be at least 64", f.maxLine)
	}
	if f.stopGrace <= 0 || f.flushWithin < 0 {
		return bad("-stop-grace must be positive and -flush-timeout not negative (0: the default)")
	}
	switch f.serverEvents {
	case bootstrapper.ServerEventsAuto, bootstrapper.ServerEventsAlways, bootstrapper.ServerEventsNever:
	default:
		return bad("-server-status-events %q: want auto, always or never", f.serverEvents)
	}
	log, err := f.logging.Logger(stderr)
	if err != nil {
		return bad("%v", err)
	}
	if f.spoolDir != "" {
		if st, err := os.Stat(f.spoolDir); err != nil || !st.IsDir() {
			return bad("-spool-dir %q: not a directory", f.spoolDir)
		}
	}
	var tlsConf *tls.Config
	if f.cacert != "" {
		if tlsConf, err = tlsconf.Client(f.cacert); err != nil {
			return bad("-cacert %s: %v", f.cacert, err)
		}
	}
	installers, err := bootstrapper.LoadConfig(f.file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return o, fmt.Errorf("-file: %w", err)
		}
		return o, err
	}
	o = bootstrapper.Options{
		Installers:         installers,
		MachineName:        f.machine,
		RuntimeID:          rid,
		PushURL:            f.push,
		LogsURL:            f.pushLogs,
		TLS:                tlsConf,
		InstallerTimeout:   time.Duration(f.installerTimeout) * time.Second,
		CheckPeriod:        time.Duration(f.checkPeriod) * time.Second,
		FixedChecks:        !f.backoff,
		ReconnectPeriod:    time.Duration(f.reconnectPeriod) * time.Second,
		LivenessPeriod:     time.Duration(f.liveness),
		ServerStatusEvents: f.serverEvents,
		StopGrace:          f.stopGrace,
		FlushTimeout:       f.flushWithin,
		SpoolDir:           f.spoolDir,
		SpoolMemory:        int64(f.spoolMemory),
		SpoolLimit:         int64(f.spoolMax),
		MaxLine:            f.maxLine,
		Logger:             log,
	}
	if f.enableAuth {
		o.Token = e[proc.EnvCheMachineToken]
	}
	return o, nil
}

// checkWS accepts what Che accepts, a ws:// or wss:// URL, with a host.
func checkWS(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return errors.New("protocol must be either ws or wss")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}

// signalCause ends a bootstrap: its text is the "interrupted" error the
// master sees.
type signalCause struct{ sig syscall.Signal }

func (s signalCause) Error() string { return "the bootstrapper received " + unix.SignalName(s.sig) }

// runBootstrap is `porthole bootstrap` (and the binary run as
// `bootstrapper`): Che's bootstrapper command line.
func runBootstrap(ctx context.Context, args []string, e env, stderr *os.File) error {
	fs := newFlagSet("bootstrap", stderr)
	var f bootstrapFlags
	f.register(fs, e)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("bootstrap takes no arguments; got %q", fs.Args())}
	}
	o, err := f.options(e, stderr)
	if err != nil {
		f.reportFailure(ctx, e, stderr, err)
		return err
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case s := <-sigs:
			cancel(signalCause{s.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	err = bootstrapper.Run(ctx, o)
	cancel(nil)
	<-watched
	var sc signalCause
	if errors.As(err, &sc) {
		fmt.Fprintln(stderr, "porthole bootstrap:", err)
		return exitError{128 + int(sc.sig)}
	}
	var ue *bootstrapper.UndeliveredError
	if errors.As(err, &ue) { // whatever else happened, the master may not know it
		fmt.Fprintln(stderr, "porthole bootstrap:", err)
		return exitError{ExitUndelivered}
	}
	return err
}

// reportFailure pushes err, a bad flag value or config, to the master as
// bootstrapper FAILED (bootstrapper.ReportFailure), when the flags that
// say where and as whom (-push-endpoint, -push-logs-endpoint, -runtime-id,
// -machine-name) are usable; nothing has been started.
func (f *bootstrapFlags) reportFailure(ctx context.Context, e env, stderr *os.File, err error) {
	if checkWS(f.push) != nil || (f.pushLogs != "" && checkWS(f.pushLogs) != nil) || f.machine == "" {
		return
	}
	rid, rerr := che.ParseRuntimeID(f.runtimeID)
	if rerr != nil {
		return
	}
	o := bootstrapper.Options{PushURL: f.push, MachineName: f.machine, RuntimeID: rid,
		ReconnectPeriod: time.Duration(max(f.reconnectPeriod, 0)) * time.Second,
		Logger:          slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if f.cacert != "" {
		o.TLS, _ = tlsconf.Client(f.cacert) // nil when it is the bad flag: the system's roots
	}
	if f.enableAuth {
		o.Token = e["CHE_MACHINE_TOKEN"]
	}
	if rerr := bootstrapper.ReportFailure(ctx, o, err); rerr != nil {
		fmt.Fprintln(stderr, "porthole bootstrap: could not report the failure to the master:", rerr)
		return
	}
	fmt.Fprintln(stderr, "porthole bootstrap: reported to the master as bootstrapper FAILED")
}

// ExitUndelivered is porthole bootstrap's exit status when events were not
// delivered to the master by the end (docs/bootstrapper.md section 1).
const ExitUndelivered = 3

// secondsFlag is a duration given in seconds ("5", as Che's flags) or as
// a Go duration ("500ms").
type secondsFlag time.Duration

func (s *secondsFlag) String() string { return time.Duration(*s).String() }

func (s *secondsFlag) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*s = secondsFlag(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("want seconds or a duration such as 500ms")
	}
	*s = secondsFlag(d)
	return nil
}

// byteSize is a byte count with an optional K, M or G (binary) suffix.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(v string) error {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "K"):
		mult, v = 1<<10, strings.TrimSuffix(v, "K")
	case strings.HasSuffix(v, "M"):
		mult, v = 1<<20, strings.TrimSuffix(v, "M")
	case strings.HasSuffix(v, "G"):
		mult, v = 1<<30, strings.TrimSuffix(v, "G")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return errors.New("want a number of bytes, such as 8388608 or 8M")
	}
	*b = byteSize(n * mult)
	return nil
}
