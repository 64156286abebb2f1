package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// completionConfig writes a porthole config with two contexts, prod (the
// master ma, current) and local (an agent), and returns its
// XDG_CONFIG_HOME.
func completionConfig(t *testing.T, ma masterAgent) string {
	t.Helper()
	cfgHome := t.TempDir()
	os.MkdirAll(filepath.Join(cfgHome, "porthole"), 0o700)
	cfg, _ := json.Marshal(map[string]any{"current": "prod", "contexts": map[string]any{
		"prod":  map[string]string{"url": ma.masterWS, "kind": "master", "token": ma.clientToken},
		"local": map[string]string{"url": "ws://127.0.0.1:1", "kind": "agent", "token": "x"},
	}})
	if err := os.WriteFile(filepath.Join(cfgHome, "porthole", "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgHome
}

// allCommands is what "porthole " completes to.
var allCommands = strings.Join([]string{"agent", "exec", "attach", "ps", "kill", "port-forward", "ports", "cp", "login", "context", "machines",
	"copy", "entrypoint", "bootstrap", "completion", "version", "help"}, " ")

// shellCases are the command lines every shell's completion is checked
// on, and the candidates each gives (bash's differ where bash splits
// words at colons).
var shellCases = []struct{ line, want string }{
	{"porthole e", "exec entrypoint"},
	{"porthole ", allCommands},
	{"porthole exec -con", "-context"},
	{"porthole cp -", "-cacert -context -m -progress -q -token-file -url"},
	{"porthole exec -context ", "local prod"},
	{"porthole exec -context p", "prod"},
	{"porthole context ", "list use remove"},
	{"porthole context use l", "local"},
	{"porthole completion ", "bash zsh fish"},
	{"porthole exec -m ", "dev w:e:o/dev"},
	{"porthole ps -context prod -m d", "dev"},
	{"porthole exec -m w:e:o/", "w:e:o/dev"},
}

// sameWords reports whether a and b hold the same blank-separated words,
// in any order (fish sorts its candidates).
func sameWords(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// shell returns the path of sh, or skips the test saying how to get it.
func shell(t *testing.T, sh string) string {
	t.Helper()
	path, err := exec.LookPath(sh)
	if err != nil {
		t.Skipf("%s is not installed (apt-get install %s; .ci/run installs it): its completion is not tested here", sh, sh)
	}
	return path
}

// runShell runs a script in a shell with porthole on PATH, the config
// cfgHome, in dir, bounded by waitTimeout.
func runShell(t *testing.T, cfgHome, dir string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(baseEnv(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "XDG_CONFIG_HOME="+cfgHome, "HOME="+dir)
	cmd.Dir = dir
	cmd.WaitDelay = 2 * time.Second // zsh's pty child, should it outlive it
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %s:\n%s", argv[0], waitTimeout, out)
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", argv[0], err, out)
	}
	return string(out)
}

// The bash completion script, loaded in bash: subcommands, flags,
// context names from the config and machine names from the master.
func TestCompletionBash(t *testing.T) {
	t.Parallel()
	ma := startMasterAgentFull(t)
	cfgHome := completionConfig(t, ma)
	cases := append([]struct{ line, want string }{}, shellCases...)
	for i := range cases {
		if cases[i].line == "porthole exec -m w:e:o/" {
			cases[i].want = "o/dev" // bash split "w:e:o/" at the colons
		}
	}
	cases = append(cases, struct{ line, want string }{"porthole cp ./", ""}) // files: bash's own (-o default)
	var script strings.Builder
	script.WriteString("source <(porthole completion bash) || exit 1\ncomplete -p porthole\n")
	for _, c := range cases {
		script.WriteString("COMP_LINE='" + c.line + "'; COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _porthole; echo \"${COMPREPLY[*]}\"\n")
	}
	out := runShell(t, cfgHome, t.TempDir(), "bash", "--norc", "--noprofile", "-c", script.String())
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(cases)+1 || lines[0] != "complete -o default -F _porthole porthole" {
		t.Fatalf("bash printed:\n%s", out)
	}
	for i, c := range cases {
		if got := lines[i+1]; got != c.want {
			t.Errorf("%q completes to %q, want %q", c.line, got, c.want)
		}
	}
	// compgen on the candidates of a word, as a script might.
	cmd := exec.Command("bash", "--norc", "--noprofile", "-c", `compgen -W "$(porthole __complete completion '')" -- f`)
	cmd.Env = append(baseEnv(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	if out, err := cmd.Output(); err != nil || string(out) != "fish\n" {
		t.Errorf("compgen: %q, %v", out, err)
	}
}

// The zsh completion script, loaded in an interactive zsh (in a pty,
// compinit as a user has it) and driven by Tab: the candidates it offers
// (compadd wrapped to print them, as zsh-capture-completion does) for
// subcommands, flags, contexts and machines; files (_files) when porthole
// has nothing to offer.
func TestCompletionZsh(t *testing.T) {
	t.Parallel()
	zsh, cfgHome, dir := shellSetup(t, "zsh")
	cases := append(append([]struct{ line, want string }{}, shellCases...), struct{ line, want string }{"porthole cp ./", "<files>"})
	var sc strings.Builder
	sc.WriteString(`zmodload zsh/zpty || exit 1
zpty z zsh -f -i
zpty -w z 'PROMPT=""; RPROMPT=""; autoload -Uz compinit && compinit -u -d "$HOME/.zcompdump"'
zpty -w z 'source <(porthole completion zsh) && print -n -- "\nREG<$_comps[porthole]>"'
zpty -w z 'compadd() { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi; local -a hits; builtin compadd -A hits "$@"; local h; for h in $hits; do print -n -- "\nHIT<$h>"; done; }'
zpty -w z '_files() { print -n -- "\nHIT<<files>>"; }'
zpty -w z 'functions[_porthole_script]=$functions[_porthole]; _porthole() { _porthole_script "$@"; print -n -- "\nCOMPLETED<>"; }'
zpty -w z 'print -n READY; print -- -0'
zpty -r z out '*READY-0*' && print -r -- "$out" | grep -ao 'REG<_[^>]*>'
`)
	for i, c := range cases {
		// The line and a Tab, read up to the completion's end (keys typed
		// before would cut it short); then the line killed (^U) and a
		// marker printed, read up to, for the next.
		fmt.Fprintf(&sc, `zpty -w -n z %s$'\t'
zpty -r z out '*COMPLETED<>*'
print -r -- "$out" | grep -ao 'HIT<.*>' | sed 's/^HIT<//; s/>$//' | tr '\n' ' '; print -- '|%d'
zpty -w z $'\C-u print -n CASE; print -- -%d'
zpty -r z rest '*CASE-%d*'
`, shellQuote(c.line), i, i, i)
	}
	sc.WriteString("zpty -d z\n")
	out := runShell(t, cfgHome, dir, zsh, "-f", "-c", sc.String())
	reg, rest, _ := strings.Cut(out, "\n")
	if reg != "REG<_porthole>" {
		t.Fatalf("compinit did not register _porthole for porthole: zsh printed:\n%s", out)
	}
	checkCandidates(t, "zsh", rest, cases)
}

// The fish completion script, loaded in fish: complete -C asks fish's
// own completion for each command line; files only where porthole offers
// nothing (an argument of cp), never mixed with subcommands.
func TestCompletionFish(t *testing.T) {
	t.Parallel()
	fish, cfgHome, dir := shellSetup(t, "fish")
	for _, f := range []string{"notes.txt", "exfile"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := append(append([]struct{ line, want string }{}, shellCases...), struct{ line, want string }{"porthole cp ./", "./exfile ./notes.txt"})
	var sc strings.Builder
	sc.WriteString("porthole completion fish | source; or exit 1\n")
	for i, c := range cases {
		fmt.Fprintf(&sc, "echo (complete -C %s | string split -f1 \\t) '|%d'\n", shellQuote(c.line), i)
	}
	out := runShell(t, cfgHome, dir, fish, "--no-config", "-c", sc.String())
	checkCandidates(t, "fish", out, cases)
}

// shellSetup returns sh's path (or skips the test), the XDG_CONFIG_HOME
// of completionConfig for a master with a machine, and a directory to run
// in.
func shellSetup(t *testing.T, sh string) (path, cfgHome, dir string) {
	t.Helper()
	path = shell(t, sh)
	return path, completionConfig(t, startMasterAgentFull(t)), t.TempDir()
}

// checkCandidates checks out, a line "CANDIDATES... |i" per case.
func checkCandidates(t *testing.T, sh, out string, cases []struct{ line, want string }) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("%s printed:\n%s", sh, out)
	}
	for i, c := range cases {
		got, ok := strings.CutSuffix(lines[i], "|"+strconv.Itoa(i))
		if !ok || !sameWords(got, c.want) {
			t.Errorf("%s: %q completes to %q, want %q", sh, c.line, got, c.want)
		}
	}
}

// shellQuote quotes s in single quotes for sh, zsh and fish (s holds no
// quote or backslash).
func shellQuote(s string) string { return "'" + s + "'" }

// Every shell's script: printed by completion, bad shells refused.
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := porthole(t, nil, nil, "", "completion", sh)
		if r.code != 0 || !strings.Contains(r.stdout, "porthole __complete") {
			t.Errorf("completion %s: exit %d: %q", sh, r.code, r.stdout)
		}
	}
	if r := porthole(t, nil, nil, "", "completion", "tcsh"); r.code != 2 || !strings.Contains(r.stderr, `completion "tcsh": want bash, zsh or fish`) {
		t.Errorf("completion tcsh: exit %d, %q", r.code, r.stderr)
	}
}
