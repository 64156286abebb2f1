package cli_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Contexts: login to a master and to an agent, list, use, remove; exec
// with no URL or token in the environment, with -context and -m; errors
// in plain words.
func TestContexts(t *testing.T) {
	t.Parallel()
	ma := startMasterAgentFull(t)
	a := startAgent(t)
	cfgHome := t.TempDir()
	cfgEnv := []string{"XDG_CONFIG_HOME=" + cfgHome}
	run := func(env []string, stdin string, args ...string) result {
		t.Helper()
		return porthole(t, nil, append(append([]string{}, cfgEnv...), env...), stdin, args...)
	}
	expect := func(r result, code int, stdout, stderr string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.stdout, stdout) || !strings.Contains(r.stderr, stderr) {
			t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, code, stdout, stderr)
		}
	}

	// A master, its token on stdin; an agent, its token in a file.
	expect(run(nil, ma.clientToken+"\n", "login", "-url", ma.masterWS, "-name", "prod"), 0, `logged in to master `+ma.masterWS+` as context "prod"`, "")
	tokFile := filepath.Join(t.TempDir(), "agent.token")
	os.WriteFile(tokFile, []byte(a.token+"\n"), 0o600)
	expect(run(nil, "", "login", "-url", strings.Replace(a.url, "ws:", "http:", 1), "-token-file", tokFile, "-name", "local"), 0, `logged in to agent `+a.url+` as context "local"`, "")
	cfg := filepath.Join(cfgHome, "porthole", "config.json")
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file: %v, %v; want mode 0600", fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(cfg)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("config dir: %v, %v; want mode 0700", fi, err)
	}
	if b, _ := os.ReadFile(cfg); strings.Contains(string(b), a.token) || !strings.Contains(string(b), tokFile) {
		t.Errorf("the agent's token file is not kept as a reference:\n%s", b)
	}
	r := run(nil, "", "context", "list")
	expect(r, 0, "*        local", "")
	if !strings.Contains(r.stdout, "prod   master  "+ma.masterWS) {
		t.Errorf("context list:\n%s", r.stdout)
	}

	// The current context (the agent): no URL, no token.
	expect(run(nil, "", "exec", "--", "echo", "local"), 0, "local\n", "")
	// The master with -context, the machine with -m.
	expect(run(nil, "", "exec", "-context", "prod", "-m", "w:e:o/dev", "--", "echo", "via master"), 0, "via master\n", "")
	expect(run([]string{"PORTHOLE_CONTEXT=prod"}, "", "exec", "-m", "dev", "--", "echo", "unambiguous"), 0, "unambiguous\n", "")
	expect(run(nil, "", "exec", "-context", "prod", "-m", "nope", "--", "true"), 1, "", "no machine nope (known: w:e:o/dev)")
	expect(run(nil, "", "exec", "-context", "prod", "-m", "w:e:o/nope", "--", "true"), 1, "", "no machine nope in runtime w:e:o (known: dev)")
	expect(run(nil, "", "exec", "-context", "prod", "-m", "x:y:z/dev", "--", "true"), 1, "", "no runtime x:y:z (known: w:e:o)")
	expect(run(nil, "", "exec", "-context", "prod", "--", "true"), 2, "", `context "prod" is a porthole-master: name a machine with -m`)
	expect(run(nil, "", "exec", "-m", "dev", "--", "true"), 1, "", `-m dev: context "local" is an agent`)
	expect(run(nil, "", "exec", "-context", "nope", "--", "true"), 1, "", `no context "nope" (known: local, prod)`)
	// A misspelt machine in an explicit master URL: the master's words,
	// not its JSON or a 502.
	r = run([]string{"PORTHOLE_TOKEN=" + ma.clientToken}, "", "ps", "-url", ma.masterWS+"/api/runtimes/w:e:o/machines/nope/agent")
	expect(r, 1, "", "404 Not Found: no machine nope in runtime w:e:o (known: dev)")
	if strings.Contains(r.stderr, `{"error"`) {
		t.Errorf("the master's JSON reached the user: %q", r.stderr)
	}
	// -url wins over the context.
	expect(run([]string{"PORTHOLE_TOKEN=" + a.token}, "", "exec", "-url", a.url, "--", "echo", "explicit"), 0, "explicit\n", "")

	// machines, from the master context.
	expect(run(nil, "", "context", "use", "prod"), 0, "", "")
	r = run(nil, "", "machines")
	expect(r, 0, "RUNTIME", "")
	if !strings.Contains(r.stdout, "w:e:o") || !strings.Contains(r.stdout, "dev") || !strings.Contains(r.stdout, "connected") {
		t.Errorf("machines:\n%s", r.stdout)
	}
	expect(run(nil, "", "machines", "-o", "json"), 0, `"name": "dev"`, "")
	expect(run(nil, "", "ps", "-m", "dev"), 0, "ID", "")
	// cp with the machine in the path.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("machine in the path"), 0o644)
	expect(run(nil, "", "cp", filepath.Join(dir, "f"), "w:e:o/dev:"+filepath.Join(dir, "g")), 0, "", "copied")
	if b, _ := os.ReadFile(filepath.Join(dir, "g")); string(b) != "machine in the path" {
		t.Errorf("cp to w:e:o/dev:PATH wrote %q", b)
	}
	expect(run(nil, "", "cp", "-m", "other", "dev:/x", dir), 2, "", "machine dev in the path and -m other differ")
	// Plain words for the agent's JSON-RPC errors.
	r = run(nil, "", "kill", "-m", "dev", "99")
	expect(r, 1, "", `porthole: no process with id "99"`)
	if strings.Contains(r.stderr, "jsonrpc2") || strings.Contains(r.stderr, "-3200") {
		t.Errorf("kill of a missing process: %q", r.stderr)
	}

	// remove; a wrong token at login; a config others may read.
	expect(run(nil, "", "context", "remove", "local"), 0, "", "")
	if r := run(nil, "", "context", "list"); strings.Contains(r.stdout, "local") || !strings.Contains(r.stdout, "*        prod") {
		t.Errorf("after remove:\n%s", r.stdout)
	}
	expect(run(nil, "", "context", "use", "local"), 1, "", `no context "local" (known: prod)`)
	r = run([]string{"PORTHOLE_TOKEN=wrong"}, "", "login", "-url", ma.masterWS)
	expect(r, 1, "", "refused the token")
	expect(r, 1, "", "this is not a porthole-master token")
	if strings.Contains(r.stderr, "malformed") || strings.Contains(r.stderr, "segments") {
		t.Errorf("login with a wrong token: the token library's words reach the user: %q", r.stderr)
	}
	expect(run([]string{"PORTHOLE_TOKEN=wrong"}, "", "login", "-url", a.url), 1, "", "invalid token")
	os.Chmod(cfg, 0o644)
	expect(run(nil, "", "context", "list"), 1, "", "holds tokens and others may read it (mode 0644): chmod 600 "+cfg)
}

// In a real terminal (tmux): `porthole exec -m dev -it` through a
// master, addressed by a saved context alone; the remote shell has the
// pane's size, and the local terminal is restored after its exit status.
func TestContextTerminal(t *testing.T) {
	t.Parallel()
	ma := startMasterAgentFull(t)
	cfgHome := t.TempDir()
	if r := porthole(t, nil, []string{"XDG_CONFIG_HOME=" + cfgHome, "PORTHOLE_TOKEN=" + ma.clientToken}, "", "login", "-url", ma.masterWS, "-name", "prod"); r.code != 0 {
		t.Fatalf("login: %d %s", r.code, r.stderr)
	}
	script := strings.Join([]string{
		"before=$(stty -g)",
		"XDG_CONFIG_HOME=" + shQuote(cfgHome) + " " + shQuote(bin) + " exec -m dev -it -e 'PS1=ctx> ' -- /bin/sh",
		"code=$?",
		"after=$(stty -g)",
		"echo CLI-EXIT=$code",
		`if [ "$before" = "$after" ]; then echo TTY-RESTORED; else echo TTY-CHANGED; fi`,
		"echo TTY-MODE=$(stty -a | grep -Eo -- '-?icanon')",
		"sleep 3600",
	}, "; ")
	s := newTmux(t, script)
	s.waitFor(`(?m)^ctx> $`, waitTimeout)
	s.typeLine("echo answer=$((6*7)); stty size")
	s.waitFor(`answer=42\s+30 100`, waitTimeout)
	s.typeLine("exit 5")
	s.checkRestored(5, waitTimeout)
}

// port-forward and ports with a master context and -m.
func TestContextPortForward(t *testing.T) {
	t.Parallel()
	ma := startMasterAgentFull(t)
	cfgHome := t.TempDir()
	env := []string{"XDG_CONFIG_HOME=" + cfgHome}
	if r := porthole(t, nil, append(env, "PORTHOLE_TOKEN="+ma.clientToken), "", "login", "-url", ma.masterWS); r.code != 0 {
		t.Fatalf("login: %d %s", r.code, r.stderr)
	}
	ms := startMachineServer(t, 1)
	pf := startPortForward(t, env, "-m", "dev", ":"+strconv.Itoa(ms.port))
	resp, err := http.Get("http://" + pf.local[0] + "/n/1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "answer 1" {
		t.Errorf("through port-forward -m dev: %q", b)
	}
	if r := porthole(t, nil, env, "", "ports", "-m", "w:e:o/dev"); r.code != 0 || !strings.Contains(r.stdout, strconv.Itoa(ms.port)) {
		t.Errorf("ports -m: %d %q %q", r.code, r.stdout, r.stderr)
	}
}
