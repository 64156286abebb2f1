package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// sized returns entries of k with seqs from..to, each of n bytes of data
// whose first 8 bytes are the seq.
func sized(k Key, from, to uint64, n int) []KeyedEntry {
	var es []KeyedEntry
	for seq := from; seq <= to; seq++ {
		d := fmt.Appendf(nil, "%08d", seq)
		d = append(d, strings.Repeat("x", n-len(d))...)
		es = append(es, KeyedEntry{Key: k, Entry: Entry{Seq: seq, Data: d}})
	}
	return es
}

// Retention by bytes: a machine pushing long lines keeps at most
// KeepBytes of them on disk (the newest always), the others untouched;
// the bytes are counted again after reopening.
func TestRetentionByBytes(t *testing.T) {
	s, path := openTest(t, Options{KeepBytes: 10_000})
	mustCommit(t, s, &Batch{Entries: sized(keyB, 1, 1, 100)})
	mustCommit(t, s, &Batch{Entries: sized(keyA, 1, 8, 3000)}) // 24,000 bytes: 3 fit
	if got := scanSeqsRaw(t, s, keyA); !slices.Equal(got, seqRange(6, 8)) {
		t.Errorf("keyA seqs = %v; want 6..8 (3 × 3000 bytes fit in 10,000)", got)
	}
	mustCommit(t, s, &Batch{Entries: sized(keyA, 9, 9, 50_000)})
	if got := scanSeqsRaw(t, s, keyA); !slices.Equal(got, []uint64{9}) {
		t.Errorf("keyA seqs = %v; want [9] (an entry over the bound is kept alone)", got)
	}
	if got := scanSeqsRaw(t, s, keyB); !slices.Equal(got, []uint64{1}) {
		t.Errorf("keyB seqs = %v; want [1]", got)
	}
	s.Close()
	s = reopen(t, path, Options{KeepBytes: 10_000})
	mustCommit(t, s, &Batch{Entries: sized(keyA, 10, 11, 4000)})
	if got := scanSeqsRaw(t, s, keyA); !slices.Equal(got, seqRange(10, 11)) {
		t.Errorf("after reopen, keyA seqs = %v; want 10..11", got)
	}
}

// scanSeqsRaw returns k's seqs without checking data.
func scanSeqsRaw(t *testing.T, s *Bolt, k Key) []uint64 {
	t.Helper()
	var got []uint64
	if err := s.Scan(k, 0, func(e Entry) bool { got = append(got, e.Seq); return true }); err != nil {
		t.Fatal(err)
	}
	return got
}

// Retention by age: Prune drops every machine's entries older than
// KeepAge, machines that commit nothing any more included, and applies a
// lowered KeepBytes to them too.
func TestPruneByAge(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// The test's entries carry their time as seq hours after base.
	timeOf := func(d []byte) (time.Time, bool) {
		var seq int
		if _, err := fmt.Sscanf(string(d[:8]), "%08d", &seq); err != nil {
			return time.Time{}, false
		}
		return base.Add(time.Duration(seq) * time.Hour), true
	}
	if _, err := Open(t.TempDir()+"/x.db", Options{KeepAge: time.Hour}); err == nil {
		t.Error("Open with KeepAge and no Time: no error")
	}
	s, path := openTest(t, Options{KeepAge: 10 * time.Hour, Time: timeOf})
	mustCommit(t, s, &Batch{Entries: append(sized(keyA, 1, 20, 100), sized(keyB, 1, 5, 100)...)})
	n, err := s.Prune(base.Add(25 * time.Hour)) // cutoff: hour 15
	if err != nil {
		t.Fatal(err)
	}
	if got := scanSeqsRaw(t, s, keyA); !slices.Equal(got, seqRange(15, 20)) {
		t.Errorf("keyA seqs = %v; want 15..20", got)
	}
	if got := scanSeqsRaw(t, s, keyB); len(got) != 0 {
		t.Errorf("keyB seqs = %v; want none (all older than 10 h)", got)
	}
	if n != 14+5 {
		t.Errorf("Prune dropped %d; want 19", n)
	}
	s.Close()
	s = reopen(t, path, Options{KeepBytes: 250})
	if _, err := s.Prune(base); err != nil {
		t.Fatal(err)
	}
	if got := scanSeqsRaw(t, s, keyA); !slices.Equal(got, seqRange(19, 20)) {
		t.Errorf("after lowering KeepBytes, keyA seqs = %v; want 19..20", got)
	}
}

// A key the store cannot hold (bbolt's key limit) is a *KeyError naming
// it, before anything is written.
func TestCommitKeyTooLong(t *testing.T) {
	s, _ := openTest(t, Options{})
	long := Key{Runtime: "w:e:o", Machine: strings.Repeat("m", MaxKeyBytes)}
	err := s.Commit(&Batch{Entries: append(entries(keyA, 1, 1), entries(long, 1, 1)...)})
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != long {
		t.Fatalf("Commit = %v; want a *KeyError for the long key", err)
	}
	if len(err.Error()) > 400 {
		t.Errorf("error of %d bytes: the key should be shortened", len(err.Error()))
	}
	if got := scanSeqsRaw(t, s, keyA); len(got) != 0 {
		t.Errorf("keyA seqs = %v; want none (nothing written)", got)
	}
	err = s.Commit(&Batch{Machines: map[Key][]byte{{Runtime: "a\x00", Machine: "m"}: []byte("{}")}})
	if !errors.As(err, &ke) {
		t.Errorf("Commit with a NUL key = %v; want a *KeyError", err)
	}
}
