package agent

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	psutil "github.com/shirou/gopsutil/v4/process"
	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/agent/ring"
	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/internal/proc"
	"github.com/porthole-dev/porthole/protocol"
)

// process is one child of the agent: its stdio, its output rings and its
// state. It outlives the clients attached to it.
type process struct {
	id    string
	name  string
	argv  []string
	cwd   string
	user  string
	tty   bool
	child *child
	pid   int
	// out[protocol.Stdout], out[protocol.Stderr] (nil for a TTY).
	out       [3]*ring.Buffer
	startedAt time.Time

	clients     atomic.Int32
	stdinClosed atomic.Bool
	stats       *stats    // the agent's counters
	rec         *recorder // nil: not recorded
	// ext is an extension's state for this process (embed.go), dropped
	// with the process.
	ext atomic.Pointer[any]

	// done is closed once the process has exited and its output streams
	// have ended: everything a client should see before the exit status.
	done chan struct{}

	mu       sync.Mutex
	exited   bool
	exitedAt time.Time
	status   syscall.WaitStatus
	size     protocol.WindowSize
	// startHold are the holders a start with hold opened at offset 0
	// (StartParams.Hold), until the first held attach takes over or
	// StartHoldTimeout passes; stopHold stops that timeout.
	startHold []*ring.Reader
	stopHold  func() bool
}

// holdOutput opens holders at offset 0 on every stream before the pumps
// run: nothing is evicted before the first held attach arrives, or d
// passed (measured by clk).
func (p *process) holdOutput(clk clock.Clock, d time.Duration) {
	for _, out := range p.out {
		if out == nil {
			continue
		}
		if r, err := out.NewHolder(0); err == nil {
			p.startHold = append(p.startHold, r)
		}
	}
	p.stopHold = clk.AfterFunc(d, p.releaseStartHold)
}

// releaseStartHold closes the start's holders: a held attach has its
// own now, or nobody came in time.
func (p *process) releaseStartHold() {
	p.mu.Lock()
	rs, stop := p.startHold, p.stopHold
	p.startHold, p.stopHold = nil, nil
	p.mu.Unlock()
	if stop != nil {
		stop()
	}
	for _, r := range rs {
		r.Close()
	}
}

// Output returns the ring of a stream, or nil when the process has none
// (stderr of a TTY process).
func (p *process) Output(s protocol.Stream) *ring.Buffer {
	if s != protocol.Stdout && s != protocol.Stderr {
		return nil
	}
	return p.out[s]
}

// run owns the process's goroutines: one pump per output stream, and
// once the process exited (rp tells), the waiter. wg is the manager's.
func (p *process) run(wg *sync.WaitGroup, rp *reaper, clk clock.Clock, drain time.Duration, onDone func()) {
	var pumps sync.WaitGroup
	// By stream, nil where none: an array, not a map, since the waiter
	// keeps it for the process's life.
	var srcs [3]*os.File
	srcs[protocol.Stdout] = p.child.master
	pool := &ttyBufs
	if !p.tty {
		srcs[protocol.Stdout], srcs[protocol.Stderr] = p.child.stdout, p.child.stderr
		pool = &pipeBufs
	}
	for s, f := range srcs {
		if f == nil {
			continue
		}
		pumps.Add(1)
		wg.Go(func() {
			defer pumps.Done()
			pump(f, p.out[s], pool)
		})
	}
	waiter := func() {
		state, err := p.child.process.Wait()
		p.mu.Lock()
		p.exited = true
		p.exitedAt = time.Now()
		if state != nil {
			p.status, _ = state.Sys().(syscall.WaitStatus)
		} else if err != nil {
			p.status = syscall.WaitStatus(255 << 8)
		}
		p.mu.Unlock()
		// Drain what the process wrote before it exited. A background child
		// that keeps the terminal or a pipe open does not hold the session
		// beyond the drain bound, measured by clk: when it passes, a read
		// deadline in the past ends the pumps' waits for more, and each
		// pump reads what its source holds then (drainNow): the bound
		// never cuts what the process wrote, however long a paced viewer
		// held a pump back.
		stopDrain := clk.AfterFunc(drain, func() {
			for _, f := range srcs {
				if f != nil {
					f.SetReadDeadline(time.Unix(1, 0))
				}
			}
		})
		pumps.Wait()
		stopDrain()
		for _, f := range srcs {
			if f != nil {
				f.Close()
			}
		}
		if p.child.stdin != nil {
			p.child.stdin.Close()
		}
		close(p.done)
		onDone()
	}
	if !rp.watch(p.pid, waiter) {
		wg.Go(waiter) // no pidfds: Wait blocks a thread
	}
}

// Info returns a snapshot; sample adds CPU and memory of a running process.
func (p *process) Info(sample bool) protocol.ProcessInfo {
	info := protocol.ProcessInfo{
		ID: p.id, Name: p.name, Argv: p.argv, Cwd: p.cwd, User: p.user, TTY: p.tty,
		PID: p.pid, StartedAt: p.startedAt, Clients: int(p.clients.Load()),
	}
	s, e := p.out[protocol.Stdout].Bounds()
	info.Stdout = protocol.StreamRange{Start: s, End: e}
	if r := p.out[protocol.Stderr]; r != nil {
		s, e := r.Bounds()
		info.Stderr = &protocol.StreamRange{Start: s, End: e}
	}
	p.mu.Lock()
	exited, status, exitedAt := p.exited, p.status, p.exitedAt
	if p.tty {
		size := p.size
		info.Size = &size
	}
	p.mu.Unlock()
	if exited {
		info.State = protocol.StateExited
		info.ExitedAt = &exitedAt
		switch {
		case status.Signaled():
			info.Signal = protocol.SignalName(status.Signal())
		default:
			code := status.ExitStatus()
			info.ExitCode = &code
		}
	} else {
		info.State = protocol.StateRunning
		if sample {
			if ps, err := psutil.NewProcess(int32(p.pid)); err == nil {
				if t, err := ps.Times(); err == nil {
					info.CPUSeconds = t.User + t.System
				}
				if m, err := ps.MemoryInfo(); err == nil {
					info.RSSBytes = m.RSS
				}
			}
		}
	}
	return info
}

func (p *process) hasExited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Signal sends sig to the process group while the process has not been
// reaped (so its pid cannot have been reused).
func (p *process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return exitedError(p.id)
	}
	return proc.Group(p.pid).Signal(sig)
}

// Resize sets the terminal size; the kernel sends SIGWINCH.
func (p *process) Resize(s protocol.WindowSize) error {
	if !p.tty {
		return &protocol.Error{Code: protocol.CodeNotTTY, Message: "process " + p.id + " has no terminal to resize"}
	}
	if err := checkSize(s); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return exitedError(p.id)
	}
	p.size = s
	if p.rec != nil {
		p.rec.resize(s)
	}
	return setWinsize(p.child.master, s)
}

func checkSize(s protocol.WindowSize) error {
	if s.Rows == 0 || s.Cols == 0 || s.Rows > protocol.MaxWindowDimension || s.Cols > protocol.MaxWindowDimension {
		return &protocol.Error{Code: protocol.CodeInvalidParams, Message: "size: rows and cols must be 1..10000"}
	}
	return nil
}

func (p *process) stdinFile() *os.File {
	if p.tty {
		return p.child.master
	}
	return p.child.stdin
}

// WriteStdin writes to the process's stdin; it blocks while the process
// does not read (as a pipe or terminal does).
func (p *process) WriteStdin(b []byte) error {
	if p.stdinClosed.Load() {
		return stdinClosedError(p.id)
	}
	if p.rec != nil {
		p.rec.typed(b)
	}
	if _, err := p.stdinFile().Write(b); err != nil {
		if errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.EIO) {
			return stdinClosedError(p.id)
		}
		return err
	}
	return nil
}

// tryWriteStdin writes what the process's stdin takes of b now, without
// waiting, and returns how much that was (0 when its buffer is full).
func (p *process) tryWriteStdin(b []byte) (int, error) {
	if p.stdinClosed.Load() {
		return 0, stdinClosedError(p.id)
	}
	rc := p.child.stdinRC
	if rc == nil {
		return 0, nil
	}
	var (
		n    int
		werr error
	)
	recorded := func([]byte) {}
	if p.rec != nil {
		recorded = p.rec.typing()
	}
	// Control, not Write: a writer of another socket waiting for room
	// holds the file's write lock, and this must not wait for it.
	err := rc.Control(func(fd uintptr) { n, werr = writeNow(fd, b) })
	recorded(b[:n])
	if err != nil {
		return 0, stdinClosedError(p.id)
	}
	switch {
	case werr == unix.EAGAIN || werr == unix.EINTR:
		n, werr = 0, nil
	case werr == unix.EIO || werr == unix.EPIPE:
		return 0, stdinClosedError(p.id)
	case werr != nil:
		return 0, werr
	}
	return n, nil
}

// CloseStdin half-closes stdin: the pipe is closed, so the process reads
// EOF. A terminal cannot be half-closed; there the terminal's EOF character
// (^D) is written, which a reading process sees as end of input.
func (p *process) CloseStdin() error {
	if p.tty {
		return p.WriteStdin([]byte{veof(p.child.master)})
	}
	if p.stdinClosed.Swap(true) {
		return nil
	}
	err := p.child.stdin.Close()
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	return err
}

// stop releases the rings' blocked writers at shutdown.
func (p *process) stop() {
	p.releaseStartHold()
	for _, r := range p.out {
		if r != nil {
			r.Stop()
		}
	}
}
