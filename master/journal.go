package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// Store is what the master needs of its persistence (master/store.Bolt is
// the embedded one). It keeps machine documents and, per machine, a
// journal of entries numbered from 1.
type Store interface {
	Machines() (map[store.Key][]byte, error)
	Commit(b *store.Batch) error
	Scan(k store.Key, from uint64, fn func(store.Entry) bool) error
	Close() error
}

var _ Store = (*store.Bolt)(nil)

// Limits of the state.
const (
	// tailEntries: at most this many of each machine's last entries are
	// kept in memory for subscribers (and at most Options.TailBytes of
	// them); older ones are read from the store.
	tailEntries = 512
	// maxPendingBytes: entries waiting for the next commit, all machines
	// together; beyond, ingestion waits for the commit (backpressure).
	maxPendingBytes = 32 << 20
	// reorderWindow: a commit waits until its oldest entry is this old,
	// and a machine's entries are ordered by their time before they are
	// numbered. A bootstrapper with separate status and log endpoints
	// sends over two connections, whose events may arrive out of order by
	// a few milliseconds; within the window the journal has them in the
	// order they happened.
	reorderWindow = 10 * time.Millisecond
	// connEvery: a machine's bootstrapper connection state is written
	// (and its document published) at most this often. A connection that
	// comes and goes faster is coalesced: the state written is the one
	// at the end of the interval, and a flap within it writes nothing.
	connEvery = time.Second
)

var errClosed = errors.New("master is shutting down")

// state is the master's model: machines in memory, made durable by a
// committer goroutine that writes everything changed since its last
// commit in one transaction (group commit), then makes it visible to
// subscribers (views.go). Nothing is visible before it is durable.
type state struct {
	log *slog.Logger
	st  Store
	// tailBytes and tailTotal bound the in-memory tails, per machine and
	// all machines together (Options.TailBytes, TailTotalBytes).
	tailBytes, tailTotal int

	mu       sync.Mutex
	cond     *sync.Cond // committed advanced or closed
	machines map[store.Key]*machine
	pending  []pendingEntry
	tailN    int       // bytes in every machine's tail
	pendN    int       // bytes in pending (approximately)
	pendAt   time.Time // when the oldest pending entry arrived
	dirty    map[store.Key]bool
	gen      uint64 // the generation being filled; committed when committed >= gen
	commit   uint64 // last committed generation
	closed   bool
	kick     chan struct{}
	changed  chan struct{} // closed and replaced after each commit
	done     chan struct{} // the committer ended

	// commitSeconds, when set, observes each commit's duration.
	commitSeconds interface{ Observe(float64) }

	abandonOnce sync.Once
	abandon     chan struct{} // closed: the committer stops retrying (close's context ended)
}

// machine is one machine's live state.
type machine struct {
	doc masterapi.Machine // the latest, possibly not yet durable
	// What subscribers may see: committed.
	pub     *masterapi.Machine // snapshot as of the last commit
	pubRev  uint64
	rev     uint64 // bumped on every change of doc
	tail    []tailEntry
	tailN   int // bytes of data in tail
	bsConns int // open bootstrapper connections
	// bsEnded: a bootstrapper connection ended normally since one last
	// opened. When the last connection goes, it decides whether the
	// machine stopped, not how that last one ended: a connection a fault
	// left half-open may be reaped, with an error, after the normal end.
	bsEnded bool
	// connAt is when the document's connection state was last written;
	// connTimer, when set, writes it once connEvery has passed since.
	connAt    time.Time
	connTimer *time.Timer
}

// pendingEntry is an entry accepted and not yet numbered nor committed.
type pendingEntry struct {
	key store.Key
	e   masterapi.Entry
}

type tailEntry struct {
	seq  uint64
	data []byte
}

func newState(st Store, log *slog.Logger, tailBytes, tailTotal int) (*state, error) {
	docs, err := st.Machines()
	if err != nil {
		return nil, fmt.Errorf("load machines: %w", err)
	}
	s := &state{
		log: log, st: st, tailBytes: tailBytes, tailTotal: tailTotal,
		machines: map[store.Key]*machine{},
		dirty:    map[store.Key]bool{},
		gen:      1,
		kick:     make(chan struct{}, 1),
		changed:  make(chan struct{}),
		done:     make(chan struct{}),
		abandon:  make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	for k, b := range docs {
		m := &machine{}
		if err := json.Unmarshal(b, &m.doc); err != nil {
			return nil, fmt.Errorf("load machine %s/%s: %w", k.Runtime, k.Machine, err)
		}
		// Connections did not survive the restart; they are reconciled
		// as agents and bootstrappers reconnect.
		m.doc.Agent.Connected = false
		m.doc.Bootstrapper.Connected = false
		m.doc.Ports = nil // the agent's, reported again when it reconnects
		m.rev, m.pubRev = 1, 1
		m.pub = view(&m.doc, true)
		s.machines[k] = m
	}
	go s.committer()
	return s, nil
}

// close stops the committer after a last commit of what is pending, and
// releases whoever waits for a commit (errClosed). When ctx ends first
// (a store that keeps failing), the committer gives up: what it held was
// never acknowledged, so the bootstrappers re-send it to the next master.
func (s *state) close(ctx context.Context) error {
	s.mu.Lock()
	for k, m := range s.machines {
		if m.connTimer != nil { // a coalesced state goes into the last commit
			m.connTimer.Stop()
			m.connTimer = nil
			s.syncConn(k, m, false, time.Now())
		}
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.wake()
	if waitFor(ctx, s.done) {
		return nil
	}
	s.abandonOnce.Do(func() { close(s.abandon) })
	<-s.done // a Commit in progress ends; none starts after
	return fmt.Errorf("the last commit was abandoned: %w", context.Cause(ctx))
}

func (s *state) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// get returns k's machine, creating it; mu held.
func (s *state) get(k store.Key) *machine {
	m := s.machines[k]
	if m == nil {
		m = &machine{doc: masterapi.Machine{RuntimeID: k.Runtime, Name: k.Machine, Status: masterapi.MachineStarting}}
		s.machines[k] = m
	}
	return m
}

// touch records a change of m's document; mu held.
func (s *state) touch(k store.Key, m *machine, now time.Time) {
	m.rev++
	m.doc.Updated = now
	s.dirty[k] = true
	s.wake()
}

// append journals e for k (numbered at commit); mu held.
func (s *state) append(k store.Key, e *masterapi.Entry) {
	if len(s.pending) == 0 {
		s.pendAt = time.Now()
	}
	s.pending = append(s.pending, pendingEntry{k, *e})
	s.pendN += 200 + len(e.Text) + len(e.Error) + 2*len(e.Raw)
	s.dirty[k] = true
	s.wake()
}

// ingest applies one valid bootstrapper event of machine k received on
// endpoint path from host (reduce.go). It returns the generation that
// makes it durable, or dup when the event was accepted before (same boot,
// endpoint and seq or lower). It waits while too much waits for a commit.
func (s *state) ingest(k store.Key, path, host, method string, ev *che.Event) (gen uint64, dup bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.waitRoom(); err != nil {
		return 0, false, err
	}
	m := s.get(k)
	if seen(&m.doc, path, ev) {
		return s.lastGen(), true, nil
	}
	now := time.Now()
	e := apply(&m.doc, method, ev, host, now)
	if e.Type != masterapi.EntryLog {
		s.touch(k, m, now)
	}
	s.append(k, &e)
	return s.gen, false, nil
}

// refused journals, for machine k, a frame of size bytes refused for being
// above limit, as a lost log line at time at (zero: now). It returns the
// generation that makes the entry durable.
func (s *state) refused(k store.Key, at time.Time, size, limit int64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.waitRoom(); err != nil {
		return 0, err
	}
	s.get(k)
	if at.IsZero() {
		at = time.Now()
	}
	e := masterapi.Entry{Type: masterapi.EntryLog, Time: at, Stream: che.StreamStderr, Lost: 1, Text: che.RefusedText(size, limit)}
	s.append(k, &e)
	return s.gen, nil
}

// lastGen returns the generation that makes everything accepted so far
// durable; mu held. It is the one being filled while something waits in
// it, else the last one taken by the committer (committed, or being
// written): a generation with nothing in it would never be committed, and
// whoever waited for it (a ping after duplicates only) would wait forever.
func (s *state) lastGen() uint64 {
	if len(s.pending) > 0 || len(s.dirty) > 0 {
		return s.gen
	}
	return s.gen - 1
}

// bootstrapperConn records a bootstrapper connection of k opening or
// closing (normalEnd: with close code 1000). The document changes only
// when the machine's state does (connected or not, STOPPED), and at most
// once per connEvery: a flapping connection costs a counter, not a commit
// and a notification to every subscriber per flap.
func (s *state) bootstrapperConn(k store.Key, open, normalEnd bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.get(k)
	if open {
		m.bsConns++
		m.bsEnded = false
	} else {
		m.bsConns = max(0, m.bsConns-1)
		m.bsEnded = m.bsEnded || normalEnd
	}
	now := time.Now()
	if stop := !open && m.bsEnded; stop || now.Sub(m.connAt) >= connEvery {
		if m.connTimer != nil {
			m.connTimer.Stop()
			m.connTimer = nil
		}
		s.syncConn(k, m, stop, now)
		return
	}
	if m.connTimer == nil {
		m.connTimer = time.AfterFunc(m.connAt.Add(connEvery).Sub(now), func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if m.connTimer == nil || s.closed {
				return // stopped meanwhile
			}
			m.connTimer = nil
			s.syncConn(k, m, false, time.Now())
		})
	}
}

// syncConn writes m's bootstrapper connection state into its document
// when it changed (normalEnd: a connection closed with 1000 since one last
// opened, m.bsEnded); mu
// held.
func (s *state) syncConn(k store.Key, m *machine, normalEnd bool, now time.Time) {
	connected := m.bsConns > 0
	if connected == m.doc.Bootstrapper.Connected && !(normalEnd && !connected && m.doc.Status == masterapi.MachineRunning) {
		return
	}
	bootstrapperConn(&m.doc, connected, normalEnd, now)
	m.connAt = now
	s.touch(k, m, now)
}

// agentConn records k's agent connecting (a = its announcement) or
// disconnecting (a == nil), with a journal entry.
func (s *state) agentConn(k store.Key, a *masterapi.AgentState, address string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.get(k)
	now := time.Now()
	e := agentConn(&m.doc, a, address, now)
	s.touch(k, m, now)
	s.append(k, &e)
}

// agentPorts records the listening ports k's agent reports (ports.changed):
// the document changes, and subscribers hear of it, only when they do; no
// journal entry.
func (s *state) agentPorts(k store.Key, ports []protocol.ListeningPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.get(k)
	if !m.doc.Agent.Connected || !agentPorts(&m.doc, ports) {
		return
	}
	s.touch(k, m, time.Now())
}

// waitRoom blocks while too much waits for a commit; mu held.
func (s *state) waitRoom() error {
	for s.pendN > maxPendingBytes && !s.closed {
		s.wake()
		s.cond.Wait()
	}
	if s.closed {
		return errClosed
	}
	return nil
}

// waitCommitted blocks until generation gen is durable.
func (s *state) waitCommitted(gen uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commit < gen {
		s.wake()
	}
	for s.commit < gen && !s.closed {
		s.cond.Wait()
	}
	if s.commit < gen {
		return errClosed
	}
	return nil
}

// batch is one commit: the store's batch and what it publishes.
type batch struct {
	gen   uint64
	b     *store.Batch
	snaps map[store.Key]*masterapi.Machine // the documents committed, as machines see them
	revs  map[store.Key]uint64
}

// committer writes what changed, one transaction at a time, and publishes
// it once durable, until close.
func (s *state) committer() {
	defer close(s.done)
	for {
		b := s.next()
		if b == nil || !s.write(b) {
			return
		}
		s.publish(b)
	}
}

// next waits for something to commit and takes it, numbering the
// entries; nil when closed with nothing left.
func (s *state) next() *batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) == 0 && len(s.dirty) == 0 && !s.closed {
		s.mu.Unlock()
		<-s.kick
		s.mu.Lock()
	}
	if len(s.pending) == 0 && len(s.dirty) == 0 && s.closed {
		return nil
	}
	if age := time.Since(s.pendAt); len(s.pending) > 0 && age < reorderWindow && s.pendN < maxPendingBytes/2 && !s.closed {
		s.mu.Unlock()
		time.Sleep(reorderWindow - age)
		s.mu.Lock()
	}
	b := &batch{gen: s.gen, b: &store.Batch{Machines: make(map[store.Key][]byte, len(s.dirty)), Entries: s.number(s.pending)},
		snaps: make(map[store.Key]*masterapi.Machine, len(s.dirty)), revs: make(map[store.Key]uint64, len(s.dirty))}
	for k := range s.dirty {
		m := s.machines[k]
		doc, err := json.Marshal(&m.doc)
		if err != nil {
			panic(fmt.Sprintf("master: marshal machine: %v", err))
		}
		b.b.Machines[k] = doc
		b.snaps[k] = view(&m.doc, true)
		b.revs[k] = m.rev
	}
	s.gen++
	s.pending, s.pendN, s.dirty = nil, 0, map[store.Key]bool{}
	s.cond.Broadcast() // room again
	return b
}

// number orders each machine's pending entries by time (stable: arrival
// order among equal times), assigns their seq and renders them; mu held.
func (s *state) number(pending []pendingEntry) []store.KeyedEntry {
	byKey := map[store.Key][]int{}
	var keys []store.Key
	for i, p := range pending {
		if _, ok := byKey[p.key]; !ok {
			keys = append(keys, p.key)
		}
		byKey[p.key] = append(byKey[p.key], i)
	}
	out := make([]store.KeyedEntry, 0, len(pending))
	for _, k := range keys {
		idx := byKey[k]
		sort.SliceStable(idx, func(a, b int) bool { return pending[idx[a]].e.Time.Before(pending[idx[b]].e.Time) })
		m := s.machines[k]
		for _, i := range idx {
			e := &pending[i].e
			m.doc.Seq++
			e.Seq = m.doc.Seq
			b, err := json.Marshal(e)
			if err != nil { // Entry cannot fail to marshal
				panic(fmt.Sprintf("master: marshal entry: %v", err))
			}
			out = append(out, store.KeyedEntry{Key: k, Entry: store.Entry{Seq: e.Seq, Data: b}})
		}
	}
	return out
}

// write commits b. A failure is retried with backoff (the store may be
// full for a while); ingestion meanwhile waits (backpressure), and nothing
// is acknowledged, so bootstrappers keep their spools. It gives up,
// returning false, when close's context ends. A machine the store cannot
// hold (store.KeyError: the names are checked at every handshake, so only
// a store written by an older master has one) is dropped from the batch,
// logged, and the others are committed at once: one machine never
// blocks the others.
func (s *state) write(b *batch) bool {
	if s.commitSeconds != nil {
		defer func(began time.Time) { s.commitSeconds.Observe(time.Since(began).Seconds()) }(time.Now())
	}
	backoff := 10 * time.Millisecond
	for {
		err := s.st.Commit(b.b)
		if err == nil {
			return true
		}
		var ke *store.KeyError
		if errors.As(err, &ke) && b.drop(ke.Key) {
			s.log.Error("machine dropped from the commit: the store cannot hold it", "err", err)
			continue
		}
		s.log.Error("commit failed; retrying", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.abandon:
			t.Stop()
			s.log.Error("shutting down: the last commit is abandoned (nothing in it was acknowledged)", "err", err)
			return false
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// drop removes k's document and entries from b; false when b had none.
func (b *batch) drop(k store.Key) bool {
	_, found := b.b.Machines[k]
	delete(b.b.Machines, k)
	delete(b.snaps, k)
	delete(b.revs, k)
	kept := b.b.Entries[:0]
	for _, e := range b.b.Entries {
		if e.Key != k {
			kept = append(kept, e)
		}
	}
	found = found || len(kept) < len(b.b.Entries)
	clear(b.b.Entries[len(kept):])
	b.b.Entries = kept
	return found
}

// publish makes a committed batch visible: documents, tails, and the
// generation that waiters and subscribers wait for.
func (s *state) publish(b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, snap := range b.snaps {
		m := s.machines[k]
		m.pub, m.pubRev = snap, b.revs[k]
	}
	for _, e := range b.b.Entries {
		s.addTail(s.machines[e.Key], tailEntry{e.Seq, e.Data})
	}
	s.commit = b.gen
	close(s.changed)
	s.changed = make(chan struct{})
	s.cond.Broadcast()
}

// addTail appends e to m's in-memory tail within the bounds: at most
// tailEntries entries and Options.TailBytes bytes per machine (the oldest
// half of the entries is dropped, or more until e fits; an entry larger
// than the bound empties the tail, which must stay contiguous, and is
// read from the store), and Options.TailTotalBytes for every machine
// together (the largest tail loses its oldest half); mu held.
func (s *state) addTail(m *machine, e tailEntry) {
	size := len(e.data)
	if size > s.tailBytes {
		s.trimTail(m, len(m.tail))
		return
	}
	if len(m.tail) >= tailEntries || m.tailN+size > s.tailBytes {
		drop, rest := 0, m.tailN
		for ; drop < len(m.tail) && (drop < len(m.tail)/2 || rest+size > s.tailBytes); drop++ {
			rest -= len(m.tail[drop].data)
		}
		s.trimTail(m, drop)
	}
	m.tail = append(m.tail, e)
	m.tailN += size
	s.tailN += size
	for s.tailN > s.tailTotal {
		var big *machine
		for _, o := range s.machines {
			if big == nil || o.tailN > big.tailN {
				big = o
			}
		}
		s.trimTail(big, max(1, len(big.tail)/2))
	}
}

// trimTail drops m's n oldest tail entries; mu held.
func (s *state) trimTail(m *machine, n int) {
	for _, t := range m.tail[:n] {
		m.tailN -= len(t.data)
		s.tailN -= len(t.data)
	}
	k := copy(m.tail, m.tail[n:])
	clear(m.tail[k:]) // the dropped data is garbage now
	m.tail = m.tail[:k]
}

// entries calls fn with k's committed entries after seq after, in order,
// at most limit of them (0: no limit), from memory when it still has
// them, else from the store. fn's slice is valid only during the call.
func (s *state) entries(ctx context.Context, k store.Key, after uint64, limit int, fn func(seq uint64, data []byte) bool) error {
	s.mu.Lock()
	m := s.machines[k]
	if m == nil {
		s.mu.Unlock()
		return nil
	}
	var upto uint64
	if m.pub != nil {
		upto = m.pub.Seq
	}
	var fromTail []tailEntry
	if len(m.tail) > 0 && m.tail[0].seq <= after+1 {
		for _, t := range m.tail {
			if t.seq > after && t.seq <= upto {
				fromTail = append(fromTail, t)
				if limit > 0 && len(fromTail) >= limit {
					break
				}
			}
		}
		s.mu.Unlock()
		for _, t := range fromTail {
			if !fn(t.seq, t.data) {
				return nil
			}
		}
		return nil
	}
	s.mu.Unlock()
	n := 0
	return s.st.Scan(k, after+1, func(e store.Entry) bool {
		if e.Seq > upto || ctx.Err() != nil {
			return false
		}
		n++
		return fn(e.Seq, e.Data) && (limit <= 0 || n < limit)
	})
}
