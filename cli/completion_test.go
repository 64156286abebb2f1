package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The bash completion script, loaded in bash: subcommands, flags,
// context names from the config and machine names from the master.
func TestCompletionBash(t *testing.T) {
	t.Parallel()
	ma := startMasterAgentFull(t)
	cfgHome := t.TempDir()
	os.MkdirAll(filepath.Join(cfgHome, "porthole"), 0o700)
	cfg, _ := json.Marshal(map[string]any{"current": "prod", "contexts": map[string]any{
		"prod":  map[string]string{"url": ma.masterWS, "kind": "master", "token": ma.clientToken},
		"local": map[string]string{"url": "ws://127.0.0.1:1", "kind": "agent", "token": "x"},
	}})
	if err := os.WriteFile(filepath.Join(cfgHome, "porthole", "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ line, want string }{
		{"porthole e", "exec entrypoint"},
		{"porthole ", strings.Join([]string{"agent", "exec", "attach", "ps", "kill", "port-forward", "ports", "cp", "login", "context", "machines",
			"copy", "entrypoint", "bootstrap", "completion", "version", "help"}, " ")},
		{"porthole exec -con", "-context"},
		{"porthole cp -", "-cacert -context -m -progress -q -token-file -url"},
		{"porthole exec -context ", "local prod"},
		{"porthole exec -context p", "prod"},
		{"porthole context ", "list use remove"},
		{"porthole context use l", "local"},
		{"porthole completion ", "bash zsh fish"},
		{"porthole exec -m ", "dev w:e:o/dev"},
		{"porthole ps -context prod -m d", "dev"},
		{"porthole exec -m w:e:o/", "o/dev"}, // bash split "w:e:o/" at the colons
		{"porthole cp ./", ""},               // files: bash's own (-o default)
	}
	var script strings.Builder
	script.WriteString("source <(porthole completion bash) || exit 1\ncomplete -p porthole\n")
	for _, c := range cases {
		script.WriteString("COMP_LINE='" + c.line + "'; COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _porthole; echo \"${COMPREPLY[*]}\"\n")
	}
	cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script.String())
	cmd.Env = append(baseEnv(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "XDG_CONFIG_HOME="+cfgHome)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(cases)+1 || lines[0] != "complete -o default -F _porthole porthole" {
		t.Fatalf("bash printed:\n%s", out)
	}
	for i, c := range cases {
		if got := lines[i+1]; got != c.want {
			t.Errorf("%q completes to %q, want %q", c.line, got, c.want)
		}
	}
	// compgen on the candidates of a word, as a script might.
	cmd = exec.Command("bash", "--norc", "--noprofile", "-c", `compgen -W "$(porthole __complete completion '')" -- f`)
	cmd.Env = append(baseEnv(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	if out, err := cmd.Output(); err != nil || string(out) != "fish\n" {
		t.Errorf("compgen: %q, %v", out, err)
	}
}

// zsh and fish scripts call the same __complete (their shells are not
// installed here: only the scripts are checked).
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for _, sh := range []string{"zsh", "fish"} {
		r := porthole(t, nil, nil, "", "completion", sh)
		if r.code != 0 || !strings.Contains(r.stdout, "porthole __complete") {
			t.Errorf("completion %s: exit %d: %q", sh, r.code, r.stdout)
		}
		if path, err := exec.LookPath(sh); err == nil {
			if out, err := exec.Command(path, "-n", "-c", r.stdout).CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v: %s", sh, err, out)
			}
		}
	}
	if r := porthole(t, nil, nil, "", "completion", "tcsh"); r.code != 2 || !strings.Contains(r.stderr, `completion "tcsh": want bash, zsh or fish`) {
		t.Errorf("completion tcsh: exit %d, %q", r.code, r.stderr)
	}
}
