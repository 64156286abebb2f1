// Package cli implements the porthole command line: the agent server and
// the client commands (exec, attach, ps, kill, version). cmd/porthole is a
// thin main around Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/protocol"
)

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "dev"

// env is the process environment as a lookup, so tests can pass their own.
type env map[string]string

func parseEnv(environ []string) env {
	e := env{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			e[k] = v
		}
	}
	return e
}

// exitError carries a command's exit code through an error.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// flagError is a usage error the flag package has printed already, with
// the usage: Main only sets the exit code.
type flagError struct{ usageError }

const usage = `porthole: an in-container exec agent

Usage:
  porthole agent [-listen :4444] [-token-file FILE] [flags]   serve processes and terminals
                 [-master ws://HOST:PORT -runtime-id W:E:O -machine-name M]
                                                               ... also (or, with -listen none, only) through porthole-master
  porthole exec [-url URL] [-i] [-t] [flags] -- CMD [ARGS...]  run a command in the agent
  porthole attach [-url URL] [-offset N] ID                    attach to a running process
  porthole ps [-url URL] [-o json]                             list processes (CPU, RSS, age, user, clients)
  porthole login -url URL [-token-file F] [-name N] [-ca F]    save an agent or porthole-master as a context
  porthole context list|use NAME|remove NAME                   the saved contexts
  porthole machines [-context C] [-o json]                     a porthole-master's machines
  porthole kill [-url URL] [-s SIGNAL] ID                      signal a process (default KILL)
  porthole ports [-url URL] [-w] [-o json]                     TCP ports listening in the agent's machine
  porthole cp [-url URL] SRC DST                               copy files and trees; :PATH is in the agent's machine
  porthole port-forward [-url URL] [LOCAL:]REMOTE...           forward local ports to ports in the agent's machine
  porthole copy [-to DIR] [-payload FILE]...                   copy this binary into a shared volume
  porthole entrypoint [agent flags] [-- CMD [ARGS...]]         run as the container's PID 1
  porthole bootstrap -push-endpoint URL -runtime-id W:E:O -machine-name M [flags]
                                                               run Che installers (also run as 'bootstrapper')
  porthole completion bash|zsh|fish                            print a shell completion script
  porthole health [-url http://127.0.0.1:4444/healthz]        exit 0 if the URL answers 200 (a probe)
  porthole version                                             print versions

Client commands go to -url (or $PORTHOLE_URL) with -token-file (or
$PORTHOLE_TOKEN), else to -context (or $PORTHOLE_CONTEXT, else the current
context, see 'porthole login'), else to ws://127.0.0.1:4444. On a
porthole-master, -m RUNTIME/MACHINE (or -m MACHINE) names the machine.
Run 'porthole COMMAND -h' for a command's flags.
`

// Main runs the command line and returns the process exit code. It is
// the process's own: first it keeps the descriptors it inherited from its
// children, takes the secrets a parent porthole passed on a descriptor,
// and hides the secrets (proc.HideSecrets: out of its environment, and
// the process not dumpable, so that the workload cannot read them in
// /proc).
func Main(args []string, environ []string) int {
	err := proc.CloexecInherited()
	if err == nil {
		environ, err = proc.ReceiveSecrets(environ)
	}
	if err == nil {
		err = proc.HideSecrets()
	}
	if err == nil {
		err = run(context.Background(), args, parseEnv(environ), os.Stdin, os.Stdout, os.Stderr)
	}
	var ee exitError
	var ue usageError
	var fe flagError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &fe):
		return 2
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "porthole:", ue.msg)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "porthole:", plain(err))
		return 1
	}
}

// plain words an error for people: a JSON-RPC error is its message, not
// "jsonrpc2: code -32001 message: ..."; a token library's reason for a
// refused token is said plainly.
func plain(err error) string {
	msg := err.Error()
	var je *jsonrpc2.Error
	if errors.As(err, &je) {
		msg = strings.Replace(msg, je.Error(), je.Message, 1)
	}
	for _, r := range jwtWords {
		if i := strings.Index(msg, r.lib); i >= 0 {
			// The library's wording runs to the end of the message.
			return msg[:i] + r.plain
		}
	}
	return msg
}

// jwtWords are the JWT library's reasons porthole-master gives for a
// refused token, and what they mean to a user.
var jwtWords = []struct{ lib, plain string }{
	{"token is malformed", "this is not a porthole-master token (check -token-file, $PORTHOLE_TOKEN or the context)"},
	{"token signature is invalid", "this token was not issued by this porthole-master (another master's, or altered)"},
	{"token has invalid claims: token is expired", "this token has expired: get a new one (porthole-master token)"},
	{"token is expired", "this token has expired: get a new one (porthole-master token)"},
	{"token is unverifiable", "this token cannot be verified by this porthole-master"},
}

func run(ctx context.Context, args []string, e env, stdin *os.File, stdout, stderr *os.File) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "agent":
		return runAgent(ctx, rest, e, stderr)
	case "exec":
		return runExec(ctx, rest, e, stdin, stdout, stderr)
	case "attach":
		return runAttach(ctx, rest, e, stdin, stdout, stderr)
	case "ps":
		return runPS(ctx, rest, e, stdout, stderr)
	case "kill":
		return runKill(ctx, rest, e, stderr)
	case "cp":
		return runCp(ctx, rest, e, stderr)
	case "login":
		return runLogin(ctx, rest, e, stdin, stdout, stderr)
	case "context":
		return runContext(rest, e, stdout, stderr)
	case "machines":
		return runMachines(ctx, rest, e, stdout, stderr)
	case "ports":
		return runPorts(ctx, rest, e, stdout, stderr)
	case "completion":
		return runCompletion(rest, stdout)
	case "__complete":
		return runComplete(ctx, rest, e, stdout)
	case "port-forward":
		return runPortForward(ctx, rest, e, stdout, stderr)
	case "entrypoint":
		return runEntrypoint(ctx, rest, e, stderr)
	case "copy":
		return runCopy(rest, e, stdout, stderr)
	case "bootstrap":
		return runBootstrap(ctx, rest, e, stderr)
	case "health":
		return runHealth(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "porthole %s (protocol %s)\n", Version, protocol.Version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// newFlagSet returns a flag set that reports errors as usage errors.
func newFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("porthole "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return flagError{usageError{err.Error()}}
	}
	return nil
}

// readToken returns the token from -token-file or $PORTHOLE_TOKEN. A token
// file's trailing newline is not part of the token.
func readToken(file string, e env) (string, error) {
	if file != "" {
		return readSecretFile("-token-file", file)
	}
	return e[proc.EnvToken], nil
}

// readSecretFile reads the token in file, named by flag in errors,
// without its trailing newline.
func readSecretFile(flag, file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	tok := strings.TrimRight(string(b), "\r\n")
	if tok == "" {
		return "", fmt.Errorf("%s %s is empty", flag, file)
	}
	return tok, nil
}
