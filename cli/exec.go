package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/backoff"
	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/protocol"
)

// clientFlags are the flags every client command has.
type clientFlags struct {
	url, tokenFile, cacert, context, machine string
	resolved                                 *client.Options // by options
}

func (f *clientFlags) register(fs *flag.FlagSet, e env) {
	fs.StringVar(&f.url, "url", "", "agent or porthole-master URL (default $PORTHOLE_URL, else the current context, else ws://127.0.0.1:4444)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token (default $PORTHOLE_TOKEN, or the context's)")
	fs.StringVar(&f.cacert, "cacert", "", "PEM certificate(s) trusted for wss://, beside the system's (default: the context's)")
	fs.StringVar(&f.context, "context", "", "a context saved by 'porthole login' (default $PORTHOLE_CONTEXT, else the current one)")
	fs.StringVar(&f.machine, "m", "", "the machine, RUNTIME/MACHINE or MACHINE, on a porthole-master")
}

// reconnect is how a session reattaches after its connection drops: with
// the shared backoff (internal/backoff), for at most timeout from the
// drop. clock and rand are the backoff's (nil: real ones; tests inject
// them).
type reconnect struct {
	timeout time.Duration
	clock   clock.Clock
	rand    func(n int64) int64
}

// register adds -reconnect-timeout.
func (r *reconnect) register(fs *flag.FlagSet) {
	fs.DurationVar(&r.timeout, "reconnect-timeout", 5*time.Minute, "how long to keep reconnecting after the connection drops (0: give up at once and print the attach command)")
}

// Backoff of a session's reattach attempts: the first within 500ms, up to
// one every 10s; a connection that stayed up 5s resets it.
const (
	reattachFirst  = 500 * time.Millisecond
	reattachMax    = 10 * time.Second
	reattachStable = 5 * time.Second
)

func (f *clientFlags) dial(ctx context.Context, e env) (*client.Client, error) {
	o, err := f.options(ctx, e)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return client.Dial(dctx, o)
}

// forwarded are the signals the CLI passes on to the remote process.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func runExec(ctx context.Context, args []string, e env, stdin, stdout, stderr *os.File) error {
	fs := newFlagSet("exec", stderr)
	var cf clientFlags
	cf.register(fs, e)
	interactive := fs.Bool("i", false, "keep stdin open and forward it")
	tty := fs.Bool("t", false, "allocate a terminal (raw mode locally while attached)")
	it := fs.Bool("it", false, "-i and -t together, as with docker exec -it")
	fs.BoolVar(it, "ti", false, "same as -it")
	var envs listFlag
	fs.Var(&envs, "e", "environment KEY=VALUE for the process (repeatable)")
	cwd := fs.String("w", "", "working directory in the agent")
	user := fs.String("u", "", "user to run as (the agent must be root)")
	name := fs.String("name", "", "a label for the process")
	var rc reconnect
	rc.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"exec needs a command: porthole exec [flags] -- CMD [ARGS...]"}
	}
	if *it {
		*interactive, *tty = true, true
	}
	if t := e["TERM"]; *tty && t != "" && !slices.ContainsFunc(envs, func(kv string) bool { return strings.HasPrefix(kv, "TERM=") }) {
		envs = append(envs, "TERM="+t) // the remote terminal is this one
	}
	spec := protocol.StartParams{Name: *name, Argv: fs.Args(), Env: envs, Cwd: *cwd, User: *user, TTY: *tty}
	if *tty && term.IsTerminal(int(stdout.Fd())) {
		if cols, rows, err := term.GetSize(int(stdout.Fd())); err == nil {
			spec.Size = protocol.WindowSize{Rows: uint16(rows), Cols: uint16(cols)}
		}
	}
	sigs, c, done, err := dialSession(ctx, &cf, e)
	if err != nil {
		return err
	}
	defer done()
	// A pipe session's output is held for it from the start (nothing is
	// evicted before it attaches), by agents that know how (1.2).
	spec.Hold = !*tty && protocol.AtLeast(c.Info().ProtocolVersion, "1.2")
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, spec, &info); err != nil {
		return err
	}
	p, err := c.Attach(ctx, info.ID, client.Offsets{}, pipeHold(*tty, c)...)
	if err != nil {
		return err
	}
	return session(ctx, sigs, p, cf.url, rc, *interactive, *tty, stdin, stdout, stderr)
}

// dialSession starts catching the signals a session forwards, then dials
// the agent: a signal that arrives while connecting is forwarded once
// attached, instead of leaving a started process alone. done closes the
// client and stops catching.
func dialSession(ctx context.Context, cf *clientFlags, e env) (sigs chan os.Signal, c *client.Client, done func(), err error) {
	sigs = catchSignals()
	if c, err = cf.dial(ctx, e); err != nil {
		signal.Stop(sigs)
		return nil, nil, nil, err
	}
	return sigs, c, func() { c.Close(); signal.Stop(sigs) }, nil
}

// catchSignals starts catching the signals a session forwards.
func catchSignals() chan os.Signal {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGWINCH}, forwarded...)...)
	return sigs
}

func runAttach(ctx context.Context, args []string, e env, stdin, stdout, stderr *os.File) error {
	fs := newFlagSet("attach", stderr)
	var cf clientFlags
	cf.register(fs, e)
	from := fs.String("from", "start", "where output starts: start (everything the agent kept) or end (new output only)")
	offset := fs.Int64("offset", -1, "stdout offset to continue at (as a reattach hint names; overrides -from)")
	stderrOffset := fs.Int64("stderr-offset", -1, "stderr offset to continue at (overrides -from)")
	var rc reconnect
	rc.register(fs)
	id, err := parseID(fs, args, "attach needs one process id: porthole attach [flags] ID")
	if err != nil {
		return err
	}
	sigs, c, done, err := dialSession(ctx, &cf, e)
	if err != nil {
		return err
	}
	defer done()
	info, err := c.Get(ctx, id)
	if err != nil {
		return err
	}
	var off client.Offsets
	switch *from {
	case "start":
	case "end":
		off.Stdout = info.Stdout.End
		if info.Stderr != nil {
			off.Stderr = info.Stderr.End
		}
	default:
		return usageError{fmt.Sprintf("-from %q: want start or end", *from)}
	}
	if *offset >= 0 {
		off.Stdout = *offset
	}
	if *stderrOffset >= 0 {
		off.Stderr = *stderrOffset
	}
	p, err := c.Attach(ctx, id, off, pipeHold(info.TTY, c)...)
	if err != nil {
		return err
	}
	return session(ctx, sigs, p, cf.url, rc, true, info.TTY, stdin, stdout, stderr)
}

// session runs an attached process like docker exec -it: local raw mode
// while attached (restored on every path out), window size changes and
// signals forwarded, stdin EOF forwarded, automatic reattach from the
// exact offset when the connection drops (see reattach), and the remote
// exit code as ours (128+signal when killed).
func session(ctx context.Context, sigs chan os.Signal, p *client.Process, url string, rc reconnect, interactive, tty bool, stdin, stdout, stderr *os.File) error {
	defer p.Close()
	// sigs are caught before raw mode: a signal arriving in between would
	// kill us with the terminal left raw.
	restore := func() {}
	if tty && interactive && term.IsTerminal(int(stdin.Fd())) {
		old, err := term.MakeRaw(int(stdin.Fd()))
		if err != nil {
			return fmt.Errorf("raw mode: %w", err)
		}
		var once sync.Once
		restore = func() { once.Do(func() { term.Restore(int(stdin.Fd()), old) }) }
	}
	defer restore()

	stopSignals := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stopSignals)
	wg.Go(func() {
		for {
			select {
			case <-stopSignals:
				return
			case sig := <-sigs:
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if sig == syscall.SIGWINCH {
					if tty {
						if cols, rows, err := term.GetSize(int(stdout.Fd())); err == nil {
							p.Resize(sctx, protocol.WindowSize{Rows: uint16(rows), Cols: uint16(cols)})
						}
					}
				} else {
					p.SignalOS(sctx, sig.(syscall.Signal))
				}
				cancel()
			}
		}
	})

	var outWG sync.WaitGroup
	outWG.Go(func() { io.Copy(stdout, p.Stdout) })
	outWG.Go(func() { io.Copy(stderr, p.Stderr) })
	if interactive {
		// The stdin reader cannot be interrupted (a blocking read of the
		// terminal); it ends with the command.
		go func() {
			io.Copy(p.Stdin, stdin)
			p.Stdin.Close()
		}()
	} else if !tty {
		p.Stdin.Close()
	}

	b := backoff.New(backoff.Options{First: reattachFirst, Max: reattachMax, Stable: reattachStable, Clock: rc.clock, Rand: rc.rand})
	b.Connected()
	for {
		err := p.Wait()
		var de *client.DisconnectedError
		if !errors.As(err, &de) {
			outWG.Wait()
			restore()
			if lost := lostOutput(p, tty); lost != nil {
				return lost
			}
			var xe *client.ExitError
			if errors.As(err, &xe) {
				return exitError{xe.ExitCode()}
			}
			return err
		}
		if de.AgentShutDown() {
			restore()
			return fmt.Errorf("\r\nthe agent is shutting down; process %s was hung up", p.ID)
		}
		if err := reattach(ctx, p, de, b, rc, stderr); err != nil {
			restore()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("\r\n%v\nreattach with: %s", err, attachCommand(url, p))
		}
	}
}

// pipeHold: a session without a terminal is its stream's consumer (a
// pipe, a file), which must arrive whole: the agent waits for it however
// slowly it reads (client.Hold). A terminal's viewer is demoted when it
// stalls, so that it never holds the program back for other viewers.
func pipeHold(tty bool, c *client.Client) []client.AttachOption {
	if tty || !protocol.AtLeast(c.Info().ProtocolVersion, "1.2") {
		return nil
	}
	return []client.AttachOption{client.Hold()}
}

// lostOutput reports the output a pipe session lost (the agent's gaps:
// bytes evicted from its ring before this client read them), so that a
// pipeline such as `porthole exec -- tar c . | tar x` never ends as if
// its stream had been whole. A terminal's screen shows a gap as a jump
// and goes on: nil.
func lostOutput(p *client.Process, tty bool) error {
	gaps := p.Gaps()
	if tty || len(gaps) == 0 {
		return nil
	}
	var n int64
	for _, g := range gaps {
		n += g.To - g.From
	}
	g := gaps[0]
	return fmt.Errorf("process %s: %d bytes of its output were lost in %d gap(s), the first %s bytes %d..%d: "+
		"the agent's ring overtook this client while it read nothing for the agent's -stall-timeout",
		p.ID, n, len(gaps), g.Stream, g.From, g.To)
}

// reattach reattaches p after its connection dropped (de), at the exact
// offsets it had received: attempts back off with b, for at most
// rc.timeout from now on b's clock. It writes one status line on status
// (stderr, never the terminal's output) before the first wait, and when
// the time is up returns de with the last attempt's error.
func reattach(ctx context.Context, p *client.Process, de *client.DisconnectedError, b *backoff.Backoff, rc reconnect, status io.Writer) error {
	if rc.timeout <= 0 {
		return de
	}
	clk := clock.Or(rc.clock)
	deadline := clk.Now().Add(rc.timeout)
	fmt.Fprintf(status, "\r\nporthole: connection to the agent lost (%v); reconnecting for up to %s\r\n", de.Err, rc.timeout)
	var last error
	for {
		left := deadline.Sub(clk.Now())
		if left <= 0 {
			if last == nil {
				return de
			}
			return fmt.Errorf("%w; no reconnection within %s, last attempt: %v", de, rc.timeout, last)
		}
		if b.Wait(ctx, min(b.Next(), left)) != nil {
			return ctx.Err()
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		last = p.Reattach(rctx)
		cancel()
		if last == nil {
			b.Connected()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// attachCommand is the command that continues p exactly where it stopped.
func attachCommand(url string, p *client.Process) string {
	off := p.Offsets()
	cmd := fmt.Sprintf("porthole attach -url %s -offset %d", url, off.Stdout)
	if off.Stderr > 0 {
		cmd += fmt.Sprintf(" -stderr-offset %d", off.Stderr)
	}
	return cmd + " " + p.ID
}

func runPS(ctx context.Context, args []string, e env, stdout, stderr *os.File) error {
	fs := newFlagSet("ps", stderr)
	var cf clientFlags
	cf.register(fs, e)
	output := fs.String("o", "table", "output: table or json (the agent's process.list, one object per process)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return usageError{fmt.Sprintf("-o %q: want table or json", *output)}
	}
	c, err := cf.dial(ctx, e)
	if err != nil {
		return err
	}
	defer c.Close()
	ps, err := c.List(ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		if ps == nil {
			ps = []protocol.ProcessInfo{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ps)
	}
	return writePS(stdout, ps, time.Now())
}

// writePS writes the ps table. CPU and RSS are the process's own (not its
// children's), sampled while it runs; AGE is since it started, until it
// exited.
func writePS(w io.Writer, ps []protocol.ProcessInfo, now time.Time) error {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPID\tTTY\tSTATE\tEXIT\tUSER\tCPU\tRSS\tAGE\tCLIENTS\tOUTPUT\tNAME\tCOMMAND")
	for _, p := range ps {
		exit := ""
		switch {
		case p.Signal != "":
			exit = "SIG" + p.Signal
		case p.ExitCode != nil:
			exit = fmt.Sprint(*p.ExitCode)
		}
		out := p.Stdout.End
		if p.Stderr != nil {
			out += p.Stderr.End
		}
		cpu, rss := "-", "-"
		if p.State == protocol.StateRunning {
			cpu = fmt.Sprintf("%.2fs", p.CPUSeconds)
			rss = humanBytes(int64(p.RSSBytes))
		}
		end := now
		if p.ExitedAt != nil {
			end = *p.ExitedAt
		}
		fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%q\n", p.ID, p.PID, p.TTY, p.State, dash(exit),
			dash(p.User), cpu, strings.ReplaceAll(rss, " ", ""), age(end.Sub(p.StartedAt)), p.Clients, out, dash(p.Name), p.Argv)
	}
	return tw.Flush()
}

// age is a duration as ps shows it: 42s, 5m03s, 3h12m, 2d04h.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// parseID parses the flags and the one process id of attach and kill;
// usage is the error when there is not exactly one.
func parseID(fs *flag.FlagSet, args []string, usage string) (string, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usageError{usage}
	}
	return pos[0], nil
}

// parseInterleaved parses flags that may also follow the positional
// arguments (`porthole kill 3 -s TERM`) and returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		rest := fs.Args()
		if rest[0] == "--" && len(pos) == 0 { // everything after -- is positional
			return rest[1:], nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func runKill(ctx context.Context, args []string, e env, stderr *os.File) error {
	fs := newFlagSet("kill", stderr)
	var cf clientFlags
	cf.register(fs, e)
	sig := fs.String("s", "KILL", "signal name or number")
	id, err := parseID(fs, args, "kill needs one process id: porthole kill [-s SIGNAL] ID")
	if err != nil {
		return err
	}
	if _, err := protocol.ParseSignal(*sig); err != nil {
		return usageError{"-s: " + err.Error()}
	}
	c, err := cf.dial(ctx, e)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Signal(ctx, id, *sig)
}
