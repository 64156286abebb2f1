package tarfs

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MakeTree writes a tree with modes, times, an empty and a read-only
// directory, symlinks (relative, absolute, dangling, to a directory) and
// a FIFO under dir/name, and returns its path.
func makeTree(t *testing.T, dir string) string {
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
	must(os.WriteFile(filepath.Join(root, "sub", "deeper", "data"), bytes.Repeat([]byte("x"), 100_000), 0o640))
	must(os.Symlink("sub/deeper/data", filepath.Join(root, "rel-link")))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "abs-link")))
	must(os.Symlink("nowhere", filepath.Join(root, "dangling")))
	must(os.Symlink("sub", filepath.Join(root, "dir-link")))
	must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	must(os.Mkdir(filepath.Join(root, "ro"), 0o755))
	must(os.WriteFile(filepath.Join(root, "ro", "f"), []byte("read only dir"), 0o444))
	must(os.Chmod(filepath.Join(root, "ro"), 0o555))
	t.Cleanup(func() { os.Chmod(filepath.Join(root, "ro"), 0o755) })
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	for _, p := range []string{"run.sh", "sub/deeper/data", "empty", "sub"} {
		must(os.Chtimes(filepath.Join(root, p), mt, mt))
	}
	return root
}

// describe lists a tree: each entry's type, mode, time, link target and
// content hash-free size, skipping FIFOs.
func describe(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(p)
		rel, _ := filepath.Rel(root, p)
		if fi.Mode()&fs.ModeNamedPipe != 0 {
			return nil
		}
		b.WriteString(rel + " " + fi.Mode().String())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			b.WriteString(" -> " + l)
		case fi.Mode().IsRegular():
			c, _ := os.ReadFile(p)
			b.WriteString(" " + fi.ModTime().UTC().Format(time.RFC3339Nano) + " " + string(c[:min(len(c), 20)]))
		default:
			b.WriteString(" " + fi.ModTime().UTC().Format(time.RFC3339Nano))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

// A tree survives Write and Extract: modes, times, links as links; the
// FIFO is skipped and reported.
func TestRoundTrip(t *testing.T) {
	src := makeTree(t, t.TempDir())
	var archive bytes.Buffer
	wst, err := Write(&archive, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(wst.Skipped) != 1 || wst.Skipped[0] != "tree/fifo" || wst.Links != 4 || wst.Files != 4 {
		t.Errorf("Write stats %+v", wst)
	}
	for _, rename := range []string{"", "renamed"} {
		dst := t.TempDir()
		est, err := Extract(bytes.NewReader(archive.Bytes()), dst, rename)
		if err != nil {
			t.Fatal(err)
		}
		name := "tree"
		if rename != "" {
			name = rename
		}
		t.Cleanup(func() { os.Chmod(filepath.Join(dst, name, "ro"), 0o755) })
		if est.Files != wst.Files || est.Bytes != wst.Bytes || est.Links != wst.Links || est.Dirs != wst.Dirs {
			t.Errorf("Extract stats %+v, Write's %+v", est, wst)
		}
		if got, want := describe(t, filepath.Join(dst, name)), describe(t, src); got != want {
			t.Errorf("extracted tree (rename %q):\n%s\nwant:\n%s", rename, got, want)
		}
	}
}

// A symlink given as the source is copied as a link, not followed.
func TestSymlinkSource(t *testing.T) {
	dir := t.TempDir()
	os.Symlink("/etc", filepath.Join(dir, "l"))
	var archive bytes.Buffer
	if _, err := Write(&archive, filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if _, err := Extract(&archive, dst, "copy"); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "copy")); err != nil || l != "/etc" {
		t.Errorf("copied link: %q, %v", l, err)
	}
}

func tarOf(t *testing.T, entries ...*tar.Header) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len("payload"))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(h)
		if h.Typeflag == tar.TypeReg {
			io.WriteString(tw, "payload")
		}
	}
	tw.Close()
	return &b
}

// Hostile archives write nothing outside the directory.
func TestHostileArchives(t *testing.T) {
	cases := []struct {
		name    string
		entries []*tar.Header
		want    string
	}{
		{"dot-dot", []*tar.Header{{Name: "../escaped", Typeflag: tar.TypeReg}}, "not a plain relative name"},
		{"absolute", []*tar.Header{{Name: "/tmp/escaped", Typeflag: tar.TypeReg}}, "not a plain relative name"},
		{"inner dot-dot", []*tar.Header{{Name: "a/../../escaped", Typeflag: tar.TypeReg}}, "not a plain relative name"},
		{"through an absolute link", []*tar.Header{
			{Name: "t", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "t/l", Typeflag: tar.TypeSymlink, Linkname: "OUTSIDE"},
			{Name: "t/l/escaped", Typeflag: tar.TypeReg},
		}, "escaped"},
		{"through a climbing link", []*tar.Header{
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../.."},
			{Name: "l/escaped", Typeflag: tar.TypeReg},
		}, "escaped"},
		{"file over a link out", []*tar.Header{
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "OUTSIDE/target"},
			{Name: "l", Typeflag: tar.TypeReg},
		}, ""}, // replaces the link: allowed, and harmless
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outside := t.TempDir()
			for _, h := range c.entries {
				h.Linkname = strings.ReplaceAll(h.Linkname, "OUTSIDE", outside)
			}
			base := t.TempDir()
			dst := filepath.Join(base, "a", "b")
			os.MkdirAll(dst, 0o755)
			_, err := Extract(tarOf(t, c.entries...), dst, "")
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Extract: %v, want an error with %q", err, c.want)
			}
			for _, d := range []string{outside, base, filepath.Join(base, "a")} {
				ents, _ := os.ReadDir(d)
				for _, e := range ents {
					if e.Name() != "a" && e.Name() != "b" {
						t.Errorf("%s: %s written outside the destination", d, e.Name())
					}
				}
			}
		})
	}
}

func TestTarget(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "file"), nil, 0o644)
	cases := []struct {
		dst, dir, rename, err string
	}{
		{d, d, "", ""},
		{d + "/", d + "/", "", ""},
		{filepath.Join(d, "new"), d, "new", ""},
		{filepath.Join(d, "file"), d, "file", ""},
		{filepath.Join(d, "file") + "/", "", "", "not a directory"},
		{filepath.Join(d, "new") + "/", "", "", "no such directory"},
		{filepath.Join(d, "no", "x"), "", "", d + "/no: no such directory (the parent of"},
		{filepath.Join(d, "file", "x"), "", "", "file: not a directory (the parent of"},
	}
	for _, c := range cases {
		dir, rename, err := Target(c.dst)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Target(%q): %v, want %q", c.dst, err, c.err)
			}
			continue
		}
		if err != nil || dir != c.dir || rename != c.rename {
			t.Errorf("Target(%q) = %q, %q, %v; want %q, %q", c.dst, dir, rename, err, c.dir, c.rename)
		}
	}
}

func TestRootName(t *testing.T) {
	if _, err := RootName("/"); err == nil {
		t.Error("RootName(/): no error")
	}
	if n, err := RootName("/a/b/"); err != nil || n != "b" {
		t.Errorf("RootName(/a/b/) = %q, %v", n, err)
	}
}
