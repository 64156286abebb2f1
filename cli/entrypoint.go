package cli

import (
	"context"
	"os"
	"strings"

	"github.com/porthole-dev/porthole/entrypoint"
	"github.com/porthole-dev/porthole/internal/proc"
)

// runEntrypoint is `porthole entrypoint [agent flags] [-bootstrap FLAGS]
// [-- CMD ARGS]`: the container's PID 1. The first process reaps and
// forwards signals; it re-executes itself as the worker, which serves the
// agent, runs the bootstrapper and chains the image's own command (see
// package entrypoint).
func runEntrypoint(ctx context.Context, args []string, e env, stderr *os.File) error {
	if e[entrypoint.EnvRole] != entrypoint.RoleWorker {
		return exitStatus(entrypoint.RunInit(args, e.secrets(proc.SecretEnv...)))
	}

	fs := newFlagSet("entrypoint", stderr)
	var f agentFlags
	f.register(fs)
	bootstrap := fs.String("bootstrap", "", "also run `porthole bootstrap` with these flags (split at spaces), e.g. \"-file /tmp/config.json -push-endpoint ws://master/api/websocket -runtime-id ws:env:owner -machine-name dev\"")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o, err := f.runOptions(e, stderr)
	if err != nil {
		return err
	}
	w := entrypoint.WorkerOptions{Agent: o, Command: fs.Args(), Stderr: stderr}
	if *bootstrap != "" {
		w.Bootstrap = strings.Fields(*bootstrap)
		w.BootstrapSecrets = e.secrets(proc.EnvCheMachineToken)
	}
	return exitStatus(entrypoint.Work(ctx, w))
}

// exitStatus is a process's exit code and error as the command's error.
func exitStatus(code int, err error) error {
	switch {
	case err != nil:
		return err
	case code != 0:
		return exitError{code}
	}
	return nil
}

// secrets are the variables named that e holds, as NAME=VALUE, for
// proc.PassSecrets.
func (e env) secrets(names ...string) []string {
	var out []string
	for _, name := range names {
		if v, ok := e[name]; ok {
			out = append(out, name+"="+v)
		}
	}
	return out
}
