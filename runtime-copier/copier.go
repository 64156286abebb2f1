// Package runtimecopier copies the running porthole binary (and optional
// payload files) into a shared volume, atomically and idempotently, with a
// manifest beside it, so that an init container built FROM scratch can
// inject porthole into every container of a pod.
package runtimecopier

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/porthole-dev/porthole/internal/proc"
)

// EnvDir names the environment variable that gives the destination
// directory when -to is not set.
const EnvDir = "PORTHOLE_INJECT_DIR"

// DefaultDir is the fixed path pods mount the shared volume at.
const DefaultDir = "/porthole/bin"

// BinaryName is the copied binary's name in the destination.
const BinaryName = "porthole"

// ManifestName is the manifest's name in the destination.
const ManifestName = "porthole.json"

// Manifest describes what was copied, for the master and clients to check
// version consistency.
type Manifest struct {
	Version         string `json:"version"`
	ProtocolVersion string `json:"protocolVersion"`
	OS              string `json:"os"`
	Arch            string `json:"arch"`
	Binary          File   `json:"binary"`
	Payloads        []File `json:"payloads,omitempty"`
}

// File is one copied file.
type File struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Options say what to copy where.
type Options struct {
	// Dest is the destination directory. It must exist, be a directory and
	// not a symlink.
	Dest string
	// Source is the binary to copy; empty means the running executable.
	Source string
	// Payloads are extra files copied beside the binary under their base
	// names.
	Payloads        []string
	Version         string
	ProtocolVersion string
}

// Result says what Copy did.
type Result struct {
	Manifest Manifest
	// Written is false when the destination already held the same files
	// (same names and sha256): nothing was written.
	Written bool
}

// Copy copies the binary and payloads into o.Dest. Each file is written to
// a temporary file in the destination, synced, given its mode (0755 for
// the binary, a payload's own permission bits, without setuid, setgid or
// sticky) and renamed
// into place, so a reader never sees a half-written file; on any error
// nothing half-written is left behind.
func Copy(o Options) (Result, error) {
	if o.Dest == "" {
		return Result{}, errors.New("no destination: give -to DIR or set " + EnvDir)
	}
	if err := checkDest(o.Dest); err != nil {
		return Result{}, err
	}
	src := o.Source
	if src == "" {
		exe, err := proc.Executable()
		if err != nil {
			return Result{}, fmt.Errorf("find the running binary: %w", err)
		}
		src = exe
	}
	// Idempotent fast path: the same version already there. A file whose
	// size and modification time (to the nanosecond) are the source's is
	// taken as the same without reading it, as rsync's quick check does
	// (Copy gives every copy its source's modification time); any other
	// is compared byte for byte, which costs less than hashing both sides.
	if old, ok := unchanged(o, src); ok {
		return Result{Manifest: old}, nil
	}
	m := Manifest{Version: o.Version, ProtocolVersion: o.ProtocolVersion, OS: runtime.GOOS, Arch: runtime.GOARCH}
	files := []struct {
		src   string
		into  *File
		name  string
		mode  os.FileMode
		mtime time.Time
	}{{src, &m.Binary, BinaryName, 0o755, time.Time{}}}
	m.Payloads = make([]File, len(o.Payloads))
	for i, p := range o.Payloads {
		name := filepath.Base(p)
		if name == BinaryName || name == ManifestName || name == "." || name == "/" {
			return Result{}, fmt.Errorf("payload %q: the name %q is reserved", p, name)
		}
		files = append(files, struct {
			src   string
			into  *File
			name  string
			mode  os.FileMode
			mtime time.Time
		}{p, &m.Payloads[i], name, 0, time.Time{}})
	}
	for i, f := range files {
		sum, size, fi, err := hashFile(f.src)
		if err != nil {
			return Result{}, err
		}
		*f.into = File{Name: f.name, SHA256: sum, Size: size}
		if i > 0 {
			files[i].mode = fi.Mode().Perm()
		}
		files[i].mtime = fi.ModTime()
	}
	if len(m.Payloads) == 0 {
		m.Payloads = nil
	}
	for _, f := range files {
		if err := writeAtomic(o.Dest, f.name, f.mode, f.mtime, func(w io.Writer) error {
			in, err := os.Open(f.src)
			if err != nil {
				return err
			}
			defer in.Close()
			_, err = io.Copy(w, in)
			return err
		}); err != nil {
			return Result{}, err
		}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Result{}, err
	}
	if err := writeAtomic(o.Dest, ManifestName, 0o644, time.Time{}, func(w io.Writer) error {
		_, err := w.Write(append(data, '\n'))
		return err
	}); err != nil {
		return Result{}, err
	}
	return Result{Manifest: m, Written: true}, nil
}

func checkDest(dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("destination %s: %w", dir, err)
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("destination %s is a symlink; give the real directory", dir)
	case !fi.IsDir():
		return fmt.Errorf("destination %s is not a directory", dir)
	}
	return nil
}

// hashFile returns the sha256, size and file info of the regular file
// at path.
func hashFile(path string) (string, int64, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, nil, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, nil, fmt.Errorf("%s is not a regular file", path)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, fi, nil
}

// unchanged reports whether o.Dest already holds this version's files,
// identical byte for byte to the sources, and returns the manifest there.
func unchanged(o Options, src string) (Manifest, bool) {
	data, err := os.ReadFile(filepath.Join(o.Dest, ManifestName))
	if err != nil {
		return Manifest{}, false
	}
	var old Manifest
	if json.Unmarshal(data, &old) != nil {
		return Manifest{}, false
	}
	if old.Version != o.Version || old.ProtocolVersion != o.ProtocolVersion || old.OS != runtime.GOOS ||
		old.Arch != runtime.GOARCH || len(old.Payloads) != len(o.Payloads) {
		return Manifest{}, false
	}
	pairs := [][2]string{{src, filepath.Join(o.Dest, old.Binary.Name)}}
	for i, p := range o.Payloads {
		if old.Payloads[i].Name != filepath.Base(p) {
			return Manifest{}, false
		}
		pairs = append(pairs, [2]string{p, filepath.Join(o.Dest, old.Payloads[i].Name)})
	}
	if old.Binary.Name != BinaryName {
		return Manifest{}, false
	}
	for i, pr := range pairs {
		if !same(pr[0], pr[1], i == 0) {
			return Manifest{}, false
		}
	}
	return old, true
}

// same reports whether b is a copy of a as Copy makes it: both regular
// files of one size, b with the mode Copy gives (0755 for the binary,
// else a's permission bits), and the same bytes. Stat comes first: a
// different size or mode needs no reading, and the same size and
// modification time need none either (the quick check). A copy with the
// same bytes but another modification time (made before Copy set it) is
// given a's, so the next run is quick.
func same(a, b string, binary bool) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Lstat(b)
	if err1 != nil || err2 != nil || !sa.Mode().IsRegular() || !sb.Mode().IsRegular() || sa.Size() != sb.Size() {
		return false
	}
	if want := sa.Mode().Perm(); binary && sb.Mode().Perm() != 0o755 || !binary && sb.Mode().Perm() != want {
		return false
	}
	if sa.ModTime().Equal(sb.ModTime()) {
		return true
	}
	if !sameBytes(a, b) {
		return false
	}
	os.Chtimes(b, time.Time{}, sa.ModTime()) // best effort: only the next run's speed depends on it
	return true
}

// sameBytes reports whether two files hold the same bytes.
func sameBytes(a, b string) bool {
	fa, err := os.Open(a)
	if err != nil {
		return false
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false
	}
	defer fb.Close()
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}

// writeAtomic writes name in dir through a synced temporary file and a
// rename, with mtime as its modification time unless zero; the temporary
// file is removed on any failure.
func writeAtomic(dir, name string, mode os.FileMode, mtime time.Time, fill func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("destination %s is not writable: %w", dir, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(tmp); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(tmp.Name(), time.Time{}, mtime); err != nil {
			return fmt.Errorf("set the modification time of %s: %w", tmp.Name(), err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Join(dir, name), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("rename into %s: %w", filepath.Join(dir, name), err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // make the rename durable
		d.Close()
	}
	return nil
}
