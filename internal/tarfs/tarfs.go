// Package tarfs copies file trees through tar streams for `porthole cp`:
// Write archives a file or directory (symlinks kept as links, never
// followed), Extract unpacks an archive inside a directory it cannot
// leave (os.Root), keeping modes and modification times. Both stream:
// memory does not grow with the size of files or trees.
//
// Kept: regular files, directories and symlinks; permission bits and the
// sticky bit; modification times (to the nanosecond, PAX headers).
// Not kept: owners (files belong to whoever extracts), setuid and setgid
// bits, access times, hard links (each name is a copy), extended
// attributes. Sockets, devices and FIFOs are skipped and reported.
package tarfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/protocol"
)

// Stats count what was copied (Error unused).
type Stats = protocol.CopyStatus

// maxSkipped bounds Stats.Skipped.
const maxSkipped = 100

func skip(s *Stats, name string) {
	if len(s.Skipped) < maxSkipped {
		s.Skipped = append(s.Skipped, name)
	}
}

// RootName is the name of src's top entry in an archive: its base name.
// It fails for a path with no name of its own ("/").
func RootName(src string) (string, error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	name := filepath.Base(abs)
	if name == "/" || name == "." || name == ".." {
		return "", fmt.Errorf("%s: cannot copy a path without a name of its own; name a directory inside it", src)
	}
	return name, nil
}

// Write archives src into w: its top entry is named RootName(src), and a
// directory's entries follow, sorted, as RootName/rel. A symlink (also
// src itself) is archived as a link. Errors name the path.
func Write(w io.Writer, src string) (Stats, error) {
	var st Stats
	root, err := RootName(src)
	if err != nil {
		return st, err
	}
	tw := tar.NewWriter(w)
	buf := make([]byte, 32<<10)
	if err := writeTree(tw, src, root, &st, buf); err != nil {
		return st, err
	}
	return st, tw.Close()
}

func writeTree(tw *tar.Writer, p, name string, st *Stats, buf []byte) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	link := ""
	switch mode := fi.Mode(); {
	case mode.IsRegular(), mode.IsDir():
	case mode&fs.ModeSymlink != 0:
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	default:
		skip(st, name)
		return nil
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	hdr.Name = name
	hdr.Uname, hdr.Gname = "", ""
	hdr.Format = tar.FormatPAX // nanosecond times, long names
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if fi.IsDir() {
		hdr.Name += "/"
	}
	switch {
	case fi.Mode().IsRegular():
		// O_NOFOLLOW: a file replaced by a link since Lstat is not followed.
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		n, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("%s: shrank from %d to %d bytes while being copied", p, hdr.Size, n)
		}
		st.Files++
		st.Bytes += n
		return nil
	case fi.IsDir():
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		st.Dirs++
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range ents { // sorted by name
			if err := writeTree(tw, filepath.Join(p, e.Name()), name+"/"+e.Name(), st, buf); err != nil {
				return err
			}
		}
		return nil
	default:
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		st.Links++
		return nil
	}
}

// Target says where an archive of a tree goes for destination dst, as
// cp -r does: into dst when dst is an existing directory (the tree keeps
// its name); otherwise as dst itself (the tree renamed to dst's base
// name, in dst's parent, which must be a directory). dir is the directory
// to extract in, rename the new name of the archive's top entry ("": kept).
func Target(dst string) (dir, rename string, err error) {
	fi, err := os.Stat(dst)
	if err == nil && fi.IsDir() {
		return dst, "", nil
	}
	if errors.Is(err, syscall.ENOTDIR) {
		err = fs.ErrNotExist // a parent is no directory: said below
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", "", err
	}
	if strings.HasSuffix(dst, "/") {
		if _, err := os.Stat(strings.TrimRight(dst, "/")); err == nil {
			return "", "", fmt.Errorf("%s: not a directory", dst)
		}
		return "", "", notExist(fmt.Sprintf("%s: no such directory", dst))
	}
	parent := filepath.Dir(dst)
	pfi, perr := os.Stat(parent)
	switch {
	case perr != nil && errors.Is(perr, fs.ErrNotExist):
		return "", "", notExist(fmt.Sprintf("%s: no such directory (the parent of %s)", parent, dst))
	case perr != nil:
		return "", "", perr
	case !pfi.IsDir():
		return "", "", fmt.Errorf("%s: not a directory (the parent of %s)", parent, dst)
	}
	return parent, filepath.Base(dst), nil
}

// Extract unpacks the archive r into dir, without leaving it: names that
// climb out (.., absolute) are refused, and symlinks, from the archive or
// already in dir, are never followed out of dir. rename, when set,
// replaces the first element of every name. Existing files are replaced;
// existing directories are merged into. Errors name the path.
func Extract(r io.Reader, dir, rename string) (Stats, error) {
	var st Stats
	root, err := os.OpenRoot(dir)
	if err != nil {
		return st, err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	buf := make([]byte, 32<<10)
	type dirMeta struct {
		name  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirMeta // modes and times are set last: files inside change them
	full := func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) }
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("reading the archive: %w", err)
		}
		name, err := cleanName(hdr.Name, rename)
		if err != nil {
			return st, err
		}
		mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := mkdir(root, name); err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			dirs = append(dirs, dirMeta{name, mode, hdr.ModTime})
			st.Dirs++
		case tar.TypeReg:
			if err := removeUnless(root, name, fs.FileMode(0)); err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			n, err := io.CopyBuffer(f, tr, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			if err := root.Chmod(name, mode); err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			st.Files++
			st.Bytes += n
		case tar.TypeSymlink:
			if err := removeUnless(root, name, fs.ModeSymlink|fs.ModeDir /* never */); err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return st, fmt.Errorf("%s: %w", full(name), unwrapPath(err))
			}
			st.Links++
		default:
			skip(&st, name)
		}
	}
	// Deepest first, so that a read-only directory is closed last.
	slices.SortStableFunc(dirs, func(a, b dirMeta) int { return strings.Count(b.name, "/") - strings.Count(a.name, "/") })
	for _, d := range dirs {
		if err := root.Chmod(d.name, d.mode); err != nil {
			return st, fmt.Errorf("%s: %w", full(d.name), unwrapPath(err))
		}
		if err := root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return st, fmt.Errorf("%s: %w", full(d.name), unwrapPath(err))
		}
	}
	return st, nil
}

// cleanName checks an archive name and applies rename.
func cleanName(name, rename string) (string, error) {
	n := strings.TrimSuffix(name, "/")
	if n == "" || !filepath.IsLocal(n) || path.Clean(n) != n {
		return "", fmt.Errorf("archive entry %q: not a plain relative name", name)
	}
	if rename != "" {
		_, rest, found := strings.Cut(n, "/")
		n = rename
		if found {
			n += "/" + rest
		}
	}
	return n, nil
}

// mkdir makes directory name (writable by us until its mode is set at
// the end), or keeps an existing one; anything else there is an error.
func mkdir(root *os.Root, name string) error {
	err := root.Mkdir(name, 0o700)
	if errors.Is(err, fs.ErrExist) {
		fi, lerr := root.Lstat(name)
		if lerr != nil {
			return lerr
		}
		if !fi.IsDir() {
			return errors.New("exists and is not a directory")
		}
		return nil
	}
	return err
}

// removeUnless removes what is at name unless it is of the type keep
// (0: a regular file). A directory is not removed: that is an error.
func removeUnless(root *os.Root, name string, keep fs.FileMode) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() == keep {
		return nil
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	return root.Remove(name)
}

// unwrapPath drops a *PathError's relative path: callers name the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// notExist is a message that is fs.ErrNotExist.
type notExist string

func (e notExist) Error() string        { return string(e) }
func (e notExist) Is(target error) bool { return target == fs.ErrNotExist }
