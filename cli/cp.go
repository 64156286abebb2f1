package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/tarfs"
	"github.com/porthole-dev/porthole/protocol"
)

// runCp is `porthole cp SRC DST`: one of them is :PATH, a path in the
// agent's machine. Files and trees go both ways through the agent's own
// tar (no tar in the image), as tarfs keeps them.
func runCp(ctx context.Context, args []string, e env, stderr *os.File) error {
	fs := newFlagSet("cp", stderr)
	var cf clientFlags
	cf.register(fs, e)
	quiet := fs.Bool("q", false, "print nothing on success")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{"cp needs a source and a destination: porthole cp [flags] SRC DST, one of them :PATH in the machine"}
	}
	src, dst := pos[0], pos[1]
	rsrc, srcRemote := strings.CutPrefix(src, ":")
	rdst, dstRemote := strings.CutPrefix(dst, ":")
	switch {
	case srcRemote == dstRemote:
		return usageError{fmt.Sprintf("cp %q %q: exactly one of SRC and DST must be :PATH, a path in the machine", src, dst)}
	case srcRemote && !strings.HasPrefix(rsrc, "/"):
		return usageError{fmt.Sprintf("cp: %q: the path in the machine must be absolute (:/PATH)", src)}
	case dstRemote && !strings.HasPrefix(rdst, "/"):
		return usageError{fmt.Sprintf("cp: %q: the path in the machine must be absolute (:/PATH)", dst)}
	}
	opts, err := cf.options(ctx, e)
	if err != nil {
		return err
	}
	start := time.Now()
	var st protocol.CopyStatus
	if srcRemote {
		st, err = download(ctx, opts, rsrc, dst)
	} else {
		if _, err := tarfs.RootName(src); err != nil {
			return err
		}
		if _, err := os.Lstat(src); err != nil {
			return err
		}
		st, err = client.Upload(ctx, opts, rdst, func(w io.Writer) error {
			_, err := tarfs.Write(w, src)
			return err
		})
	}
	if err != nil {
		return copyError(err)
	}
	for _, s := range st.Skipped {
		fmt.Fprintf(stderr, "porthole: cp: skipped %s: not a file, directory or symlink\n", s)
	}
	if !*quiet {
		fmt.Fprintf(stderr, "copied %s to %s: %s in %s\n", src, dst, summary(st), time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// download extracts the machine's path src at the local dst.
func download(ctx context.Context, opts client.Options, src, dst string) (protocol.CopyStatus, error) {
	dir, rename, err := tarfs.Target(dst)
	if err != nil {
		return protocol.CopyStatus{}, err
	}
	pr, pw := io.Pipe()
	type result struct {
		st  protocol.CopyStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := client.Download(ctx, opts, src, pw)
		pw.CloseWithError(err)
		done <- result{st, err}
	}()
	_, xerr := tarfs.Extract(pr, dir, rename)
	if xerr == nil {
		_, xerr = io.Copy(io.Discard, pr) // up to the end of the stream
	}
	pr.CloseWithError(xerr)
	r := <-done
	switch {
	case r.err != nil && xerr != nil && errors.Is(r.err, xerr):
		return r.st, xerr // ours, passed back to the download
	case r.err != nil:
		return r.st, r.err
	}
	return r.st, xerr
}

// copyError words the agent's refusals of a path plainly: they name it.
func copyError(err error) error {
	var he *client.HTTPError
	if errors.As(err, &he) && (strings.HasPrefix(he.Message, "/") || strings.HasPrefix(he.Message, "path ")) {
		return fmt.Errorf("in the machine: %s", he.Message)
	}
	var ce *client.CopyError
	if errors.As(err, &ce) {
		return fmt.Errorf("in the machine: %s", ce.Message)
	}
	return err
}

func summary(st protocol.CopyStatus) string {
	var parts []string
	plural := func(n int, what string) {
		if n == 0 {
			return
		}
		if n != 1 {
			what += "s"
		}
		parts = append(parts, fmt.Sprintf("%d %s", n, what))
	}
	plural(st.Files, "file")
	plural(st.Dirs, "directory")
	if st.Dirs > 1 {
		parts[len(parts)-1] = fmt.Sprintf("%d directories", st.Dirs)
	}
	plural(st.Links, "symlink")
	if len(parts) == 0 {
		parts = append(parts, "nothing")
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(" (%s)", humanBytes(st.Bytes))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
