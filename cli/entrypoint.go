package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/entrypoint"
	"github.com/porthole-dev/porthole/protocol"
	runtimecopier "github.com/porthole-dev/porthole/runtime-copier"
)

// childEnv is the environment children get: ours without the agent's
// token, the machine token and the entrypoint's role marker.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PORTHOLE_TOKEN=") || strings.HasPrefix(kv, envMachineToken+"=") || strings.HasPrefix(kv, entrypoint.EnvRole+"=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// runEntrypoint is `porthole entrypoint [agent flags] [-- CMD ARGS]`: the
// container's PID 1. The first process reaps and forwards signals; it
// re-executes itself as the worker, which serves the agent and chains the
// image's own command (see package entrypoint).
func runEntrypoint(ctx context.Context, args []string, e env, stderr *os.File) error {
	if e[entrypoint.EnvRole] != entrypoint.RoleWorker {
		exe, err := os.Executable() // needs /proc
		if err != nil {
			if exe, err = exec.LookPath(os.Args[0]); err != nil {
				return fmt.Errorf("find own binary (no /proc, and %q not found): %w", os.Args[0], err)
			}
		}
		worker := exec.Command(exe, append([]string{"entrypoint"}, args...)...)
		worker.Env = append(os.Environ(), entrypoint.EnvRole+"="+entrypoint.RoleWorker)
		worker.Stdin, worker.Stdout, worker.Stderr = os.Stdin, os.Stdout, os.Stderr
		code, err := entrypoint.Reaper(worker)
		if err != nil {
			return err
		}
		if code != 0 {
			return exitError{code}
		}
		return nil
	}

	fs := newFlagSet("entrypoint", stderr)
	var f agentFlags
	f.register(fs)
	bootstrap := fs.String("bootstrap", "", "also run `porthole bootstrap` with these flags (split at spaces), e.g. \"-file /tmp/config.json -push-endpoint ws://master/api/websocket -runtime-id ws:env:owner -machine-name dev\"")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o, err := f.options(e, stderr)
	if err != nil {
		return err
	}
	o.Env = childEnv()
	a, err := agent.New(o)
	if err != nil {
		return err
	}
	ln, err := f.listener()
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, entrypoint.Forwarded...)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	o.Logger.Info("entrypoint agent started", "addr", addrOf(ln), "master", f.master, "version", Version, "protocol", protocol.Version, "pid", os.Getpid())
	go func() { served <- serve(ctx, a, ln, f.tun, f.grace, o.Logger) }()
	if *bootstrap != "" {
		stop, err := startBootstrapper(strings.Fields(*bootstrap), f.grace, o.Logger)
		if err != nil {
			cancel()
			<-served
			return err
		}
		defer stop()
	}

	if fs.NArg() == 0 { // no command: serve terminals until told to stop
		select {
		case sig := <-sigs:
			o.Logger.Info("stopping", "signal", sig.String())
		case err := <-served:
			return err
		}
		cancel()
		return <-served
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Env = childEnv()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	ws, err := entrypoint.Chain(cmd, sigs)
	cancel() // the chained command is over: stop the agent gracefully
	if serr := <-served; serr != nil {
		o.Logger.Error("agent", "err", serr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "porthole entrypoint: %v\n", err)
		return exitError{127}
	}
	if code := entrypoint.ExitCode(ws); code != 0 {
		return exitError{code}
	}
	return nil
}

// runCopy is `porthole copy [-to DIR] [-payload FILE]...`.
func runCopy(args []string, e env, stdout, stderr *os.File) error {
	fs := newFlagSet("copy", stderr)
	def := e[runtimecopier.EnvDir]
	if def == "" {
		def = runtimecopier.DefaultDir
	}
	to := fs.String("to", def, "destination directory (default $"+runtimecopier.EnvDir+", else "+runtimecopier.DefaultDir+")")
	var payloads listFlag
	fs.Var(&payloads, "payload", "extra file to copy beside the binary (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("copy takes no arguments; got %q", fs.Args())}
	}
	r, err := runtimecopier.Copy(runtimecopier.Options{Dest: *to, Payloads: payloads, Version: Version, ProtocolVersion: protocol.Version})
	if err != nil {
		return err
	}
	if r.Written {
		fmt.Fprintf(stdout, "copied porthole %s (sha256 %s) to %s\n", Version, r.Manifest.Binary.SHA256, *to)
	} else {
		fmt.Fprintf(stdout, "%s already holds porthole %s (sha256 %s): nothing written\n", *to, Version, r.Manifest.Binary.SHA256)
	}
	return nil
}

// startBootstrapper runs `porthole bootstrap ARGS` beside the agent, as the
// worker's child with the container's stdout and stderr. Its failure (an
// installer failed) is the master's to see and leaves the container
// running. stop sends it SIGTERM, waits the grace period, then kills it.
func startBootstrapper(args []string, grace time.Duration, log *slog.Logger) (stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		if exe, err = exec.LookPath(os.Args[0]); err != nil {
			return nil, fmt.Errorf("-bootstrap: find own binary: %w", err)
		}
	}
	cmd := exec.Command(exe, append([]string{"bootstrap"}, args...)...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("-bootstrap: %w", err)
	}
	done := make(chan struct{})
	go func() { // owned by stop, which waits for done
		err := cmd.Wait()
		log.Info("bootstrapper exited", "status", fmt.Sprint(err))
		close(done)
	}()
	return func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(grace):
			cmd.Process.Kill()
			<-done
		}
	}, nil
}
