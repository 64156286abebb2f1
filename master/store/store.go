// Package store persists porthole-master's state: one JSON document per
// machine and, per machine, an append-only journal of entries numbered by a
// sequence the master assigns.
//
// Bolt, from Open, keeps them in a single bbolt file; the master uses it
// through the interface it declares (master.Store), so that another store
// can take its place. The store does not interpret documents or entry data:
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
	// and above the key's last seq (Bolt.LastSeq); keys may be interleaved.
	Entries []KeyedEntry
}
