package runtimecopier

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCopyIsAtomicIdempotentAndManifested(t *testing.T) {
	src := t.TempDir()
	bin := writeFile(t, filepath.Join(src, "bin"), "binary v1")
	extra := writeFile(t, filepath.Join(src, "plugin.tar"), "payload")
	dest := t.TempDir()
	o := Options{Dest: dest, Source: bin, Payloads: []string{extra}, Version: "v1", ProtocolVersion: "1.0"}
	r, err := Copy(o)
	if err != nil || !r.Written {
		t.Fatalf("first copy = %+v, %v", r, err)
	}
	fi, err := os.Stat(filepath.Join(dest, BinaryName))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("copied binary: %v, mode %v", err, fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "plugin.tar")); string(b) != "payload" {
		t.Fatalf("payload = %q", b)
	}
	m, _ := os.ReadFile(filepath.Join(dest, ManifestName))
	for _, want := range []string{`"version": "v1"`, `"protocolVersion": "1.0"`, r.Manifest.Binary.SHA256, `"name": "plugin.tar"`} {
		if !strings.Contains(string(m), want) {
			t.Fatalf("manifest lacks %q:\n%s", want, m)
		}
	}
	// Same version, same bytes: nothing written.
	before, _ := os.Stat(filepath.Join(dest, BinaryName))
	r, err = Copy(o)
	if err != nil || r.Written {
		t.Fatalf("second copy = %+v, %v; want no write", r, err)
	}
	after, _ := os.Stat(filepath.Join(dest, BinaryName))
	if !before.ModTime().Equal(after.ModTime()) {
		t.Fatal("idempotent copy touched the binary")
	}
	// A damaged copy is replaced.
	writeFile(t, filepath.Join(dest, BinaryName), "garbage")
	if r, err = Copy(o); err != nil || !r.Written {
		t.Fatalf("repair copy = %+v, %v", r, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, BinaryName)); string(b) != "binary v1" {
		t.Fatalf("binary = %q", b)
	}
	assertNoTemp(t, dest)
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

func TestCopyRunningExecutable(t *testing.T) {
	dest := t.TempDir()
	r, err := Copy(Options{Dest: dest, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	sum, _, _, _ := hashFile(exe)
	if r.Manifest.Binary.SHA256 != sum {
		t.Fatal("copied binary is not the running executable")
	}
}

func TestCopyRefusesBadDestinations(t *testing.T) {
	src := writeFile(t, filepath.Join(t.TempDir(), "bin"), "x")
	base := t.TempDir()
	realDir := filepath.Join(base, "real")
	os.Mkdir(realDir, 0o755)
	link := filepath.Join(base, "link")
	os.Symlink(realDir, link)
	file := writeFile(t, filepath.Join(base, "file"), "")
	cases := []struct {
		name, dest, mention string
	}{
		{"empty", "", EnvDir},
		{"missing", filepath.Join(base, "nope"), "no such file"},
		{"symlink", link, "symlink"},
		{"not a directory", file, "not a directory"},
		{"reserved payload name", realDir, "reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Dest: tc.dest, Source: src}
			if tc.name == "reserved payload name" {
				o.Payloads = []string{filepath.Join(base, ManifestName)}
			}
			_, err := Copy(o)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Copy = %v; want an error mentioning %q", err, tc.mention)
			}
		})
	}
}

// mountTmpfs mounts a tmpfs with opts on a new directory (root only).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; CI runs as root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func TestCopyRefusesReadOnlyAndFullDisk(t *testing.T) {
	src := writeFile(t, filepath.Join(t.TempDir(), "bin"), strings.Repeat("x", 256<<10))
	ro := mountTmpfs(t, "ro,size=1m")
	if _, err := Copy(Options{Dest: ro, Source: src}); err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("read-only: %v", err)
	}
	full := mountTmpfs(t, "size=64k")
	_, err := Copy(Options{Dest: full, Source: src})
	if err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("full disk: %v", err)
	}
	assertNoTemp(t, full)
	if _, err := os.Stat(filepath.Join(full, BinaryName)); !os.IsNotExist(err) {
		t.Fatalf("a partial binary was left: %v", err)
	}
}

// TestCopyPayloadModes (issue 11, low): a payload keeps its source's
// permission bits (a 0600 secret stays 0600, a 0644 file is not made
// executable), without setuid, setgid or sticky; the binary is 0755. A
// copy whose mode alone differs is rewritten. Before, every payload was
// made 0755.
func TestCopyPayloadModes(t *testing.T) {
	src := t.TempDir()
	bin := writeFile(t, filepath.Join(src, "bin"), "binary")
	modes := map[string]os.FileMode{"secret.key": 0o600, "data.tar": 0o644, "tool": 0o755, "suid": 0o4755}
	want := map[string]os.FileMode{"secret.key": 0o600, "data.tar": 0o644, "tool": 0o755, "suid": 0o755}
	var payloads []string
	for name, mode := range modes {
		p := writeFile(t, filepath.Join(src, name), name)
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, p)
	}
	dest := t.TempDir()
	o := Options{Dest: dest, Source: bin, Payloads: payloads, Version: "v1", ProtocolVersion: "1.0"}
	check := func() {
		t.Helper()
		for name, m := range want {
			fi, err := os.Stat(filepath.Join(dest, name))
			if err != nil || fi.Mode() != m {
				t.Errorf("%s: mode %v, %v; want %v", name, fi.Mode(), err, m)
			}
		}
		if fi, err := os.Stat(filepath.Join(dest, BinaryName)); err != nil || fi.Mode() != 0o755 {
			t.Errorf("binary: %v", err)
		}
	}
	if _, err := Copy(o); err != nil {
		t.Fatal(err)
	}
	check()
	if err := os.Chmod(filepath.Join(dest, "secret.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := Copy(o); err != nil || !r.Written {
		t.Fatalf("copy over a copy with another mode = %+v, %v; want written", r, err)
	}
	check()
}

// TestCopyQuickCheck: an idempotent run decides from stat alone when it
// can. A copy carries its source's modification time; a copy of the same
// size with another modification time is compared byte for byte (and
// replaced when the bytes differ, or given the source's time when they
// do not); a copy with the source's size and time is taken as the same
// without being read, as rsync's quick check does (docs/injection.md).
func TestCopyQuickCheck(t *testing.T) {
	src := t.TempDir()
	bin := writeFile(t, filepath.Join(src, "bin"), "binary v1")
	old := time.Date(2020, 1, 2, 3, 4, 5, 678901234, time.UTC)
	if err := os.Chtimes(bin, time.Time{}, old); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	copied := filepath.Join(dest, BinaryName)
	o := Options{Dest: dest, Source: bin, Version: "v1"}
	if r, err := Copy(o); err != nil || !r.Written {
		t.Fatalf("first copy = %+v, %v", r, err)
	}
	mtime := func() time.Time {
		t.Helper()
		fi, err := os.Stat(copied)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	if got := mtime(); !got.Equal(old) {
		t.Fatalf("copy's modification time = %v, want the source's %v", got, old)
	}

	// Same size, other bytes, another time: compared, replaced.
	writeFile(t, copied, "binary v2")
	if err := os.Chmod(copied, 0o755); err != nil {
		t.Fatal(err)
	}
	if r, err := Copy(o); err != nil || !r.Written {
		t.Fatalf("copy over a same-size damaged copy = %+v, %v; want a write", r, err)
	}
	if b, _ := os.ReadFile(copied); string(b) != "binary v1" {
		t.Fatalf("binary = %q, want the source's bytes", b)
	}

	// Same bytes, another time (a copy made before Copy kept times):
	// nothing written, and the time is set for the next run.
	later := old.Add(time.Hour)
	if err := os.Chtimes(copied, time.Time{}, later); err != nil {
		t.Fatal(err)
	}
	if r, err := Copy(o); err != nil || r.Written {
		t.Fatalf("copy over the same bytes with another time = %+v, %v; want no write", r, err)
	}
	if got := mtime(); !got.Equal(old) {
		t.Fatalf("modification time after the byte comparison = %v, want the source's %v", got, old)
	}

	// Same size and time: taken as the same without reading (the limit
	// of the quick check: only someone who can write the volume, and then
	// sets the time back to the nanosecond, gets past it).
	writeFile(t, copied, "binary vX")
	if err := errors.Join(os.Chmod(copied, 0o755), os.Chtimes(copied, time.Time{}, old)); err != nil {
		t.Fatal(err)
	}
	if r, err := Copy(o); err != nil || r.Written {
		t.Fatalf("copy with the source's size and time = %+v, %v; want no write", r, err)
	}

	// A new source (another time) is compared, and copied.
	writeFile(t, bin, "binary v3")
	if r, err := Copy(o); err != nil || !r.Written {
		t.Fatalf("copy of a changed source = %+v, %v; want a write", r, err)
	}
	if b, _ := os.ReadFile(copied); string(b) != "binary v3" {
		t.Fatalf("binary = %q, want binary v3", b)
	}
	assertNoTemp(t, dest)
}
