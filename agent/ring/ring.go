// Package ring is a bounded byte log addressed by absolute offsets: the
// output of one process stream. One writer appends; any number of readers
// consume it at their own offsets.
//
// The ring is also the flow control. A reader is "paced" while it keeps up:
// the writer does not evict bytes a paced reader has not read, so a live
// viewer sees every byte and the process is slowed to the viewer's pace, as
// a terminal slows a program. A paced reader that makes no progress for the
// stall bound is demoted: the writer stops waiting for it, and when the bytes
// it missed are evicted it gets a *GapError naming them, then continues.
// A demoted reader that catches up is paced again. With no reader, output
// simply drains into the ring and the oldest bytes are evicted. No reader
// ever holds memory of its own: the ring is every reader's queue.
//
// The ring grows on demand up to its maximum, so an idle process costs only
// what it printed.
//
// A reader that is caught up can be handed to the writer (Direct): each
// Write then delivers its chunk to the reader's deliver function on the
// writer's own goroutine, right after appending it, instead of waking the
// reader's goroutine. This is the fast path of a live viewer: one read,
// one write, no hand-off. The ring stays the record: the chunk is appended
// first and the reader's offset moves only by what was delivered. A
// delivery that fails, or asks to stop, gives the reader back: it is
// signalled and reads on from its offset as any other reader. The deliver
// function must not wait (the writer serves every direct reader in turn);
// see Reader.Direct.
package ring

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/internal/clock"
)

// ErrClosed is returned by Write after CloseWrite.
var ErrClosed = errors.New("ring: write after close")

// GapError reports that the bytes [From, To) were evicted before the reader
// read them. The reader has moved on to To.
type GapError struct{ From, To int64 }

func (e *GapError) Error() string {
	return fmt.Sprintf("ring: bytes %d..%d were evicted before they were read (%d bytes lost)", e.From, e.To, e.To-e.From)
}

// minAlloc is the first allocation of a ring that receives data.
const minAlloc = 1024

// Buffer is the ring. Its zero value is not usable; call New.
type Buffer struct {
	max   int
	stall time.Duration
	clock clock.Clock

	mu       sync.Mutex
	buf      []byte // len(buf) is the current capacity, <= max
	head     int    // index in buf of the byte at offset start
	start    int64  // oldest retained offset
	end      int64  // next offset to be written
	closed   bool
	readers  []*Reader     // a slice: one or two, mostly; a map would cost more
	waiting  bool          // the writer waits for space
	space    chan struct{} // cap 1: a paced reader advanced or left, or a stall bound passed
	stopped  chan struct{} // closed by Stop: a blocked Write returns
	demoted  int64         // readers demoted so far (for tests and metrics)
	onDemote func()

	// deliveries is the writer's own list of direct readers served by the
	// current chunk, kept between writes (one writer at a time).
	deliveries []delivery
}

// delivery is one direct reader served by the chunk being written.
type delivery struct {
	r       *Reader
	fn      DeliverFunc
	ok, end bool // delivered; give the reader back
}

// Options configure a Buffer.
type Options struct {
	// Max is the most bytes the ring keeps. It must be positive.
	Max int
	// Stall is how long the writer waits for a paced reader that makes no
	// progress before demoting it; 0 never waits.
	Stall time.Duration
	// Clock measures Stall; nil is the real clock.
	Clock clock.Clock
	// OnDemote, when set, is called (with the ring's lock held: it must
	// not call the ring) each time a reader is demoted for stalling.
	OnDemote func()
}

// New returns a ring. It panics if o.Max is not positive.
func New(o Options) *Buffer {
	if o.Max <= 0 {
		panic("ring: max must be positive")
	}
	return &Buffer{
		max:      o.Max,
		stall:    o.Stall,
		onDemote: o.OnDemote,
		clock:    clock.Or(o.Clock),
		space:    make(chan struct{}, 1),
		stopped:  make(chan struct{}),
	}
}

// Bounds returns the retained range [start, end).
func (b *Buffer) Bounds() (start, end int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.start, b.end
}

// Closed reports whether CloseWrite was called.
func (b *Buffer) Closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Demoted returns how many readers were demoted for stalling.
func (b *Buffer) Demoted() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.demoted
}

// Allocated returns the bytes the ring currently holds allocated.
func (b *Buffer) Allocated() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return cap(b.buf)
}

// Write appends p. It blocks while appending would evict bytes that a paced
// reader has not read, for at most the stall bound per stalled reader, and
// returns early only if Stop is called (with ErrClosed).
func (b *Buffer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > b.max {
			chunk = chunk[:b.max]
		}
		if err := b.writeChunk(chunk); err != nil {
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

func (b *Buffer) writeChunk(p []byte) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	for {
		wait, timed, ok := b.blockedLocked(int64(len(p)))
		if !ok {
			break
		}
		b.waiting = true
		b.mu.Unlock()
		// The next check is due when a reader advances or leaves, or when
		// the first stall bound passes.
		stopTimer := func() bool { return false }
		if timed {
			stopTimer = b.clock.AfterFunc(wait, b.wake)
		}
		var stopped bool
		select {
		case <-b.space:
		case <-b.stopped:
			stopped = true
		}
		stopTimer()
		b.mu.Lock()
		b.waiting = false
		if stopped {
			b.mu.Unlock()
			return ErrClosed
		}
	}
	off := b.end
	b.appendLocked(p)
	ds := b.deliveries[:0]
	for _, r := range b.readers {
		if r.direct != nil && r.off == off {
			// Handed to the writer and caught up: deliver below, without
			// the lock. dmu makes Undirect and Close wait for it.
			r.dmu.Lock()
			r.off = b.end
			r.progress++
			ds = append(ds, delivery{r: r, fn: r.direct})
			continue
		}
		r.signal()
	}
	b.mu.Unlock()
	if len(ds) == 0 {
		return nil
	}
	back := false
	for i := range ds {
		d := &ds[i]
		d.ok, d.end = d.fn(off, p)
		d.end = d.end || !d.ok
		back = back || d.end
	}
	if back {
		b.mu.Lock()
		for _, d := range ds {
			if !d.end {
				continue
			}
			if !d.ok {
				d.r.off = off // not sent: the reader reads it from the ring
			}
			d.r.direct = nil
			d.r.isDirect.Store(false)
			d.r.signal()
		}
		b.mu.Unlock()
	}
	for i := range ds {
		ds[i].r.dmu.Unlock()
		ds[i] = delivery{}
	}
	b.deliveries = ds[:0]
	return nil
}

// blockedLocked reports whether appending n bytes must wait for a paced
// reader, and, when timed, for how long at most before the next check (a
// holder alone has no bound). Readers stalled past the bound are demoted
// here.
func (b *Buffer) blockedLocked(n int64) (wait time.Duration, timed, blocked bool) {
	newStart := b.end + n - int64(b.max)
	if newStart <= b.start {
		return 0, false, false
	}
	var now time.Time
	for _, r := range b.readers {
		if !r.paced || r.off >= newStart {
			continue
		}
		if r.hold {
			blocked = true // no bound: until it reads or leaves
			continue
		}
		if now.IsZero() {
			now = b.clock.Now()
		}
		if r.progress != r.seenProgress || r.blockedSince.IsZero() {
			r.seenProgress = r.progress
			r.blockedSince = now
		}
		left := b.stall - now.Sub(r.blockedSince)
		if left <= 0 {
			r.paced = false
			r.blockedSince = time.Time{}
			b.demoted++
			if b.onDemote != nil {
				b.onDemote()
			}
			r.signal()
			continue
		}
		if !timed || left < wait {
			wait = left
		}
		timed, blocked = true, true
	}
	return wait, timed, blocked
}

func (b *Buffer) appendLocked(p []byte) {
	n := len(p)
	size := int(b.end - b.start)
	if size+n > len(b.buf) && len(b.buf) < b.max {
		b.growLocked(size + n)
	}
	if over := size + n - len(b.buf); over > 0 {
		b.start += int64(over)
		b.head = (b.head + over) % len(b.buf)
	}
	// Copy at the tail, wrapping.
	tail := (b.head + int(b.end-b.start)) % len(b.buf)
	c := copy(b.buf[tail:], p)
	copy(b.buf, p[c:])
	b.end += int64(n)
}

func (b *Buffer) growLocked(need int) {
	c := len(b.buf)
	if c < minAlloc {
		c = minAlloc
	}
	for c < need {
		c *= 2
	}
	if c > b.max {
		c = b.max
	}
	nb := make([]byte, c)
	size := int(b.end - b.start)
	if size > 0 {
		b.copyOutLocked(nb[:size], b.start)
	}
	b.buf = nb
	b.head = 0
}

// copyOutLocked copies the bytes starting at offset off into p; the caller
// guarantees they are retained.
func (b *Buffer) copyOutLocked(p []byte, off int64) {
	pos := (b.head + int(off-b.start)) % len(b.buf)
	c := copy(p, b.buf[pos:])
	copy(p[c:], b.buf)
}

// CloseWrite marks the end of the stream. Readers get io.EOF once they have
// read everything.
func (b *Buffer) CloseWrite() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for _, r := range b.readers {
		r.signal()
	}
}

// Stop makes a Write blocked on a paced reader return ErrClosed. It is for
// shutdown; CloseWrite still marks the end of the stream.
func (b *Buffer) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.stopped:
	default:
		close(b.stopped)
	}
}

// Reader reads the ring from its own offset. A Reader is used by one
// goroutine at a time; Close may be called from any.
type Reader struct {
	b      *Buffer
	notify chan struct{}
	// dmu is held by the writer while it delivers to this reader.
	dmu      sync.Mutex
	isDirect atomic.Bool // direct != nil, read without the lock

	// Guarded by b.mu.
	onNotify     func()      // OnNotify
	direct       DeliverFunc // non-nil: handed to the writer (Direct)
	off          int64
	paced        bool
	follower     bool // never paced (NewFollower)
	hold         bool // paced and never demoted (NewHolder)
	progress     uint64
	seenProgress uint64
	blockedSince time.Time
	closed       bool
}

// NewReader returns a paced reader starting at offset off, which must not
// be beyond the end. An offset before the retained start is allowed: the
// first Read reports the gap.
func (b *Buffer) NewReader(off int64) (*Reader, error) { return b.newReader(off, false, false) }

// NewHolder returns a paced reader that is never demoted (as NewReader
// otherwise): the writer waits for it however long it does not read,
// until it reads, leaves or Stop is called. For the one consumer of a
// pipe, whose stream must arrive whole (`porthole exec -- tar c .`).
func (b *Buffer) NewHolder(off int64) (*Reader, error) { return b.newReader(off, false, true) }

func (b *Buffer) newReader(off int64, follower, hold bool) (*Reader, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if off < 0 {
		return nil, fmt.Errorf("offset %d is negative", off)
	}
	if off > b.end {
		return nil, fmt.Errorf("offset %d is beyond the end of the stream (%d bytes so far)", off, b.end)
	}
	r := &Reader{b: b, notify: make(chan struct{}, 1), off: off, paced: !follower, follower: follower, hold: hold}
	b.readers = append(b.readers, r)
	r.signal()
	return r, nil
}

// NewFollower returns a reader the writer never waits for, starting at
// offset off (as NewReader): one that must never slow the stream (a
// recorder); when it falls behind by more than the ring, its next Read
// reports the gap.
func (b *Buffer) NewFollower(off int64) (*Reader, error) { return b.newReader(off, true, false) }

func (r *Reader) signal() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
	if r.onNotify != nil {
		r.onNotify()
	}
}

// OnNotify makes fn be called each time Notify fires, with the ring's lock
// held (fn must not call the ring, nor wait): for an owner that does not
// keep a goroutine waiting on Notify, such as one whose reader is direct
// (it starts one when called).
func (r *Reader) OnNotify(fn func()) {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	r.onNotify = fn
}

// Notify returns a channel that receives a value when the reader may have
// something new to read: data, a gap, or the end of the stream.
func (r *Reader) Notify() <-chan struct{} { return r.notify }

// Offset returns the offset of the next byte the reader will read. For a
// direct reader it moves while the writer delivers (see ReadOffset).
func (r *Reader) Offset() int64 {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	return r.off
}

// Paced reports whether the writer currently waits for this reader.
func (r *Reader) Paced() bool {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	return r.paced
}

// Read copies available bytes at the reader's offset into p and advances.
// It never blocks: with nothing to read it returns 0, nil (wait on Notify).
// It returns a *GapError when bytes were evicted before this reader read
// them (the reader has skipped them), and io.EOF at the end of a closed
// stream.
func (r *Reader) Read(p []byte) (int, error) {
	_, n, err := r.ReadOffset(p)
	return n, err
}

// ReadOffset is Read, also returning the offset the read started at (for
// a gap, its From; at io.EOF, the end), taken under the read's own lock:
// Offset called before Read can be stale, since the writer moves a direct
// reader's offset while it delivers, and back if the delivery failed.
func (r *Reader) ReadOffset(p []byte) (off int64, n int, err error) {
	if r.isDirect.Load() {
		r.Undirect()
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	off = r.off
	n, err = r.readLocked(p)
	return off, n, err
}

func (r *Reader) readLocked(p []byte) (int, error) {
	b := r.b
	if r.closed {
		return 0, io.ErrClosedPipe
	}
	if r.off < b.start {
		gap := &GapError{From: r.off, To: b.start}
		r.off = b.start
		r.advancedLocked()
		return 0, gap
	}
	avail := b.end - r.off
	if avail == 0 {
		if b.closed {
			return 0, io.EOF
		}
		if !r.paced && !r.follower {
			// Caught up: pace the writer again.
			r.paced = true
			r.blockedSince = time.Time{}
		}
		return 0, nil
	}
	n := len(p)
	if int64(n) > avail {
		n = int(avail)
	}
	b.copyOutLocked(p[:n], r.off)
	r.off += int64(n)
	r.advancedLocked()
	return n, nil
}

func (r *Reader) advancedLocked() {
	r.progress++
	if r.b.waiting {
		r.b.wake()
	}
}

// wake makes a waiting writer check again. A stale wake-up only costs the
// writer one more check.
func (b *Buffer) wake() {
	select {
	case b.space <- struct{}{}:
	default:
	}
}

// Close detaches the reader; the writer no longer waits for it. It
// returns once no delivery to it is in progress.
func (r *Reader) Close() {
	b := r.b
	b.mu.Lock()
	if r.closed {
		b.mu.Unlock()
		return
	}
	r.closed = true
	r.direct = nil
	r.isDirect.Store(false)
	if i := slices.Index(b.readers, r); i >= 0 {
		last := len(b.readers) - 1
		b.readers[i] = b.readers[last]
		b.readers[last] = nil
		b.readers = b.readers[:last]
		if last == 0 {
			b.readers = nil
		}
	}
	if b.waiting {
		b.wake()
	}
	b.mu.Unlock()
	r.waitDelivery()
}

// DeliverFunc receives, on the writer's goroutine and without the ring's
// lock, a chunk p at offset off that was just appended, for a direct
// reader (Reader.Direct). It must not wait: every direct reader is served
// in turn by the one writer. It returns whether p was delivered (the
// reader has then read it) and whether the reader is given back, to read
// on its own from its offset (which is past p if it was delivered, at off
// if not). A chunk not delivered always gives the reader back.
type DeliverFunc func(off int64, p []byte) (delivered, giveBack bool)

// Direct hands a caught-up reader to the writer: from now on every Write
// delivers its chunk to deliver instead of waking the reader, until a
// delivery gives it back, the stream ends (CloseWrite), or Undirect. In
// each of those cases Notify fires, and the reader's owner calls Read (or
// Undirect) as usual. Direct returns false, and changes nothing, when the
// reader is not caught up: it has something to read, a gap, or the end of
// the stream.
func (r *Reader) Direct(deliver DeliverFunc) bool {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.closed || b.closed || r.off != b.end || r.off < b.start {
		return false
	}
	if !r.follower {
		r.paced = true // caught up
		r.blockedSince = time.Time{}
	}
	r.direct = deliver
	r.isDirect.Store(true)
	// Nothing is pending: a stale wake-up would only cost a round trip.
	select {
	case <-r.notify:
	default:
	}
	return true
}

// Undirect takes the reader back from the writer (see Direct). It returns
// once no delivery to it is in progress: from then on the reader's offset
// is final until its owner reads. Read calls it for a direct reader.
func (r *Reader) Undirect() {
	b := r.b
	b.mu.Lock()
	r.direct = nil
	r.isDirect.Store(false)
	b.mu.Unlock()
	r.waitDelivery()
}

// waitDelivery returns once no delivery to r is in progress: the writer
// holds dmu while it delivers.
func (r *Reader) waitDelivery() {
	r.dmu.Lock()
	defer r.dmu.Unlock() // taking the lock is the wait: nothing is guarded
}
