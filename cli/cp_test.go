package cli_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cpBigBytes is the large file of the copied tree.
const cpBigBytes = 40 << 20

// makeCpTree writes a tree with modes, times, a large file, symlinks
// (one to a directory outside the tree, which must not be followed), an
// empty and a read-only directory, at dir/tree.
func makeCpTree(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "sub", "deeper"), 0o755))
	must(os.Mkdir(filepath.Join(root, "empty"), 0o750))
	must(os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "secret"), []byte("s"), 0o600))
	must(os.WriteFile(filepath.Join(root, "sub", "deeper", "notes"), []byte("notes"), 0o640))
	f, err := os.Create(filepath.Join(root, "sub", "big"))
	must(err)
	_, err = io.Copy(f, io.LimitReader(&prngReader{newChaCha(3)}, cpBigBytes))
	must(err)
	must(f.Close())
	must(os.Symlink("sub/deeper/notes", filepath.Join(root, "rel-link")))
	must(os.Symlink("/etc", filepath.Join(root, "etc-link")))
	must(os.Mkdir(filepath.Join(root, "ro"), 0o755))
	must(os.WriteFile(filepath.Join(root, "ro", "f"), []byte("in a read-only dir"), 0o444))
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	for _, p := range []string{"run.sh", "sub/big", "sub/deeper", "empty", "ro/f", "ro"} {
		if p == "ro" {
			must(os.Chmod(filepath.Join(root, "ro"), 0o555))
		}
		must(os.Chtimes(filepath.Join(root, p), mt, mt))
	}
	return root
}

// manifest describes a tree: each entry's type and mode, a file's
// sha256 and time, a link's target, a directory's time.
func manifest(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		b.WriteString(rel + " " + fi.Mode().String())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			b.WriteString(" -> " + l)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			io.Copy(h, f)
			f.Close()
			b.WriteString(" " + hex.EncodeToString(h.Sum(nil))[:16] + " " + fi.ModTime().UTC().Format(time.RFC3339Nano))
		case rel != ".":
			b.WriteString(" " + fi.ModTime().UTC().Format(time.RFC3339Nano))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A tree goes into the machine and back, exact, through an agent that
// has no tar (no PATH at all): modes, times, links as links.
func TestCpRoundTrip(t *testing.T) {
	t.Parallel()
	a := startAgentWith(t, []string{"env", "PATH=/nonexistent"})
	local := t.TempDir()
	src := makeCpTree(t, local)
	want := manifest(t, src)
	remote := t.TempDir() // "in the machine": the agent runs on this host
	t.Cleanup(func() {    // so that TempDir can remove them
		for _, d := range []string{filepath.Join(remote, "up"), filepath.Join(remote, "tree"), filepath.Join(local, "down")} {
			os.Chmod(filepath.Join(d, "ro"), 0o755)
		}
	})

	start := time.Now()
	r := porthole(t, a, nil, "", "cp", "-url", a.url, src, ":"+filepath.Join(remote, "up"))
	if r.code != 0 {
		t.Fatalf("cp up: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("up: %s (%v)", strings.TrimSpace(r.stderr), time.Since(start))
	if !strings.Contains(r.stderr, "5 files, 5 directories, 2 symlinks (40.0 MiB)") {
		t.Errorf("cp up said %q", r.stderr)
	}
	if got := manifest(t, filepath.Join(remote, "up")); got != want {
		t.Fatalf("uploaded tree:\n%s\nwant:\n%s", got, want)
	}

	start = time.Now()
	r = porthole(t, a, nil, "", "cp", "-url", a.url, ":"+filepath.Join(remote, "up"), filepath.Join(local, "down"))
	if r.code != 0 {
		t.Fatalf("cp down: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("down: %s (%v)", strings.TrimSpace(r.stderr), time.Since(start))
	if got := manifest(t, filepath.Join(local, "down")); got != want {
		t.Fatalf("downloaded tree:\n%s\nwant:\n%s", got, want)
	}

	// Into an existing directory, the tree keeps its name; a single file
	// too; a file to a new name is renamed.
	r = porthole(t, a, nil, "", "cp", "-q", "-url", a.url, src, ":"+remote)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("cp into a directory: exit %d: %q", r.code, r.stderr)
	}
	if got := manifest(t, filepath.Join(remote, "tree")); got != want {
		t.Errorf("tree copied into a directory differs:\n%s", got)
	}
	r = porthole(t, a, nil, "", "cp", "-url", a.url, ":"+filepath.Join(remote, "up", "run.sh"), local)
	if b, err := os.ReadFile(filepath.Join(local, "run.sh")); r.code != 0 || string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("file into a directory: exit %d %s, %q %v", r.code, r.stderr, b, err)
	}
	r = porthole(t, a, nil, "", "cp", "-url", a.url, filepath.Join(src, "secret"), ":"+filepath.Join(remote, "renamed"))
	if fi, err := os.Stat(filepath.Join(remote, "renamed")); r.code != 0 || err != nil || fi.Mode() != 0o600 {
		t.Errorf("file to a new name: exit %d %s, %v %v", r.code, r.stderr, fi, err)
	}
}

// Errors name the path and the side; usage errors name the arguments.
func TestCpErrors(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o644)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{":/no/such/file", d}, 1, "in the machine: /no/such/file: no such file or directory"},
		{[]string{filepath.Join(d, "f"), ":/no/such/dir/x"}, 1, "in the machine: /no/such/dir: no such directory (the parent of /no/such/dir/x)"},
		{[]string{filepath.Join(d, "f"), ":" + filepath.Join(d, "f") + "/"}, 1, "not a directory"},
		{[]string{":" + d, filepath.Join(d, "nodir", "x")}, 1, filepath.Join(d, "nodir") + ": no such directory"},
		{[]string{filepath.Join(d, "missing"), ":/tmp"}, 1, filepath.Join(d, "missing") + ": no such file or directory"},
		{[]string{":/", d}, 1, "cannot copy a path without a name"},
		{[]string{":rel", d}, 2, `":rel": the path in the machine must be absolute`},
		{[]string{d, d}, 2, "exactly one of SRC and DST must be :PATH"},
		{[]string{":/a", ":/b"}, 2, "exactly one of SRC and DST must be :PATH"},
		{[]string{d}, 2, "cp needs a source and a destination"},
	}
	for _, c := range cases {
		r := porthole(t, a, nil, "", append([]string{"cp", "-url", a.url}, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("cp %q: exit %d, stderr %q; want %d and %q", c.args, r.code, r.stderr, c.code, c.want)
		}
	}
	// A file the agent cannot read, found only once the copy has begun
	// (when this user cannot open /proc/1/mem either; root in a container
	// usually cannot).
	if f, err := os.Open("/proc/1/mem"); err == nil {
		f.Close()
	} else {
		r := porthole(t, a, nil, "", "cp", "-url", a.url, ":/proc/1/mem", d)
		if r.code != 1 || !strings.Contains(r.stderr, "in the machine: open /proc/1/mem: permission denied") {
			t.Errorf("unreadable file: exit %d, stderr %q", r.code, r.stderr)
		}
	}
	// A directory where the copy would put a file.
	os.Mkdir(filepath.Join(d, "sub"), 0o755)
	os.Mkdir(filepath.Join(d, "sub", "f"), 0o755)
	r := porthole(t, a, nil, "", "cp", "-url", a.url, filepath.Join(d, "f"), ":"+filepath.Join(d, "sub"))
	if r.code != 1 || !strings.Contains(r.stderr, "in the machine: "+filepath.Join(d, "sub", "f")+": is a directory") {
		t.Errorf("file over a directory: exit %d, stderr %q", r.code, r.stderr)
	}
}

// cp through porthole-master's proxy, both ways.
func TestCpThroughMaster(t *testing.T) {
	t.Parallel()
	url, token := startMasterAgent(t)
	env := []string{"PORTHOLE_TOKEN=" + token}
	local, remote := t.TempDir(), t.TempDir()
	src := filepath.Join(local, "tree")
	os.MkdirAll(filepath.Join(src, "sub"), 0o750)
	os.WriteFile(filepath.Join(src, "sub", "f"), []byte(strings.Repeat("through the master ", 100_000)), 0o640)
	os.Symlink("sub/f", filepath.Join(src, "link"))
	want := manifest(t, src)
	if r := porthole(t, nil, env, "", "cp", "-url", url, src, ":"+filepath.Join(remote, "up")); r.code != 0 {
		t.Fatalf("cp up: exit %d: %s", r.code, r.stderr)
	}
	if r := porthole(t, nil, env, "", "cp", "-url", url, ":"+filepath.Join(remote, "up"), filepath.Join(local, "down")); r.code != 0 {
		t.Fatalf("cp down: exit %d: %s", r.code, r.stderr)
	}
	for _, d := range []string{filepath.Join(remote, "up"), filepath.Join(local, "down")} {
		if got := manifest(t, d); got != want {
			t.Errorf("%s:\n%s\nwant:\n%s", d, got, want)
		}
	}
	r := porthole(t, nil, env, "", "cp", "-url", url, ":/no/such", local)
	if r.code != 1 || !strings.Contains(r.stderr, "in the machine: /no/such: no such file or directory") {
		t.Errorf("missing path through the master: exit %d, %q", r.code, r.stderr)
	}
}
