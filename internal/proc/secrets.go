package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Secrets travel from one porthole process to the porthole process it
// re-executes (the entrypoint's worker, the worker's bootstrapper) on a
// pipe, never in the environment: a process's initial environment stays
// readable in /proc/PID/environ by every process of its uid for as long as
// it lives, whatever it unsets later.

// EnvSecretsFD names the descriptor a re-executed porthole reads its
// secrets from (PassSecrets, ReceiveSecrets). It holds a number, no secret.
const EnvSecretsFD = "PORTHOLE_SECRETS_FD"

// MaxSecretsBytes bounds what PassSecrets sends and ReceiveSecrets reads:
// a few tokens, well under a pipe's smallest capacity (one page).
const MaxSecretsBytes = 4096

// SplitSecrets returns environ without the secret variables (SecretEnv)
// and EnvSecretsFD, and the secret variables ("NAME=VALUE") apart.
func SplitSecrets(environ []string) (rest, secrets []string) {
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case slices.Contains(SecretEnv, name):
			secrets = append(secrets, kv)
		case name != EnvSecretsFD:
			rest = append(rest, kv)
		}
	}
	return rest, secrets
}

// PassSecrets arranges for cmd, not yet started, to receive secrets
// ("NAME=VALUE", NAME one of SecretEnv) on a pipe: the read end becomes
// one of cmd.ExtraFiles, named by EnvSecretsFD in cmd.Env (which must be
// set), and the secrets are written and the write end closed before it
// returns. The caller closes the returned read end once cmd has started
// (or failed to). With no secrets it does nothing and returns nil.
func PassSecrets(cmd *exec.Cmd, secrets []string) (*os.File, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	if cmd.Env == nil {
		return nil, errors.New("pass secrets: the command's environment is not set")
	}
	var buf strings.Builder
	for _, kv := range secrets {
		name, v, ok := strings.Cut(kv, "=")
		if !ok || !slices.Contains(SecretEnv, name) || strings.ContainsAny(v, "\n\x00") {
			return nil, fmt.Errorf("pass secrets: %q is not a secret variable (NAME=VALUE, one line, NAME one of %v)", name, SecretEnv)
		}
		buf.WriteString(kv + "\n")
	}
	if buf.Len() > MaxSecretsBytes {
		return nil, fmt.Errorf("pass secrets: %d bytes, more than the limit of %d", buf.Len(), MaxSecretsBytes)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pass secrets: %w", err)
	}
	// At most one page: a pipe holds it without a reader.
	_, err = io.WriteString(w, buf.String())
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("pass secrets: %w", err)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, r)
	cmd.Env = append(slices.Clip(cmd.Env), EnvSecretsFD+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
	return r, nil
}

// ReceiveSecrets reads the secrets a parent passed with PassSecrets when
// environ names EnvSecretsFD, closes that descriptor, and returns environ
// without EnvSecretsFD and with the secrets. Without EnvSecretsFD it
// returns environ as it is.
func ReceiveSecrets(environ []string) ([]string, error) {
	var fdText string
	rest := make([]string, 0, len(environ))
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, EnvSecretsFD+"="); ok {
			fdText = v
			continue
		}
		rest = append(rest, kv)
	}
	if fdText == "" {
		return environ, nil
	}
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("$%s %q: want a descriptor number of 3 or more", EnvSecretsFD, fdText)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("$%s %d: %w", EnvSecretsFD, fd, err)
	}
	f := os.NewFile(uintptr(fd), "secrets")
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("$%s %d: read: %w", EnvSecretsFD, fd, err)
	}
	if len(b) > MaxSecretsBytes {
		return nil, fmt.Errorf("$%s %d: more than %d bytes", EnvSecretsFD, fd, MaxSecretsBytes)
	}
	for line := range strings.Lines(string(b)) {
		kv := strings.TrimSuffix(line, "\n")
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(SecretEnv, name) {
			return nil, fmt.Errorf("$%s %d: %q is not a secret variable", EnvSecretsFD, fd, name)
		}
		rest = append(rest, kv)
	}
	return rest, nil
}

// HideSecrets removes the secret variables and EnvSecretsFD from this
// process's environment (os.Environ, and so every child started with a nil
// Env), and makes the process not dumpable (PR_SET_DUMPABLE 0): its
// /proc/PID/environ, which still shows the environment it started with,
// /proc/PID/mem and the rest become root's, and processes of the same uid
// can neither read them nor ptrace it. A process that is not dumpable does
// not dump core either. execve makes a process dumpable again, so
// children are not affected.
func HideSecrets() error {
	for _, name := range append(slices.Clone(SecretEnv), EnvSecretsFD) {
		os.Unsetenv(name)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

// CloexecInherited marks every descriptor above stderr close-on-exec: the
// descriptors porthole inherited (a socket, a root-only file opened by
// whoever started it) then reach none of its children, which get only
// their stdio and what is passed to them explicitly. It does not close
// them: porthole itself may still use one (ReceiveSecrets reads its
// descriptor first). close_range(2) where the kernel has it (5.11), else
// each descriptor in /proc/self/fd.
func CloexecInherited() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}
