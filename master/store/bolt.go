package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Layout of a store file (bbolt):
//
//	meta                     "schema" → schemaVersion, decimal ASCII
//	machines                 machineKey → machine document
//	journal / machineKey     8-byte big-endian seq → entry data
//
// machineKey is Runtime + "\x00" + Machine.
var (
	bucketMeta     = []byte("meta")
	bucketMachines = []byte("machines")
	bucketJournal  = []byte("journal")
	keySchema      = []byte("schema")
)

const (
	// schemaVersion is the layout version this package reads and writes.
	schemaVersion = 1

	// DefaultKeepEntries is the number of journal entries kept per machine
	// when Options.KeepEntries is 0.
	DefaultKeepEntries = 100_000

	// DefaultKeepBytes is the journal bytes (entry data) kept per machine
	// when Options.KeepBytes is 0.
	DefaultKeepBytes = 64 << 20

	// lockTimeout bounds the wait for the file lock in Open, so a second
	// master on the same file fails instead of hanging.
	lockTimeout = time.Second
)

// initialMmapSize is reserved address space (not disk) so the file rarely
// needs remapping; a remap makes Commit wait for running Scans.
var initialMmapSize = func() int {
	if bits.UintSize == 64 {
		return 1 << 30
	}
	return 0
}()

// Options configures Open. The zero value gives the defaults.
type Options struct {
	// KeepEntries is the number of journal entries kept per machine: Commit
	// drops a machine's oldest entries beyond it. 0 means
	// DefaultKeepEntries; negative is an error.
	KeepEntries int
	// KeepBytes bounds the bytes of entry data kept per machine: Commit
	// drops a machine's oldest entries until the rest fit (the newest
	// entry is always kept). 0 means DefaultKeepBytes; negative is an
	// error.
	KeepBytes int64
	// KeepAge, when positive, is how long entries are kept: Prune drops
	// every machine's entries older than that (Time says how old an entry
	// is). 0 keeps them whatever their age; negative is an error.
	KeepAge time.Duration
	// Time returns an entry's time from its data, for KeepAge; required
	// when KeepAge is set. An entry whose time it cannot tell (ok false)
	// is kept.
	Time func(data []byte) (t time.Time, ok bool)
}

// Bolt is the store in one bbolt file. It is safe for concurrent use.
// Size returns the store's size in bytes (the data in use, not the file's
// preallocated length).
func (b *Bolt) Size() (int64, error) {
	var n int64
	err := b.db.View(func(tx *bbolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n, err
}

type Bolt struct {
	db   *bbolt.DB
	path string
	o    Options

	// mu serializes Commit and Prune and protects counts.
	mu sync.Mutex
	// counts caches the number and bytes of journal entries per
	// machineKey, filled on a key's first Commit after Open and updated
	// only after a Commit succeeded.
	counts map[string]stats
}

// stats are one journal's size.
type stats struct {
	n     int
	bytes int64
}

// Open opens the store file at path, creating it (mode 0600) if it does not
// exist. The directory must exist. If another process (or another Bolt) holds
// the file, Open fails after about one second with an error saying the file
// is in use. A file written with another schema version is an error naming
// both versions.
//
// Durability: every Commit is fsync'd. The free-page list is not written
// (bbolt NoFreelistSync); Open rebuilds it by reading the file, which costs
// time proportional to the file's size.
func Open(path string, o Options) (*Bolt, error) {
	if o.KeepEntries < 0 {
		return nil, fmt.Errorf("store: open %s: Options.KeepEntries is %d, must be >= 0", path, o.KeepEntries)
	}
	if o.KeepBytes < 0 || o.KeepAge < 0 {
		return nil, fmt.Errorf("store: open %s: Options.KeepBytes (%d) and KeepAge (%v) must be >= 0", path, o.KeepBytes, o.KeepAge)
	}
	if o.KeepAge > 0 && o.Time == nil {
		return nil, fmt.Errorf("store: open %s: Options.KeepAge needs Options.Time", path)
	}
	if o.KeepEntries == 0 {
		o.KeepEntries = DefaultKeepEntries
	}
	if o.KeepBytes == 0 {
		o.KeepBytes = DefaultKeepBytes
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:         lockTimeout,
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: initialMmapSize,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store: %s is in use by another process (file lock not acquired within %v)", path, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return &Bolt{db: db, path: path, o: o, counts: make(map[string]stats)}, nil
}

// initSchema creates the buckets of a new file or checks an existing file's
// schema version.
func initSchema(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		var names []string
		tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			names = append(names, strconv.Quote(string(name)))
			return nil
		})
		if len(names) > 0 {
			return fmt.Errorf("not a porthole-master store: no %q bucket but buckets %v", bucketMeta, names)
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion))); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketMachines); err != nil {
			return err
		}
		_, err = tx.CreateBucket(bucketJournal)
		return err
	}
	v := meta.Get(keySchema)
	if string(v) != strconv.Itoa(schemaVersion) {
		return fmt.Errorf("schema version is %q, this build reads version %d", v, schemaVersion)
	}
	for _, name := range [][]byte{bucketMachines, bucketJournal} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("schema version %d but bucket %q is missing", schemaVersion, name)
		}
	}
	return nil
}

// Close closes the file, waiting for running Scans to end.
func (s *Bolt) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// Machines returns a copy of every machine document.
func (s *Bolt) Machines() (map[Key][]byte, error) {
	m := make(map[Key][]byte)
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMachines).ForEach(func(k, v []byte) error {
			key, err := parseKey(k)
			if err != nil {
				return err
			}
			m[key] = bytes.Clone(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: machines: %w", err)
	}
	return m, nil
}

// LastSeq returns the highest journal seq of k, 0 if k has no entries.
func (s *Bolt) LastSeq(k Key) (uint64, error) {
	mk, err := machineKey(k)
	if err != nil {
		return 0, fmt.Errorf("store: last seq: %w", err)
	}
	var last uint64
	err = s.db.View(func(tx *bbolt.Tx) error {
		last = lastSeq(tx.Bucket(bucketJournal).Bucket(mk))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: last seq of %s: %w", k.name(), err)
	}
	return last, nil
}

// Scan calls fn with k's entries of seq >= from in ascending order until fn
// returns false or the entries end. It runs in one read transaction: fn sees
// a consistent snapshot, Entry.Data points into the file's memory map (valid
// only during the call, read-only), and fn must not call Commit or Close.
// A Scan that stays open long makes Commit wait if the file must grow past
// its mapping (1 GiB on 64-bit).
func (s *Bolt) Scan(k Key, from uint64, fn func(Entry) bool) error {
	mk, err := machineKey(k)
	if err != nil {
		return fmt.Errorf("store: scan: %w", err)
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		j := tx.Bucket(bucketJournal).Bucket(mk)
		if j == nil {
			return nil
		}
		c := j.Cursor()
		for sk, v := c.Seek(seqKey(from)); sk != nil; sk, v = c.Next() {
			if len(sk) != 8 {
				return fmt.Errorf("journal key %x is not an 8-byte seq", sk)
			}
			if !fn(Entry{Seq: binary.BigEndian.Uint64(sk), Data: v}) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: scan %s from %d: %w", k.name(), from, err)
	}
	return nil
}

// Commit writes b in one transaction, fsync'd before it returns nil. It
// checks that, per key, entries' seqs are ascending and above the stored last
// seq; otherwise it returns an error naming the key and seqs and writes
// nothing. It then drops each touched machine's oldest entries beyond
// Options.KeepEntries and Options.KeepBytes in the same transaction. An
// empty batch is a no-op.
func (s *Bolt) Commit(b *Batch) error {
	if b == nil || len(b.Machines) == 0 && len(b.Entries) == 0 {
		return nil
	}
	groups, err := groupEntries(b.Entries)
	if err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	docs := make([]doc, 0, len(b.Machines))
	for k, v := range b.Machines {
		mk, err := machineKey(k)
		if err != nil {
			return fmt.Errorf("store: commit: %w", err)
		}
		docs = append(docs, doc{mk, v})
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	counts := make(map[string]stats, len(groups))
	err = s.db.Update(func(tx *bbolt.Tx) error {
		machines := tx.Bucket(bucketMachines)
		for _, d := range docs {
			if err := machines.Put(d.mk, d.v); err != nil {
				return fmt.Errorf("put machine %s: %w", keyName(d.mk), err)
			}
		}
		journal := tx.Bucket(bucketJournal)
		for _, g := range groups {
			n, err := s.append(journal, g)
			if err != nil {
				return err
			}
			counts[string(g.mk)] = n
		}
		return nil
	})
	if err != nil {
		// A failed fsync may leave the file ahead of what bbolt believes;
		// recount everything from the file.
		clear(s.counts)
		return fmt.Errorf("store: commit to %s: %w", s.path, err)
	}
	for mk, n := range counts {
		s.counts[mk] = n
	}
	return nil
}

// append writes g to the journal in the current transaction, applies
// retention, and returns the key's journal size afterwards.
func (s *Bolt) append(journal *bbolt.Bucket, g *group) (stats, error) {
	j, err := journal.CreateBucketIfNotExists(g.mk)
	if err != nil {
		return stats{}, fmt.Errorf("journal of %s: %w", keyName(g.mk), err)
	}
	j.FillPercent = 1.0 // append-only: full pages
	if last := lastSeq(j); g.entries[0].Seq <= last {
		return stats{}, fmt.Errorf("journal of %s: seq %d is not above the stored last seq %d", keyName(g.mk), g.entries[0].Seq, last)
	}
	st, ok := s.counts[string(g.mk)]
	if !ok {
		st = count(j)
	}
	// bbolt keeps key slices until the transaction ends: one per entry.
	keys := make([]byte, 8*len(g.entries))
	for i, e := range g.entries {
		k := keys[8*i : 8*i+8 : 8*i+8]
		binary.BigEndian.PutUint64(k, e.Seq)
		if err := j.Put(k, e.Data); err != nil {
			return stats{}, fmt.Errorf("journal of %s: put seq %d: %w", keyName(g.mk), e.Seq, err)
		}
		st.n++
		st.bytes += int64(len(e.Data))
	}
	return s.retain(j, g.mk, st, time.Time{})
}

// retain drops j's oldest entries while there are more than KeepEntries,
// more bytes than KeepBytes (the newest entry stays), or, when cutoff is
// set, entries older than cutoff; st is j's size before, the result its
// size after.
func (s *Bolt) retain(j *bbolt.Bucket, mk []byte, st stats, cutoff time.Time) (stats, error) {
	c := j.Cursor()
	for st.n > 0 {
		k, v := c.First()
		if k == nil {
			return stats{}, fmt.Errorf("journal of %s: %d entries counted but the bucket is empty", keyName(mk), st.n)
		}
		switch {
		case st.n > s.o.KeepEntries, st.n > 1 && st.bytes > s.o.KeepBytes:
		case !cutoff.IsZero():
			if t, ok := s.o.Time(v); !ok || !t.Before(cutoff) {
				return st, nil
			}
		default:
			return st, nil
		}
		st.n--
		st.bytes -= int64(len(v))
		if err := c.Delete(); err != nil {
			return stats{}, fmt.Errorf("journal of %s: retention: %w", keyName(mk), err)
		}
	}
	return st, nil
}

// Prune applies the retention to every machine's journal, KeepAge
// included (Commit applies the others to the machines it writes): entries
// older than now minus KeepAge are dropped. The master calls it
// periodically. It returns the number of entries dropped.
func (s *Bolt) Prune(now time.Time) (int, error) {
	var cutoff time.Time
	if s.o.KeepAge > 0 {
		cutoff = now.Add(-s.o.KeepAge)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dropped := 0
	counts := map[string]stats{}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		journal := tx.Bucket(bucketJournal)
		var keys [][]byte
		journal.ForEachBucket(func(mk []byte) error {
			keys = append(keys, bytes.Clone(mk))
			return nil
		})
		for _, mk := range keys {
			j := journal.Bucket(mk)
			st, ok := s.counts[string(mk)]
			if !ok {
				st = count(j)
			}
			after, err := s.retain(j, mk, st, cutoff)
			if err != nil {
				return err
			}
			dropped += st.n - after.n
			counts[string(mk)] = after
		}
		return nil
	})
	if err != nil {
		clear(s.counts)
		return 0, fmt.Errorf("store: prune %s: %w", s.path, err)
	}
	for mk, st := range counts {
		s.counts[mk] = st
	}
	return dropped, nil
}

type doc struct{ mk, v []byte }

// group is the entries of one key in a batch, in batch order.
type group struct {
	mk      []byte
	entries []Entry
}

// groupEntries splits es by key, keeping each key's order, and checks that
// each key's seqs are ascending and above 0.
func groupEntries(es []KeyedEntry) ([]*group, error) {
	var groups []*group
	byKey := make(map[Key]*group)
	for _, e := range es {
		g := byKey[e.Key]
		if g == nil {
			mk, err := machineKey(e.Key)
			if err != nil {
				return nil, err
			}
			g = &group{mk: mk}
			byKey[e.Key] = g
			groups = append(groups, g)
		}
		if len(g.entries) == 0 {
			if e.Seq == 0 {
				return nil, fmt.Errorf("journal of %s: seq 0 (seqs start at 1)", e.Key.name())
			}
		} else if prev := g.entries[len(g.entries)-1].Seq; e.Seq <= prev {
			return nil, fmt.Errorf("journal of %s: seq %d follows seq %d in the batch (must ascend)", e.Key.name(), e.Seq, prev)
		}
		g.entries = append(g.entries, e.Entry)
	}
	return groups, nil
}

// MaxKeyBytes bounds Runtime and Machine of a Key together (bbolt's
// key limit).
const MaxKeyBytes = bbolt.MaxKeySize - 1

// KeyError is the error of a Commit (or Scan, LastSeq) given a Key that
// cannot be stored: with a NUL byte, or longer than MaxKeyBytes. Nothing
// of that Commit was written; the caller may commit the rest without it.
type KeyError struct {
	Key    Key
	Reason string
}

func (e *KeyError) Error() string {
	name := e.Key.name()
	if len(name) > 200 {
		name = name[:200] + "…"
	}
	return "key " + name + " " + e.Reason
}

// machineKey encodes k as stored: Runtime + "\x00" + Machine.
func machineKey(k Key) ([]byte, error) {
	if bytes.IndexByte([]byte(k.Runtime), 0) >= 0 || bytes.IndexByte([]byte(k.Machine), 0) >= 0 {
		return nil, &KeyError{k, "contains a NUL byte"}
	}
	if n := len(k.Runtime) + len(k.Machine); n > MaxKeyBytes {
		return nil, &KeyError{k, fmt.Sprintf("is %d bytes long, more than %d", n, MaxKeyBytes)}
	}
	mk := make([]byte, 0, len(k.Runtime)+1+len(k.Machine))
	mk = append(mk, k.Runtime...)
	mk = append(mk, 0)
	return append(mk, k.Machine...), nil
}

func parseKey(mk []byte) (Key, error) {
	r, m, ok := bytes.Cut(mk, []byte{0})
	if !ok {
		return Key{}, fmt.Errorf("machine key %q has no NUL separator", mk)
	}
	return Key{Runtime: string(r), Machine: string(m)}, nil
}

// name formats k for errors.
func (k Key) name() string { return strconv.Quote(k.Runtime) + "/" + strconv.Quote(k.Machine) }

func keyName(mk []byte) string {
	k, err := parseKey(mk)
	if err != nil {
		return strconv.Quote(string(mk))
	}
	return k.name()
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// lastSeq returns the highest seq in j, 0 if j is nil or empty.
func lastSeq(j *bbolt.Bucket) uint64 {
	if j == nil {
		return 0
	}
	k, _ := j.Cursor().Last()
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}

// count returns the number and bytes of entries in j, walking it.
func count(j *bbolt.Bucket) stats {
	var st stats
	c := j.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		st.n++
		st.bytes += int64(len(v))
	}
	return st
}
