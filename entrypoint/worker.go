package entrypoint

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/protocol"
)

// WorkerOptions configure Work.
type WorkerOptions struct {
	// Agent is the agent the worker serves, and where. Its Env is set by
	// Work: the worker's own environment without secrets (proc.ChildEnv)
	// and without EnvRole.
	Agent agent.RunOptions
	// Bootstrap, when not nil, holds the flags of a `porthole bootstrap`
	// run beside the agent, as the worker's child.
	Bootstrap []string
	// BootstrapSecrets ("NAME=VALUE", e.g. CHE_MACHINE_TOKEN) reach the
	// bootstrapper on a pipe (proc.PassSecrets), never in its environment.
	BootstrapSecrets []string
	// Command is the chained command (the image's own); empty serves the
	// agent until a forwarded signal.
	Command []string
	// Stdin, Stdout and Stderr are the container's; nil means os.Stdin,
	// os.Stdout and os.Stderr. The chained command gets all three, the
	// bootstrapper the last two.
	Stdin, Stdout, Stderr *os.File
}

// Work is the worker: it serves the agent (agent.Serve) and, with
// Bootstrap, runs the bootstrapper beside it; then it runs the chained
// command with the container's stdio and the forwarded signals (Chain)
// and returns its exit code once it exits, after the agent has shut down
// gracefully and the bootstrapper has been stopped. Without a command it
// serves until a forwarded signal (exit code 0). A chained command that
// cannot start is reported on Stderr, as a shell would, with exit code 127.
// The error is one of the agent's or the bootstrapper's start.
func Work(ctx context.Context, o WorkerOptions) (int, error) {
	stdio := [3]*os.File{o.Stdin, o.Stdout, o.Stderr}
	for i, def := range [3]*os.File{os.Stdin, os.Stdout, os.Stderr} {
		if stdio[i] == nil {
			stdio[i] = def
		}
	}
	env := proc.ChildEnv(os.Environ(), EnvRole)
	ro := o.Agent
	ro.Env = env
	if ro.Grace <= 0 {
		ro.Grace = agent.DefaultGrace
	}
	if ro.Logger == nil {
		ro.Logger = slog.New(slog.DiscardHandler)
	}
	log := ro.Logger
	a, err := agent.New(ro.Options)
	if err != nil {
		if ro.Listener != nil {
			ro.Listener.Close()
		}
		return 1, err
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, Forwarded...)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	addr, master := "none", ""
	if ro.Listener != nil {
		addr = ro.Listener.Addr().String()
	}
	if ro.Master != nil {
		master = ro.Master.URL
	}
	log.Info("entrypoint agent started", "addr", addr, "master", master, "version", ro.Version, "protocol", protocol.Version, "pid", os.Getpid())
	go func() { served <- a.Serve(ctx, ro.ServeOptions) }()
	if o.Bootstrap != nil {
		b, err := startBootstrapper(o.Bootstrap, o.BootstrapSecrets, env, stdio[1], stdio[2])
		if err != nil {
			cancel()
			<-served
			return 1, err
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			<-b.Done()
			log.Info("bootstrapper exited", "status", fmt.Sprint(b.Err()))
		})
		defer wg.Wait()
		defer proc.Stop(context.Background(), ro.Grace, []proc.Target{b})
	}

	if len(o.Command) == 0 { // no command: serve terminals until told to stop
		select {
		case sig := <-sigs:
			log.Info("stopping", "signal", sig.String())
		case err := <-served:
			return 1, err
		}
		cancel()
		if err := <-served; err != nil {
			return 1, err
		}
		return 0, nil
	}
	proc.ResetIgnoredSignals()
	cmd := exec.Command(o.Command[0], o.Command[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio[0], stdio[1], stdio[2]
	ws, err := Chain(cmd, sigs)
	cancel() // the chained command is over: stop the agent gracefully
	if serr := <-served; serr != nil {
		log.Error("agent", "err", serr)
	}
	if err != nil {
		fmt.Fprintf(stdio[2], "porthole entrypoint: %v\n", err)
		return 127, nil
	}
	return proc.StatusCode(ws), nil
}

// startBootstrapper runs `porthole bootstrap ARGS` beside the agent, as the
// worker's child with the container's stdout and stderr. Its failure (an
// installer failed) is the master's to see and leaves the container
// running. The worker stops it as it stops itself: SIGTERM, the grace
// period, then SIGKILL.
func startBootstrapper(args, secrets, env []string, stdout, stderr io.Writer) (*proc.Child, error) {
	exe, err := proc.Executable()
	if err != nil {
		return nil, fmt.Errorf("-bootstrap: %w", err)
	}
	proc.ResetIgnoredSignals()
	cmd := exec.Command(exe, append([]string{"bootstrap"}, args...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	r, err := proc.PassSecrets(cmd, secrets)
	if err != nil {
		return nil, fmt.Errorf("-bootstrap: %w", err)
	}
	if r != nil {
		defer r.Close()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("-bootstrap: %w", err)
	}
	return proc.Watch(cmd), nil
}
