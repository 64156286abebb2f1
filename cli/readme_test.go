package cli_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// README.md's usage session, pasted into a fresh bash as it is: the
// blocks between the readme-test markers, in order, with -e, on free
// ports instead of 4444, 18080 and 8080, with porthole and
// porthole-master in ./bin and a fresh HOME.
func TestReadmeUsage(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok1 := strings.Cut(string(b), "<!-- readme-test: start -->")
	section, _, ok2 := strings.Cut(rest, "<!-- readme-test: end -->")
	if !ok1 || !ok2 {
		t.Fatal("README.md has no readme-test markers")
	}
	var script strings.Builder
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1)
	if len(blocks) != 2 {
		t.Fatalf("%d sh blocks between the markers, want 2", len(blocks))
	}
	for _, m := range blocks {
		script.WriteString(m[1])
	}
	ports := map[string]string{}
	for _, p := range []string{"4444", "18080", "8080"} {
		ports[p] = strconv.Itoa(testutil.FreePort(t))
	}
	text := regexp.MustCompile(`\b(4444|18080|8080)\b`).ReplaceAllStringFunc(script.String(), func(p string) string { return ports[p] })

	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "bin"), 0o755)
	for _, name := range []string{"porthole", "porthole-master"} {
		if err := os.Symlink(filepath.Join(filepath.Dir(bin), name), filepath.Join(root, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--norc", "--noprofile", "-e", "-o", "pipefail", "-c", text)
	cmd.Dir = root
	home := t.TempDir()
	cmd.Env = testutil.CleanEnv("HOME="+home, "TMPDIR="+t.TempDir(), "XDG_CONFIG_HOME=", "PORTHOLE_URL=", "PORTHOLE_TOKEN=", "PWD="+root)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || ctx.Err() != nil {
		t.Fatalf("the README's session: %v (%v)\n%s\nscript:\n%s", err, ctx.Err(), out, text)
	}
	for _, want := range []string{"hello from the agent\nexit code 3\n", "data\n", "ok\n", "PORT", "hello through the master\n",
		`logged in to master ws://127.0.0.1:` + ports["8080"] + ` as context "demo"`, "ws1:default:alice  dev"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the README's session printed no %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(filepath.Join(home, ".config", "porthole", "config.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the context: %v, %v", fi, err)
	}
}

// `porthole-master -h` lists the serve flags, as README's usage assumes.
func TestMasterHelpListsFlags(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(filepath.Join(filepath.Dir(bin), "porthole-master"), "-h")
	cmd.Env = baseEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("porthole-master -h: %v\n%s", err, out)
	}
	for _, want := range []string{"Usage:", "-listen", "-data", "-tls-cert", "-max-message", "-ping"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("porthole-master -h does not show %q:\n%s", want, out)
		}
	}
}

// README.md and docs/*.md link only to files inside the repository, and
// those exist.
func TestDocsLinkInsideRepo(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append(files, filepath.Join(root, "README.md"))
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	outside := regexp.MustCompile("`(\\.\\./[^`]+)`")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var targets []string
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			if !strings.Contains(m[1], "://") && !strings.HasPrefix(m[1], "mailto:") {
				targets = append(targets, m[1])
			}
		}
		for _, m := range outside.FindAllStringSubmatch(string(b), -1) {
			targets = append(targets, m[1])
		}
		for _, tg := range targets {
			p := filepath.Join(filepath.Dir(f), tg)
			rel, err := filepath.Rel(root, p)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s links outside the repository: %s", filepath.Base(f), tg)
				continue
			}
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s links to a missing file: %s", filepath.Base(f), tg)
			}
		}
	}
}
