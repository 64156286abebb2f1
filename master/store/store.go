// Package store persists porthole-master's state: one JSON document per
// machine and, per machine, an append-only journal of entries numbered by a
// sequence the master assigns.
//
// Store is the interface the master uses; Bolt, from Open, implements it on a
// single bbolt file. The store does not interpret documents or entry data:
// both are opaque bytes (JSON owned by the master).
package store

// Key names one machine: the runtime id ("workspace:env:owner") and the
// machine name within it. Neither may contain a NUL byte.
type Key struct{ Runtime, Machine string }

// Entry is one journal entry of a machine.
type Entry struct {
	Seq  uint64 // per machine, ascending, starting above 0
	Data []byte // JSON owned by the master
}

// KeyedEntry is an Entry of the machine Key.
type KeyedEntry struct {
	Key Key
	Entry
}

// Batch is what one Commit writes, all or nothing.
type Batch struct {
	// Machines are machine documents to put: whole JSON documents, each
	// replacing the stored one.
	Machines map[Key][]byte
	// Entries are journal entries to append. Per key, Seq must be ascending
	// and above the key's LastSeq; keys may be interleaved.
	Entries []KeyedEntry
}

// Store is the master's persistence. Implementations are safe for concurrent
// use.
type Store interface {
	// Machines returns every machine document.
	Machines() (map[Key][]byte, error)
	// LastSeq returns the highest journal seq of k, 0 if k has no entries.
	LastSeq(k Key) (uint64, error)
	// Commit writes b atomically; when it returns nil, b is durable
	// (fsync'd). On error nothing of b is written.
	Commit(b *Batch) error
	// Scan calls fn with k's entries of seq >= from in ascending order until
	// fn returns false or the entries end. Entry.Data is valid only during
	// the call and must not be modified: copy it to keep it.
	Scan(k Key, from uint64, fn func(Entry) bool) error
	// Close releases the store. No other method may be called after it.
	Close() error
}
