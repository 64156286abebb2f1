package store

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkCommit commits batches of log-line-sized entries (200 bytes) spread
// round-robin over 10 machines, one fsync'd Commit per op, with the default
// retention. It reports entries/s; the master must ingest 100,000 log
// lines/s.
func BenchmarkCommit(b *testing.B) {
	const machines = 10
	line := bytes.Repeat([]byte("x"), 200)
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "master.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			keys := make([]Key, machines)
			for i := range keys {
				keys[i] = Key{Runtime: "ws:env:owner", Machine: fmt.Sprintf("machine-%d", i)}
			}
			next := make([]uint64, machines)
			es := make([]KeyedEntry, size)
			batch := &Batch{Entries: es}
			i := 0
			for b.Loop() {
				for j := range es {
					m := i % machines
					i++
					next[m]++
					es[j] = KeyedEntry{Key: keys[m], Entry: Entry{Seq: next[m], Data: line}}
				}
				if err := s.Commit(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
