package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// Shell completion: `porthole completion bash|zsh|fish` prints a script
// that asks `porthole __complete WORDS... CURRENT` for the candidates, so
// that context and machine names are completed from the config and the
// master. Nothing printed means the shell's own (file) completion.

// commands are the subcommands completed, in the usage's order.
var commands = []string{"agent", "exec", "attach", "ps", "kill", "port-forward", "ports", "cp", "login", "context", "machines",
	"copy", "entrypoint", "bootstrap", "completion", "version", "help"}

const bashCompletion = `# porthole bash completion: source <(porthole completion bash)
_porthole() {
	# Words split on blanks only: runtime ids hold colons, which bash
	# splits words on.
	local line=${COMP_LINE:0:COMP_POINT}
	local -a words
	read -r -a words <<< "$line"
	[[ $line == *[[:blank:]] ]] && words+=("")
	local cur=${words[${#words[@]}-1]}
	local IFS=$'\n'
	COMPREPLY=($(porthole __complete "${words[@]:1}" 2>/dev/null))
	if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
		local pre=${cur%"${cur##*:}"}
		COMPREPLY=("${COMPREPLY[@]#"$pre"}")
	fi
}
complete -o default -F _porthole porthole
`

const zshCompletion = `#compdef porthole
# porthole zsh completion: source <(porthole completion zsh)
_porthole() {
	local -a c
	c=("${(@f)$(porthole __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	c=(${c:#})
	if (( ${#c} )); then compadd -- "${c[@]}"; else _files; fi
}
compdef _porthole porthole
`

// fishCompletion: -f, so that files are offered only when porthole has
// nothing to offer (an argument of cp), as bash's -o default and zsh's
// _files do.
const fishCompletion = `# porthole fish completion: porthole completion fish | source
function __porthole_complete
    set -l c (porthole __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)
    if set -q c[1]
        printf '%s\n' $c
    else
        __fish_complete_path (commandline -ct)
    end
end
complete -c porthole -f -a '(__porthole_complete)'
`

func runCompletion(args []string, stdout *os.File) error {
	if len(args) != 1 {
		return usageError{"completion needs a shell: porthole completion bash|zsh|fish"}
	}
	switch args[0] {
	case "bash":
		io.WriteString(stdout, bashCompletion)
	case "zsh":
		io.WriteString(stdout, zshCompletion)
	case "fish":
		io.WriteString(stdout, fishCompletion)
	default:
		return usageError{fmt.Sprintf("completion %q: want bash, zsh or fish", args[0])}
	}
	return nil
}

// runComplete prints the candidates for the last of words (the word being
// completed, maybe empty), one a line.
func runComplete(ctx context.Context, words []string, e env, stdout *os.File) error {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	prev := ""
	if len(words) >= 2 {
		prev = words[len(words)-2]
	}
	var cands []string
	switch cmd := words[0]; {
	case len(words) == 1:
		cands = commands
	case prev == "-context" || prev == "--context":
		cands = contextNames(e)
	case prev == "-m" || prev == "--m":
		cands = machineNames(ctx, words, e)
	case strings.HasPrefix(cur, "-"):
		cands = commandFlags(ctx, cmd, e)
	case cmd == "completion" && len(words) == 2:
		cands = []string{"bash", "zsh", "fish"}
	case cmd == "context" && len(words) == 2:
		cands = []string{"list", "use", "remove"}
	case cmd == "context" && len(words) == 3 && (words[1] == "use" || words[1] == "remove"):
		cands = contextNames(e)
	}
	for _, c := range cands {
		if strings.HasPrefix(c, cur) {
			fmt.Fprintln(stdout, c)
		}
	}
	return nil
}

func contextNames(e env) []string {
	cfg, _, err := loadConfig(e)
	if err != nil {
		return nil
	}
	return cfg.names()
}

// machineNames asks the master the words name (their -context or -url)
// for its machines, briefly: RUNTIME/MACHINE, and MACHINE alone.
func machineNames(ctx context.Context, words []string, e env) []string {
	var cf clientFlags
	for i := 1; i+1 < len(words); i++ {
		switch strings.TrimPrefix(words[i], "-") {
		case "-context", "context":
			cf.context = words[i+1]
		case "-url", "url":
			cf.url = words[i+1]
		case "-token-file", "token-file":
			cf.tokenFile = words[i+1]
		}
	}
	s, err := cf.resolve(e)
	if err != nil || s.kind == kindAgent {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var rts []*masterapi.Runtime
	if _, err := s.getJSON(ctx, "/api/runtimes", &rts); err != nil {
		return nil
	}
	var out []string
	for _, rt := range rts {
		for _, m := range rt.Machines {
			out = append(out, rt.ID+"/"+m.Name)
			if !slices.Contains(out, m.Name) {
				out = append(out, m.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// commandFlags are cmd's flags, read from its -h (the flag package's
// "  -name ..." lines).
func commandFlags(ctx context.Context, cmd string, e env) []string {
	if !slices.Contains(commands, cmd) || cmd == "help" || cmd == "version" || cmd == "completion" || cmd == "context" {
		return nil
	}
	f, err := os.CreateTemp("", "porthole-complete-*")
	if err != nil {
		return nil
	}
	defer os.Remove(f.Name())
	defer f.Close()
	run(ctx, []string{cmd, "-h"}, e, nil, f, f)
	f.Seek(0, io.SeekStart)
	b, _ := io.ReadAll(f)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "  -"); ok {
			if i := strings.IndexAny(name, " \t"); i >= 0 {
				name = name[:i]
			}
			out = append(out, "-"+name)
		}
	}
	return out
}
