package agent

// A process's output, the whole path of a terminal byte inside the agent:
// pump reads it from the PTY or pipe into the stream's ring (agent/ring,
// the one queue, which is also the flow control), and follow, one loop per
// viewer, reads it out of the ring at the viewer's offset into a frame and
// hands the frame to the viewer's sink, which writes it to the WebSocket
// (internal/wsrpc). See docs/architecture.md.
//
// The fast path: a viewer on an attach socket that has read everything
// is handed to the pump (ring.Reader.Direct), which then sends each chunk
// it read to that viewer's socket itself, right after putting it in the
// ring: one read, one write, no other goroutine woken. The rule that
// keeps the pump from waiting on any viewer: a fast send is one sendmsg
// that does not wait (wsrpc.Stream.TryWriteBinary). If the viewer's socket
// takes nothing, or another write holds the socket, the chunk stays in the
// ring for that viewer, which drops back to its own follow loop here and
// reads it at its offset (paced by the ring, as before, up to the stall
// bound). If the socket takes part of the frame, the viewer's loop
// finishes it first. Per chunk the pump spends at most one non-blocking
// sendmsg per fast viewer.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unicode/utf8"
	"unsafe"

	"github.com/sourcegraph/jsonrpc2"
	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/agent/ring"
	"github.com/porthole-dev/porthole/protocol"
)

// Read buffers, held only from a read until the ring (and the viewers on
// the fast path) took its bytes. A PTY read never returns more than the
// line discipline's 4 KiB, but the pump reads a burst into one buffer
// (see burstRead); a pipe holds 64 KiB.
var (
	ttyBufs  = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	pipeBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

// burstRead: a read that returned at least this much is part of a burst
// (a program printing, not a keystroke's echo), so the pump reads again
// at once, without waiting, while its buffer has room: a burst then goes
// to the ring and the viewers in chunks of up to 32 KiB instead of one
// per terminal read (fewer frames, fewer syscalls). A small read, as of
// an echo, goes out at once.
const burstRead = 2048

// pump copies one output source into its ring until EOF, EIO (the PTY's
// EOF), the drain deadline or close, then ends the stream. It holds a read
// buffer only from the moment data is there until the ring took it, so an
// idle process holds none.
func pump(f *os.File, out *ring.Buffer, pool *sync.Pool) {
	defer out.CloseWrite()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			bp = pool.Get().(*[]byte)
			buf := *bp
			n, rerr = readNow(fd, buf)
			if rerr == unix.EAGAIN || rerr == unix.EINTR {
				pool.Put(bp)
				return false // wait until readable (or the deadline)
			}
			for rerr == nil && n >= burstRead && len(buf)-n >= burstRead {
				m, err := readNow(fd, buf[n:])
				if m <= 0 || err != nil {
					break // nothing more now; an EOF or EIO comes again next read
				}
				n += m
			}
			return true
		})
		if err != nil { // the drain deadline, or closed
			if errors.Is(err, os.ErrDeadlineExceeded) {
				drainNow(rc, out, pool)
			}
			return
		}
		if n <= 0 || rerr != nil { // EOF, or EIO: the terminal's EOF
			pool.Put(bp)
			return
		}
		_, werr := out.Write((*bp)[:n])
		pool.Put(bp)
		if werr != nil {
			return
		}
	}
}

// readNow and writeNow are read(2) and write(2) on a non-blocking
// descriptor, which never wait: they are made as raw system calls, which
// skip the runtime's bookkeeping for calls that may block. That
// bookkeeping wakes the runtime's monitor thread (sysmon) out of its deep
// sleep whenever the agent was idle, that is at every keystroke: one
// context switch per keystroke for nothing (docs/performance.md, "Agent
// fast path").
func readNow(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func writeNow(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// drainNow reads what the source holds now, without waiting for more,
// into out. At the drain deadline the process has exited: what it wrote
// is in the pipe (or the terminal's buffer) already, and is kept however
// long a paced viewer held the pump back before; only what a background
// child might still write is not waited for.
func drainNow(rc syscall.RawConn, out *ring.Buffer, pool *sync.Pool) {
	rc.Control(func(fd uintptr) {
		if unix.SetNonblock(int(fd), true) != nil {
			return
		}
		for {
			bp := pool.Get().(*[]byte)
			n, err := unix.Read(int(fd), *bp)
			if n <= 0 || err != nil { // empty (EAGAIN), EOF, or EIO
				pool.Put(bp)
				return
			}
			_, werr := out.Write((*bp)[:n])
			pool.Put(bp)
			if werr != nil {
				return
			}
		}
	})
}

// sink is where a viewer sends a process's life, in the fixed wire order:
// started, then output, gaps and ends of streams, then exited.
type sink interface {
	started(protocol.ProcessInfo) error
	// output gets a frame whose first OutputHeaderLen bytes are free for a
	// header and whose rest is the payload at offset off.
	output(s protocol.Stream, off int64, frame []byte) error
	gap(s protocol.Stream, from, to int64) error
	eof(s protocol.Stream, off int64) error
	exited(protocol.ProcessInfo) error
}

// directSink is a sink that can also take output on the pump's goroutine
// without waiting: the fast path.
type directSink interface {
	sink
	// fast reports whether tryOutput can ever send (a kernel socket).
	fast() bool
	// tryOutput sends payload p at offset off of stream s now, or declines
	// (sent false). whole false: part was sent, flush sends the rest.
	tryOutput(s protocol.Stream, off int64, p []byte) (sent, whole bool)
	flush() error
}

// frameData is the largest payload of one output frame.
const frameData = 32 << 10

// framePool holds frame buffers. A viewer takes one only while it has data
// to send, so idle viewers hold no buffer.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, protocol.OutputHeaderLen+frameData)
	return &b
}}

// follow sends process p to sk from the given offsets (nil: that stream is
// not followed) until the process is done and everything was sent, or ctx
// ends. It is the one viewer loop behind subscriptions and extensions;
// attach sockets run the same view, parked while it has nothing to do
// (attach.go).
func follow(ctx context.Context, p *process, offsets [3]*int64, sk sink) error {
	v, err := openView(ctx, p, offsets, sk, nil, false)
	if err != nil {
		return err
	}
	defer v.close()
	_, err = v.run(false)
	return err
}

// view is one viewer of a process: a ring reader per followed stream and
// the sink they are sent to. One goroutine at a time runs it.
type view struct {
	ctx     context.Context
	p       *process
	sk      sink
	ds      directSink // nil: no fast path
	all     [3]*ring.Reader
	readers [3]*ring.Reader // those not at their end yet
	deliver [3]ring.DeliverFunc
	started bool
	counted bool // in p.clients
}

// openView opens the readers of a view at the given offsets. wake, when
// set, is called each time a reader may have something new (with a
// ring's lock held: it must only schedule work). hold opens holders,
// never demoted (ring.NewHolder).
func openView(ctx context.Context, p *process, offsets [3]*int64, sk sink, wake func(), hold bool) (*view, error) {
	v := &view{ctx: ctx, p: p, sk: sk}
	for _, s := range []protocol.Stream{protocol.Stdout, protocol.Stderr} {
		out := p.Output(s)
		if offsets[s] == nil || out == nil {
			continue
		}
		newReader := out.NewReader
		if hold {
			newReader = out.NewHolder
		}
		r, err := newReader(*offsets[s])
		if err != nil {
			v.close()
			return nil, invalidParams("%s offset: %v", s, err)
		}
		if wake != nil {
			r.OnNotify(wake)
		}
		v.all[s], v.readers[s] = r, r
	}
	p.clients.Add(1)
	v.counted = true
	// The fast path (see the top of this file): deliver[s] sends stream s
	// from the pump while this viewer is caught up.
	if ds, ok := sk.(directSink); ok && ds.fast() {
		v.ds = ds
		for s, r := range v.readers {
			if r == nil {
				continue
			}
			v.deliver[s] = func(off int64, b []byte) (bool, bool) {
				sent, whole := ds.tryOutput(protocol.Stream(s), off, b)
				if sent {
					p.stats.bytesOut.Add(int64(len(b)))
					p.stats.direct.Add(int64(len(b)))
				}
				return sent, !whole
			}
		}
	}
	return v, nil
}

// close detaches the view's readers; no delivery to it is in progress
// once it returns.
func (v *view) close() {
	for _, r := range v.all {
		if r != nil {
			r.Close()
		}
	}
	if v.counted {
		v.counted = false
		v.p.clients.Add(-1)
	}
}

// run sends until the process is done and everything was sent (then
// nil), or ctx ends, or, when park is set, every stream is caught up and
// handed to its pump: then it returns parked, and the view has nothing to
// do until a reader's wake-up.
func (v *view) run(park bool) (parked bool, err error) {
	p, sk, readers := v.p, v.sk, &v.readers
	if !v.started {
		v.started = true
		if err := sk.started(p.Info(false)); err != nil {
			return false, err
		}
	}
	for {
		if v.ctx.Err() != nil { // also when busy: unsubscribe stops at once
			return false, context.Cause(v.ctx)
		}
		if v.ds != nil {
			// A frame the pump began, if any, is finished before
			// anything else is sent.
			if err := v.ds.flush(); err != nil {
				return false, err
			}
		}
		active, progressed := false, false
		for s, r := range readers {
			if r == nil {
				continue
			}
			active = true
			more, done, err := sendOnce(r, protocol.Stream(s), sk, p.stats)
			if err != nil {
				return false, err
			}
			if done {
				readers[s] = nil
			}
			progressed = progressed || more || done
		}
		if !active {
			break
		}
		if progressed {
			continue
		}
		if v.ds != nil && !handOver(*readers, v.deliver) {
			continue // more came in meanwhile
		}
		if v.ds != nil && park {
			return true, nil
		}
		var n1, n2 <-chan struct{}
		if r := readers[protocol.Stdout]; r != nil {
			n1 = r.Notify()
		}
		if r := readers[protocol.Stderr]; r != nil {
			n2 = r.Notify()
		}
		select {
		case <-n1:
		case <-n2:
		case <-v.ctx.Done():
			return false, context.Cause(v.ctx)
		}
	}
	select {
	case <-p.done:
	case <-v.ctx.Done():
		return false, context.Cause(v.ctx)
	}
	return false, sk.exited(p.Info(false))
}

// handOver hands every caught-up reader to its pump (ring.Reader.Direct),
// reporting false when one is not caught up after all. The next Read of a
// reader takes it back.
func handOver(readers [3]*ring.Reader, deliver [3]ring.DeliverFunc) bool {
	for s, r := range readers {
		if r != nil && !r.Direct(deliver[s]) {
			return false
		}
	}
	return true
}

// sendOnce moves one chunk (or a gap, or the end) from r to sk, counting
// it in st.
func sendOnce(r *ring.Reader, s protocol.Stream, sk sink, st *stats) (more, done bool, err error) {
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)
	frame := *bp
	off, n, rerr := r.ReadOffset(frame[protocol.OutputHeaderLen:])
	var gap *ring.GapError
	switch {
	case errors.As(rerr, &gap):
		st.gaps.Add(1)
		return true, false, sk.gap(s, gap.From, gap.To)
	case rerr == io.EOF:
		return false, true, sk.eof(s, off)
	case rerr != nil:
		return false, false, rerr
	case n == 0:
		return false, false, nil
	}
	st.bytesOut.Add(int64(n))
	return true, false, sk.output(s, off, frame[:protocol.OutputHeaderLen+n])
}

// frameSink is the framed attach socket: binary output frames with stream
// and offset, JSON-RPC notifications for everything else.
type frameSink struct{ s *session }

func (f frameSink) notify(method string, params any) error {
	return f.s.conn.Notify(f.s.ctx, method, params)
}

func (f frameSink) started(info protocol.ProcessInfo) error {
	return f.notify(protocol.EventStarted, info)
}

func (f frameSink) output(s protocol.Stream, off int64, frame []byte) error {
	protocol.PutOutputHeader(frame, s, off)
	return f.s.stream.WriteBinary(frame)
}

func (f frameSink) fast() bool { return f.s.stream.CanTryWrite() }

func (f frameSink) tryOutput(s protocol.Stream, off int64, p []byte) (bool, bool) {
	var h [protocol.OutputHeaderLen]byte
	protocol.PutOutputHeader(h[:], s, off)
	return f.s.stream.TryWriteBinary(h[:], p)
}

func (f frameSink) flush() error { return f.s.stream.Flush() }

func (f frameSink) gap(s protocol.Stream, from, to int64) error {
	return f.notify(protocol.EventGap, protocol.GapEvent{ID: f.s.proc.id, Stream: s.String(), From: from, To: to})
}

func (f frameSink) eof(s protocol.Stream, off int64) error {
	return f.notify(protocol.EventEOF, protocol.EOFEvent{ID: f.s.proc.id, Stream: s.String(), Offset: off})
}

func (f frameSink) exited(info protocol.ProcessInfo) error {
	if err := f.notify(protocol.EventExited, info); err != nil {
		return err
	}
	return f.s.stream.SendClose(protocol.CloseNormal, exitReason(info))
}

func exitReason(info protocol.ProcessInfo) string {
	if info.Signal != "" {
		return "killed by signal " + info.Signal
	}
	if info.ExitCode != nil {
		return fmt.Sprintf("exit code %d", *info.ExitCode)
	}
	return "exited"
}

// rawSink is the raw attach socket for stock terminal widgets: output bytes
// only. A gap is shown in the terminal as a line of text, since the widget
// has no other way to learn of it; the exit status is the close reason.
type rawSink struct{ s *session }

func (rawSink) started(protocol.ProcessInfo) error { return nil }

func (r rawSink) output(_ protocol.Stream, _ int64, frame []byte) error {
	return r.s.stream.WriteBinary(frame[protocol.OutputHeaderLen:])
}

func (r rawSink) fast() bool { return r.s.stream.CanTryWrite() }

func (r rawSink) tryOutput(_ protocol.Stream, _ int64, p []byte) (bool, bool) {
	return r.s.stream.TryWriteBinary(nil, p)
}

func (r rawSink) flush() error { return r.s.stream.Flush() }

func (r rawSink) gap(_ protocol.Stream, from, to int64) error {
	return r.s.stream.WriteBinary(fmt.Appendf(nil, "\r\n[porthole: %d bytes of output were lost]\r\n", to-from))
}

func (rawSink) eof(protocol.Stream, int64) error { return nil }

func (r rawSink) exited(info protocol.ProcessInfo) error {
	return r.s.stream.SendClose(protocol.CloseNormal, exitReason(info))
}

// eventSink is a subscription on a control socket: output as JSON text for
// JSON-only clients. A multibyte character split between reads is carried
// to the next event, so Text is always whole characters; bytes that are
// not UTF-8 go out as Data (base64). Offsets stay exact either way.
type eventSink struct {
	s       *session
	conn    *jsonrpc2.Conn
	id      string
	pending [3][]byte // carried incomplete UTF-8 tail, per stream
	pendOff [3]int64
}

func (e *eventSink) notify(method string, params any) error {
	return e.conn.Notify(e.s.ctx, method, params)
}

func (e *eventSink) started(info protocol.ProcessInfo) error {
	return e.notify(protocol.EventStarted, info)
}

func (e *eventSink) output(s protocol.Stream, off int64, frame []byte) error {
	payload := frame[protocol.OutputHeaderLen:]
	if len(e.pending[s]) > 0 {
		off = e.pendOff[s]
		payload = append(e.pending[s], payload...)
		e.pending[s] = nil
	}
	cut := len(payload) - incompleteTail(payload)
	if cut < len(payload) {
		e.pending[s] = append([]byte(nil), payload[cut:]...)
		e.pendOff[s] = off + int64(cut)
	}
	if cut == 0 {
		return nil
	}
	return e.send(s, off, payload[:cut])
}

func (e *eventSink) send(s protocol.Stream, off int64, b []byte) error {
	ev := protocol.OutputEvent{ID: e.id, Stream: s.String(), Offset: off, Len: len(b)}
	if utf8.Valid(b) {
		ev.Text = string(b)
	} else {
		ev.Data = append([]byte(nil), b...)
	}
	return e.notify(protocol.EventOutput, ev)
}

func (e *eventSink) flush(s protocol.Stream) error {
	if len(e.pending[s]) == 0 {
		return nil
	}
	b, off := e.pending[s], e.pendOff[s]
	e.pending[s] = nil
	return e.send(s, off, b)
}

func (e *eventSink) gap(s protocol.Stream, from, to int64) error {
	if err := e.flush(s); err != nil {
		return err
	}
	return e.notify(protocol.EventGap, protocol.GapEvent{ID: e.id, Stream: s.String(), From: from, To: to})
}

func (e *eventSink) eof(s protocol.Stream, off int64) error {
	if err := e.flush(s); err != nil {
		return err
	}
	return e.notify(protocol.EventEOF, protocol.EOFEvent{ID: e.id, Stream: s.String(), Offset: off})
}

func (e *eventSink) exited(info protocol.ProcessInfo) error {
	return e.notify(protocol.EventExited, info)
}

// incompleteTail returns how many trailing bytes of b are the start of a
// UTF-8 sequence that the next bytes may complete (0 to 3).
func incompleteTail(b []byte) int {
	for i := 1; i <= 3 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 {
			return 0 // ASCII: nothing pending
		}
		if c >= 0xC0 { // a leading byte
			if c < 0xC2 || c > 0xF4 {
				return 0 // never starts a character: nothing to wait for
			}
			need := 2
			if c >= 0xF0 {
				need = 4
			} else if c >= 0xE0 {
				need = 3
			}
			if need > i {
				return i
			}
			return 0
		}
	}
	return 0
}
