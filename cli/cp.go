package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"

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
	progress := fs.Bool("progress", term.IsTerminal(int(stderr.Fd())), "show the bytes copied so far on stderr, every half second (default: when stderr is a terminal)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{"cp needs a source and a destination: porthole cp [flags] SRC DST, one of them :PATH or MACHINE:PATH in the machine"}
	}
	src, dst := pos[0], pos[1]
	srcMachine, rsrc, srcRemote := remotePath(src)
	dstMachine, rdst, dstRemote := remotePath(dst)
	if m := srcMachine + dstMachine; m != "" {
		if cf.machine != "" && cf.machine != m {
			return usageError{fmt.Sprintf("cp: machine %s in the path and -m %s differ", m, cf.machine)}
		}
		cf.machine = m
	}
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
	var pr *progressReport
	if *progress && !*quiet {
		pr = startProgress(stderr, start)
		defer pr.stop()
	}
	var st protocol.CopyStatus
	if srcRemote {
		st, err = download(ctx, opts, rsrc, dst, pr)
	} else {
		if _, err := tarfs.RootName(src); err != nil {
			return err
		}
		if _, err := os.Lstat(src); err != nil {
			return err
		}
		st, err = client.Upload(ctx, opts, rdst, func(w io.Writer) error {
			_, err := tarfs.Write(pr.count(w), src)
			return err
		})
	}
	pr.stop()
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

// remotePath parses a cp argument: ":PATH" (the machine of -m or of the
// context), "MACHINE:/PATH" or "RUNTIME/MACHINE:/PATH" (on a master) are
// in a machine; anything else, also a path starting with "." or "/", is
// local.
func remotePath(arg string) (machine, path string, remote bool) {
	if p, ok := strings.CutPrefix(arg, ":"); ok {
		return "", p, true
	}
	if strings.HasPrefix(arg, ".") || strings.HasPrefix(arg, "/") {
		return "", arg, false
	}
	i := strings.LastIndex(arg, ":/")
	if i <= 0 {
		return "", arg, false
	}
	return arg[:i], arg[i+1:], true
}

// download extracts the machine's path src at the local dst.
func download(ctx context.Context, opts client.Options, src, dst string, prog *progressReport) (protocol.CopyStatus, error) {
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
		st, err := client.Download(ctx, opts, src, prog.count(pw))
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

// progressReport shows a copy's bytes on one stderr line, rewritten every
// half second; a nil one counts nothing.
type progressReport struct {
	w     io.Writer
	start time.Time
	n     atomic.Int64
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func startProgress(w io.Writer, start time.Time) *progressReport {
	p := &progressReport{w: w, start: start, done: make(chan struct{})}
	p.wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case now := <-t.C:
				fmt.Fprintf(p.w, "\r%s\x1b[K", progressLine(p.n.Load(), now.Sub(p.start)))
			}
		}
	})
	return p
}

// count returns w counting into p.
func (p *progressReport) count(w io.Writer) io.Writer {
	if p == nil {
		return w
	}
	return countingWriter{w, &p.n}
}

// stop ends the line; later calls do nothing.
func (p *progressReport) stop() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		close(p.done)
		p.wg.Wait()
		fmt.Fprint(p.w, "\r\x1b[K")
	})
}

// progressLine is "12.0 MiB copied, 4.0 MiB/s".
func progressLine(n int64, d time.Duration) string {
	rate := ""
	if d > 0 {
		rate = fmt.Sprintf(", %s/s", humanBytes(int64(float64(n)/d.Seconds())))
	}
	return humanBytes(n) + " copied" + rate
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
