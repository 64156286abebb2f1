package bootstrapper

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/protocol/che"
)

// Options configure Run. Zero sizes and durations take the defaults
// noted, except ReconnectPeriod and LivenessPeriod, whose zero means off.
type Options struct {
	Installers  []Installer // from LoadConfig: checked, in order
	MachineName string
	RuntimeID   che.RuntimeID

	// PushURL receives the status events (ws:// or wss://).
	PushURL string
	// LogsURL receives installer/log events. Empty: they are not pushed
	// (as Che) but written to Logger; equal to PushURL: one connection.
	LogsURL string
	// Token, when set, is sent as the handshake's Authorization header,
	// raw as Che sends it.
	Token string
	TLS   *tls.Config // for wss://; nil: the system roots

	InstallerTimeout time.Duration // per installer (120 s)
	CheckPeriod      time.Duration // the longest wait between server checks (3 s)
	// FixedChecks checks servers as Che does: every CheckPeriod, the first
	// time one period after the start, and once when the script exits 0.
	FixedChecks bool
	// ReconnectPeriod is the longest wait between reconnection attempts
	// (the first connection's: every period; after a connection broke:
	// the backoff's bound, docs/bootstrapper.md 5.3); <= 0 disables
	// reconnection and makes the first connection a single attempt (Che's 0).
	ReconnectPeriod time.Duration
	// LivenessPeriod is how often servers are checked after DONE; 0: never.
	LivenessPeriod time.Duration
	// ServerStatusEvents says when a change found after DONE is pushed as
	// installer/serverStatusChanged (ServerEvents*; "": auto).
	ServerStatusEvents string
	StopGrace          time.Duration // between SIGTERM and SIGKILL of installers' groups (2 s)
	FlushTimeout       time.Duration // how long to try to deliver what is left at the end (FlushTimeout(ReconnectPeriod))

	SpoolDir    string // spill file directory; "" keeps events in memory only
	SpoolMemory int64  // bytes of events kept in memory per connection (8 MiB)
	SpoolLimit  int64  // bytes in memory and file per connection (256 MiB)
	MaxLine     int    // longer output lines are split (8 KiB)

	Logger *slog.Logger // the bootstrapper's own log (default: slog.Default)
}

// Values of Options.ServerStatusEvents (the flag -server-status-events).
const (
	ServerEventsAuto   = "auto"   // when the master announces che.CapServerStatus
	ServerEventsAlways = "always" // to any master
	ServerEventsNever  = "never"  // the wire is exactly Che's three methods
)

func (o *Options) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&o.InstallerTimeout, 120*time.Second)
	set(&o.CheckPeriod, 3*time.Second)
	set(&o.StopGrace, 2*time.Second)
	set(&o.FlushTimeout, FlushTimeout(o.ReconnectPeriod))
	if o.SpoolMemory <= 0 {
		o.SpoolMemory = 8 << 20
	}
	if o.SpoolLimit < o.SpoolMemory {
		o.SpoolLimit = max(256<<20, o.SpoolMemory)
	}
	if o.MaxLine <= 0 {
		o.MaxLine = 8 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Run bootstraps the machine: it connects to the master, runs the
// installers one after another, reports their statuses and output, and,
// once all are RUNNING or DONE, stays until their processes have ended
// (or ctx ends), checking their servers' liveness. It returns the error
// that failed the bootstrap, after stopping every installer's process
// group; when ctx ends first, that error wraps context.Cause(ctx). When
// events could not be delivered by the end, the error also holds an
// *UndeliveredError (errors.As).
// Cancelling ctx after DONE stops the installers and returns nil.
func Run(ctx context.Context, o Options) error {
	o.defaults()
	if len(o.Installers) == 0 {
		return errors.New("no installers, nothing to start")
	}
	r := &runner{o: o, log: o.Logger}
	ids := make([]string, len(o.Installers))
	for i, in := range o.Installers {
		ids[i] = in.ID
	}
	var err error
	r.boot = newBootID()
	if r.enc, err = newEncoder(o.MachineName, o.RuntimeID, r.boot, Plan(o.Installers)); err != nil {
		return err
	}
	if err := r.connect(ctx); err != nil {
		return err
	}
	emit := r.logOutput // as Che without a logs endpoint
	if r.logs != nil {
		emit = logEvents{r.enc, r.logs.sp, r.logs.maxMessage.Load}.emit
	}
	if r.out, err = newOutputs(o.MaxLine, emit); err != nil {
		return errors.Join(err, r.finish())
	}
	r.log.Info("bootstrapping", "machine", o.MachineName, "runtime", o.RuntimeID, "boot_id", r.boot, "installers", ids)

	r.bootstrapperStatus(che.StatusStarting, "")
	for i := range o.Installers {
		if err = r.install(ctx, i); err != nil {
			r.installerStatus(i, che.StatusFailed, err.Error())
			r.bootstrapperStatus(che.StatusFailed, err.Error())
			break
		}
	}
	ended := false
	if err == nil {
		r.bootstrapperStatus(che.StatusDone, "")
		ended = r.watch(ctx)
		if !ended {
			r.log.Info("stopping the installers", "cause", context.Cause(ctx))
		}
	}
	if !ended {
		r.stop()
	}
	r.out.stop()
	return errors.Join(err, r.finish())
}

// runner is one Run.
type runner struct {
	o       Options
	log     *slog.Logger
	boot    string
	enc     *encoder
	status  *pusher // status events
	logs    *pusher // installer/log: status, another, or nil
	out     *outputs
	scripts []*script // by installer index
	servers [][]*server
}

func newBootID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// connect makes the first connections, before anything is started.
func (r *runner) connect(ctx context.Context) error {
	so := spoolOptions{memory: r.o.SpoolMemory, limit: r.o.SpoolLimit, dir: r.o.SpoolDir, window: min(r.o.SpoolMemory/2, 4<<20)}
	newP := func(flag, url string) (*pusher, error) {
		sp, err := newSpool(r.enc.lost, so, r.log)
		if err != nil {
			return nil, fmt.Errorf("-spool-dir %s: %w", so.dir, err)
		}
		p := newPusher(flag, url, r.o.Token, r.o.TLS, sp, r.o.ReconnectPeriod, r.log)
		p.undelivered = r.enc.undelivered
		c, err := p.connect(ctx, time.Now().Add(r.o.InstallerTimeout))
		if err != nil {
			sp.release()
			return nil, err
		}
		p.start(c)
		return p, nil
	}
	var err error
	if r.status, err = newP("-push-endpoint", r.o.PushURL); err != nil {
		return err
	}
	switch r.o.LogsURL {
	case "":
	case r.o.PushURL:
		r.logs = r.status
	default:
		if r.logs, err = newP("-push-logs-endpoint", r.o.LogsURL); err != nil {
			r.finish()
			return err
		}
	}
	return nil
}

// UndeliveredError: the bootstrapper ended with events the master had not
// acknowledged (after -flush-timeout). Events is how many.
type UndeliveredError struct{ Events int }

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("%d event(s) not delivered: the master did not acknowledge them within the flush timeout", e.Events)
}

// finish delivers what is left and closes the connections; it returns an
// *UndeliveredError when events were not delivered.
func (r *runner) finish() error {
	var lost atomic.Int64
	ps := []*pusher{r.status}
	if r.logs != nil && r.logs != r.status {
		ps = append(ps, r.logs)
	}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			if n := p.finish(r.o.FlushTimeout); n > 0 {
				r.log.Error("events not delivered", "endpoint", redactURL(p.url), "events", n)
				lost.Add(int64(n))
			}
			p.sp.release()
		})
	}
	wg.Wait()
	if n := lost.Load(); n > 0 {
		return &UndeliveredError{Events: int(n)}
	}
	return nil
}

func (r *runner) bootstrapperStatus(status, errText string) {
	r.logStatus("bootstrapper status", "status", status, "error", errText)
	u := r.enc.bootstrapperStatus(status, errText, true)
	if limit := r.status.maxMessage.Load(); limit > 0 && u.size() > limit && status == che.StatusStarting {
		// The plan is what makes it large: STARTING goes without it.
		r.log.Warn("the installers' plan is larger than the master accepts: STARTING is sent without it", "bytes", u.size(), "limit", limit)
		u = r.enc.bootstrapperStatus(status, errText, false)
	}
	r.status.sp.add(kindStatus, -1, u)
}

func (r *runner) installerStatus(inst int, status, errText string) {
	r.logStatus("installer status", "installer", r.enc.installer(inst), "status", status, "error", errText)
	r.status.sp.add(kindStatus, inst, r.enc.installerStatus(inst, status, errText))
}

func (r *runner) logStatus(msg string, args ...any) {
	if args[len(args)-1] != "" {
		r.log.Error(msg, args...)
		return
	}
	r.log.Info(msg, args[:len(args)-2]...)
}

// logOutput writes an output line to the bootstrapper's own log, when no
// endpoint receives them (outputs calls it, on its goroutine).
func (r *runner) logOutput(inst int, stream string, text []byte, partial bool) {
	r.log.Info("output", "installer", r.enc.installer(inst), "stream", stream, "text", string(text), "partial", partial)
}

// install runs installer i until it is DONE or RUNNING (nil) or has failed.
// Its output so far is emitted before it returns.
func (r *runner) install(ctx context.Context, i int) error {
	in := r.o.Installers[i]
	r.installerStatus(i, che.StatusStarting, "")
	s, err := startScript(r.out, i, in.Script)
	if err != nil {
		return che.ErrCouldNotStart(in.ID, err)
	}
	r.scripts = append(r.scripts, s)
	servers := serversOf(i, in)
	r.servers = append(r.servers, servers)
	timeout := time.NewTimer(r.o.InstallerTimeout)
	defer timeout.Stop()

	if len(servers) == 0 {
		select {
		case <-s.exited:
			r.out.sync(s.out)
			if s.code() != 0 {
				return che.ErrExitCode(in.ID, s.code())
			}
			r.installerStatus(i, che.StatusDone, "")
			return nil
		case <-timeout.C:
			r.out.sync(s.out)
			return che.ErrTimeoutCompleted(in.ID)
		case <-ctx.Done():
			r.out.sync(s.out)
			return che.ErrInterrupted(in.ID, context.Cause(ctx))
		}
	}

	sched := checkSchedule{period: r.o.CheckPeriod, fixed: r.o.FixedChecks}
	start := time.Now()
	check := time.NewTimer(sched.first())
	defer check.Stop()
	exited, scriptDone := s.exited, false
	for {
		select {
		case <-check.C:
			if allUp(servers) {
				r.out.sync(s.out)
				r.installerStatus(i, che.StatusRunning, "")
				return nil
			}
			if scriptDone && (sched.fixed || !s.pgid.Alive()) {
				// Nothing is left that could open the ports.
				r.out.sync(s.out)
				return che.ErrServersNotAvailable(in.ID)
			}
			check.Reset(sched.next(time.Since(start)))
		case <-exited:
			exited = nil
			if s.code() != 0 {
				r.out.sync(s.out)
				return che.ErrScriptFailed(in.ID, s.code())
			}
			// Exit 0: check at once; porthole goes on checking while
			// something the script started is still running.
			scriptDone = true
			check.Reset(0)
		case <-timeout.C:
			r.out.sync(s.out)
			if scriptDone {
				return che.ErrServersNotAvailable(in.ID)
			}
			return che.ErrTimeoutFinished(in.ID)
		case <-ctx.Done():
			r.out.sync(s.out)
			return che.ErrInterrupted(in.ID, context.Cause(ctx))
		}
	}
}

// watch runs after DONE until every installer's script has exited and its
// output has ended (true) or ctx ends (false), checking the servers'
// liveness every LivenessPeriod and whenever a script exits, and pushing
// each change.
func (r *runner) watch(ctx context.Context) bool {
	events := make(chan int, 2*len(r.scripts)) // i: script i exited; -1: an output ended
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i, s := range r.scripts {
		wg.Go(func() {
			select {
			case <-s.exited:
				events <- i
			case <-stop:
				return
			}
			select {
			case <-s.out.eof:
				events <- -1
			case <-stop:
			}
		})
	}
	var tick <-chan time.Time
	if r.o.LivenessPeriod > 0 {
		t := time.NewTicker(r.o.LivenessPeriod)
		defer t.Stop()
		tick = t.C
	}
	for left := len(r.scripts); left > 0; {
		select {
		case ev := <-events:
			if ev < 0 {
				left--
			} else if r.o.LivenessPeriod > 0 {
				r.liveness()
			}
		case <-tick:
			r.liveness()
		case <-ctx.Done():
			return false
		}
	}
	if r.o.LivenessPeriod > 0 {
		r.liveness()
	}
	return true
}

// liveness checks every server and pushes the changes.
func (r *runner) liveness() {
	for _, ss := range r.servers {
		for _, s := range ss {
			up := s.isUp()
			if up == s.up {
				continue
			}
			s.up = up
			status := che.StatusStopped
			if up {
				status = che.StatusRunning
			}
			r.log.Info("server status", "installer", r.enc.installer(s.inst), "server", s.ref, "status", status)
			if r.serverEvents() {
				r.status.sp.add(kindStatus, s.inst, r.enc.serverStatus(s.inst, s.ref, s.port, status))
			}
		}
	}
}

// serverEvents reports whether installer/serverStatusChanged is sent:
// with ServerStatusEvents "auto", when the master said on the status
// connection's last handshake that it understands it (porthole-master
// does, Che's master does not and would log an error for each).
func (r *runner) serverEvents() bool {
	switch r.o.ServerStatusEvents {
	case ServerEventsAlways:
		return true
	case ServerEventsNever:
		return false
	}
	return r.status.serverStatus.Load()
}

// stop stops what is still running: every installer's process group gets
// SIGTERM, StopGrace, then SIGKILL; then their output is read to its end.
// (outputs.stop closes what a process outside the groups still holds.)
func (r *runner) stop() {
	var groups []proc.Target
	for _, s := range r.scripts {
		groups = append(groups, s.pgid)
	}
	proc.Stop(context.Background(), r.o.StopGrace, groups)
	ended := time.After(time.Second) // a process outside the group may still hold a pipe
	for _, s := range r.scripts {
		<-s.exited
		select {
		case <-s.out.eof:
		case <-ended:
		}
	}
}
