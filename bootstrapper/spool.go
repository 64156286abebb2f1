package bootstrapper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
)

// unnumbered is an event ready to be queued but for its sequence number,
// which the spool gives it under its lock, so that numbers follow the
// spool's order: its frame is head, the number in decimal, then tail. The
// encoder renders it (head has room for the rest); the spool completes it
// once and from then on stores the frame as opaque bytes.
type unnumbered struct{ head, tail []byte }

// size bounds the frame's length once numbered (a seq has at most 20 digits).
func (u unnumbered) size() int64 { return int64(len(u.head) + 20 + len(u.tail)) }

func (u unnumbered) number(seq uint64) []byte {
	return append(strconv.AppendUint(u.head, seq, 10), u.tail...)
}

// Entry kinds.
const (
	kindStatus byte = iota // status events: never dropped, never wait
	kindLog                // output lines: wait for room while connected; dropped oldest first when full
	kindLost               // stands for dropped log lines
)

// entry is one event in a spool: its complete frame and what the spool
// needs to know about it.
type entry struct {
	seq   uint64
	kind  byte
	inst  int32  // installer index (kindLog, kindLost)
	lost  uint64 // kindLost: the lines seq-lost+1 … seq were dropped
	frame []byte
}

// spoolOptions bound a spool.
type spoolOptions struct {
	// memory is how many bytes of frames are kept in memory; beyond that
	// they go to the spill file.
	memory int64
	// limit bounds memory and file together; beyond it the oldest log
	// lines are dropped. Without a file the bound is memory.
	limit int64
	// dir holds the spill file (created at once and unlinked, so nothing
	// is left behind); "" keeps everything in memory.
	dir string
	// window is how many bytes may be written and not yet acknowledged.
	window int64
}

// spool is the ordered queue of the events for one connection. Every event
// gets the next sequence number when it is added and stays until the
// receiver acknowledges it (see pusher), so that after a reconnection
// everything not acknowledged is sent again, in order; a receiver drops
// the duplicates by sequence number.
//
// While the connection is up, a log line waits for room (the installer
// then blocks on its pipe, as on a slow terminal) instead of being
// dropped. While it is down, events go to memory, then to the spill file;
// when the whole bound is reached, the oldest log lines that were never
// written are dropped and a single event (kindLost) stands in their place,
// saying how many. Lines written on a connection that broke are kept (the
// window bounds them) and written again, since the receiver may or may not
// have them: so the count is exact.
//
// The spill file is written and read under mu. It is used only once
// memory has filled while the master could not be reached, until it is
// empty again; its writes go out 1 MiB at a time, its reads are as large
// at most. Doing them outside the lock would need an "in flight" state
// for the bytes between memory and file, which ordering would depend on.
type spool struct {
	// lost renders the event that stands for n dropped log lines, the
	// first from installer inst.
	lost  func(inst int, n uint64) unnumbered
	log   *slog.Logger
	o     spoolOptions
	ready chan struct{} // capacity 1: something to send, or an acknowledgement

	mu        sync.Mutex
	room      *sync.Cond // log lines waiting for room
	next      uint64     // the next sequence number
	acked     uint64     // the highest acknowledged
	written   uint64     // the highest ever written
	head      []entry    // oldest first; head[:sent] written, not acknowledged
	sent      int
	headBytes int64
	inflight  int64 // bytes of head[:sent]
	spill     *spillFile
	connected bool
	dropped   uint64 // log lines dropped so far
}

func newSpool(lost func(inst int, n uint64) unnumbered, o spoolOptions, log *slog.Logger) (*spool, error) {
	s := &spool{lost: lost, log: log, o: o, ready: make(chan struct{}, 1), next: 1}
	s.room = sync.NewCond(&s.mu)
	if o.dir != "" {
		f, err := newSpillFile(o.dir)
		if err != nil {
			return nil, err
		}
		s.spill = f
	}
	return s, nil
}

func (s *spool) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// bound is the most bytes the spool holds before dropping log lines.
func (s *spool) bound() int64 {
	if s.spill != nil {
		return s.o.limit
	}
	return s.o.memory
}

func (s *spool) total() int64 { return s.headBytes + s.spill.size() }

// add numbers ev and appends it.
func (s *spool) add(kind byte, inst int, ev unnumbered) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind == kindLog {
		n := int64(len(ev.head)+len(ev.tail)) + 20 // the frame's size, or about
		for s.connected && s.total() > 0 && s.total()+n > s.o.memory {
			s.room.Wait()
		}
	}
	e := entry{seq: s.next, kind: kind, inst: int32(inst), frame: ev.number(s.next)}
	s.next++
	n := int64(len(e.frame))
	if kind == kindLog {
		for s.total()+n > s.bound() && s.dropOne() {
		}
	}
	s.push(e)
	s.signal()
}

// push puts e after everything else: in memory while nothing is spilled
// and there is room, else in the spill file.
func (s *spool) push(e entry) {
	n := int64(len(e.frame))
	if s.spill == nil || (s.spill.size() == 0 && s.headBytes+n <= s.o.memory) {
		s.head = append(s.head, e)
		s.headBytes += n
		return
	}
	if err := s.spill.append(e); err != nil {
		s.spillFailed(err)
		s.head = append(s.head, e)
		s.headBytes += n
	}
}

// spillFailed gives up the spill file: what it held is lost (it is
// counted and logged) and the spool keeps to memory from then on.
func (s *spool) spillFailed(err error) {
	n := s.spill.n
	s.spill.close()
	s.spill = nil
	s.log.Error("spool file failed: keeping events in memory only", "err", err, "events_lost", n)
	s.dropped += uint64(n)
}

// dropOne drops the oldest log line never written, merging it into the
// kindLost event just before it (if that is not written either) or
// turning it into one. It reports false when there is no such line.
func (s *spool) dropOne() bool {
	i := s.oldestUnwritten()
	if i < 0 && s.spill.size() > 0 {
		s.refill(s.o.memory / 4)
		i = s.oldestUnwritten()
	}
	if i < 0 {
		return false
	}
	e := s.head[i]
	s.dropped++
	s.headBytes -= int64(len(e.frame))
	if i > 0 && s.head[i-1].kind == kindLost && s.head[i-1].seq > s.written {
		m := &s.head[i-1]
		s.headBytes -= int64(len(m.frame))
		m.lost++
		m.seq = e.seq
		m.frame = s.lost(int(m.inst), m.lost).number(m.seq)
		s.headBytes += int64(len(m.frame))
		s.head = slices.Delete(s.head, i, i+1)
		return true
	}
	m := entry{seq: e.seq, kind: kindLost, inst: e.inst, lost: 1}
	m.frame = s.lost(int(m.inst), 1).number(m.seq)
	s.headBytes += int64(len(m.frame))
	s.head[i] = m
	return true
}

// oldestUnwritten returns the index of the oldest log line in memory
// that was never written, or -1.
func (s *spool) oldestUnwritten() int {
	for i := s.sent; i < len(s.head); i++ {
		if s.head[i].kind == kindLog && s.head[i].seq > s.written {
			return i
		}
	}
	return -1
}

// refill moves about limit bytes of entries from the spill file to memory.
func (s *spool) refill(limit int64) {
	es, err := s.spill.read(limit)
	if err != nil {
		s.spillFailed(err)
		return
	}
	for _, e := range es {
		s.head = append(s.head, e)
		s.headBytes += int64(len(e.frame))
	}
}

// take appends to buf up to n frames to write next, within the window of
// unacknowledged bytes, and returns them with the last one's sequence
// number.
func (s *spool) take(buf [][]byte, n int) ([][]byte, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent == len(s.head) && s.spill.size() > 0 {
		s.refill(min(s.o.memory/4, 1<<20))
	}
	var last uint64
	for s.sent < len(s.head) && len(buf) < n && s.inflight < s.o.window {
		e := &s.head[s.sent]
		buf = append(buf, e.frame)
		s.inflight += int64(len(e.frame))
		last = e.seq
		s.written = max(s.written, e.seq)
		s.sent++
	}
	return buf, last
}

// unacked returns how many frames were written on the current connection
// and not acknowledged yet.
func (s *spool) unacked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// ack removes every entry up to seq: the receiver has read them. It
// returns how many of them had been written on the current connection.
func (s *spool) ack(seq uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.acked {
		return 0
	}
	s.acked = seq
	n := 0
	for n < len(s.head) && s.head[n].seq <= seq {
		b := int64(len(s.head[n].frame))
		s.headBytes -= b
		if n < s.sent {
			s.inflight -= b
		}
		n++
	}
	clear(s.head[:n])
	s.head = s.head[n:]
	written := min(n, s.sent)
	s.sent -= written
	if len(s.head) == 0 {
		s.head = nil // let the array go
	}
	s.room.Broadcast()
	s.signal()
	return written
}

// setConnected records whether a connection is up. Going down means that
// everything not acknowledged will be written again on the next one, and
// that log lines stop waiting for room.
func (s *spool) setConnected(up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = up
	if !up {
		s.sent = 0
		s.inflight = 0
		s.room.Broadcast()
	}
}

// release frees the spill file.
func (s *spool) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spill != nil {
		s.spill.close()
	}
}

// stats returns the events not acknowledged, the last sequence number
// used and the log lines dropped.
func (s *spool) stats() (pending int, last uint64, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.head)
	if s.spill != nil {
		n += s.spill.n
	}
	return n, s.next - 1, s.dropped
}

// oldest returns the installer of the oldest event not acknowledged (-1:
// none, or the bootstrapper's own).
func (s *spool) oldest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.head) == 0 {
		return -1
	}
	return int(s.head[0].inst)
}

// empty reports whether every event has been acknowledged.
func (s *spool) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.head) == 0 && s.spill.size() == 0
}

// spillFile holds a spool's entries beyond its memory, oldest first, in an
// unlinked file: records [roff, woff) in the file, then buf.
type spillFile struct {
	f          *os.File
	buf        []byte
	roff, woff int64
	n          int   // records held
	bytes      int64 // frame bytes held
}

// A record: seq (8 bytes), kind (1), installer (4), frame length (4), frame.
const recHeader = 17

func newSpillFile(dir string) (*spillFile, error) {
	f, err := os.CreateTemp(dir, "porthole-bootstrap-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool file: %w", err)
	}
	return &spillFile{f: f}, nil
}

// size is the frame bytes held; a nil file holds none.
func (f *spillFile) size() int64 {
	if f == nil {
		return 0
	}
	return f.bytes
}

func (f *spillFile) append(e entry) error {
	f.buf = binary.LittleEndian.AppendUint64(f.buf, e.seq)
	f.buf = append(f.buf, e.kind)
	f.buf = binary.LittleEndian.AppendUint32(f.buf, uint32(e.inst))
	f.buf = binary.LittleEndian.AppendUint32(f.buf, uint32(len(e.frame)))
	f.buf = append(f.buf, e.frame...)
	f.n++
	f.bytes += int64(len(e.frame))
	if len(f.buf) >= 1<<20 {
		return f.flush()
	}
	return nil
}

func (f *spillFile) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	if _, err := f.f.WriteAt(f.buf, f.woff); err != nil {
		return fmt.Errorf("spool file: write: %w", err)
	}
	f.woff += int64(len(f.buf))
	f.buf = f.buf[:0]
	return nil
}

// read removes and returns the oldest records, about limit bytes of them
// and at least one.
func (f *spillFile) read(limit int64) ([]entry, error) {
	if f.n == 0 {
		return nil, nil
	}
	if err := f.flush(); err != nil {
		return nil, err
	}
	size := min(f.woff-f.roff, max(limit, recHeader))
	block := make([]byte, size)
	if _, err := f.f.ReadAt(block, f.roff); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("spool file: read: %w", err)
	}
	var es []entry
	for {
		if len(block) < recHeader {
			break
		}
		n := int64(binary.LittleEndian.Uint32(block[13:17]))
		if int64(len(block)) < recHeader+n {
			if len(es) > 0 {
				break
			}
			// The first record is larger than limit: read it whole.
			block = make([]byte, recHeader+n)
			if _, err := f.f.ReadAt(block, f.roff); err != nil {
				return nil, fmt.Errorf("spool file: read: %w", err)
			}
		}
		es = append(es, entry{
			seq:   binary.LittleEndian.Uint64(block[0:8]),
			kind:  block[8],
			inst:  int32(binary.LittleEndian.Uint32(block[9:13])),
			frame: block[recHeader : recHeader+n : recHeader+n],
		})
		block = block[recHeader+n:]
		f.roff += recHeader + n
		f.n--
		f.bytes -= n
	}
	if f.roff == f.woff {
		f.roff, f.woff = 0, 0
		if err := f.f.Truncate(0); err != nil {
			return es, fmt.Errorf("spool file: truncate: %w", err)
		}
	}
	return es, nil
}

func (f *spillFile) close() { f.f.Close() }
