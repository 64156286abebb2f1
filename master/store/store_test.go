package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // exits
	}
	goleak.VerifyTestMain(m)
}

var (
	keyA = Key{Runtime: "ws1:env:owner", Machine: "dev"}
	keyB = Key{Runtime: "ws1:env:owner", Machine: "db"}
	keyC = Key{Runtime: "ws2:env:owner", Machine: "dev"}
)

// openTest opens a store in a new temp dir, closed at the end of the test.
func openTest(t *testing.T, o Options) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "master.db")
	return reopen(t, path, o), path
}

// reopen opens path, closed at the end of the test unless closed before.
func reopen(t *testing.T, path string, o Options) *Bolt {
	t.Helper()
	s, err := Open(path, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// data is the test payload of seq under k.
func data(k Key, seq uint64) []byte {
	return fmt.Appendf(nil, `{"machine":%q,"seq":%d}`, k.Machine, seq)
}

// entries returns entries of k with seqs from..to and data(k, seq).
func entries(k Key, from, to uint64) []KeyedEntry {
	var es []KeyedEntry
	for seq := from; seq <= to; seq++ {
		es = append(es, KeyedEntry{Key: k, Entry: Entry{Seq: seq, Data: data(k, seq)}})
	}
	return es
}

// scanSeqs returns the seqs of k from from, checking each entry's data.
func scanSeqs(t *testing.T, s *Bolt, k Key, from uint64) []uint64 {
	t.Helper()
	var seqs []uint64
	err := s.Scan(k, from, func(e Entry) bool {
		if want := data(k, e.Seq); !bytes.Equal(e.Data, want) {
			t.Errorf("Scan %v seq %d: data %q; want %q", k, e.Seq, e.Data, want)
		}
		seqs = append(seqs, e.Seq)
		return true
	})
	if err != nil {
		t.Fatalf("Scan %v from %d: %v", k, from, err)
	}
	return seqs
}

func seqRange(from, to uint64) []uint64 {
	var seqs []uint64
	for seq := from; seq <= to; seq++ {
		seqs = append(seqs, seq)
	}
	return seqs
}

func mustCommit(t *testing.T, s *Bolt, b *Batch) {
	t.Helper()
	if err := s.Commit(b); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func checkLastSeq(t *testing.T, s *Bolt, k Key, want uint64) {
	t.Helper()
	got, err := s.LastSeq(k)
	if err != nil {
		t.Fatalf("LastSeq %v: %v", k, err)
	}
	if got != want {
		t.Errorf("LastSeq %v = %d; want %d", k, got, want)
	}
}

func checkMachines(t *testing.T, s *Bolt, want map[Key][]byte) {
	t.Helper()
	got, err := s.Machines()
	if err != nil {
		t.Fatalf("Machines: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("Machines = %d documents; want %d", len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(g, w) {
			t.Errorf("Machines[%v] = %q (present %v); want %q", k, g, ok, w)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	s, _ := openTest(t, Options{})

	docs := map[Key][]byte{keyA: []byte(`{"name":"dev"}`), keyB: []byte(`{"name":"db"}`)}
	var es []KeyedEntry
	for seq := uint64(1); seq <= 10; seq++ { // interleaved keys
		es = append(es, entries(keyA, seq, seq)...)
		es = append(es, entries(keyB, 2*seq, 2*seq)...)
	}
	mustCommit(t, s, &Batch{Machines: docs, Entries: es})
	mustCommit(t, s, &Batch{Machines: map[Key][]byte{keyA: []byte(`{"name":"dev","v":2}`)}})
	docs[keyA] = []byte(`{"name":"dev","v":2}`)
	mustCommit(t, s, &Batch{}) // empty: no-op
	mustCommit(t, s, nil)

	checkMachines(t, s, docs)
	checkLastSeq(t, s, keyA, 10)
	checkLastSeq(t, s, keyB, 20)
	checkLastSeq(t, s, keyC, 0)

	tests := []struct {
		name string
		key  Key
		from uint64
		stop int // fn returns false after this many entries; 0: never
		want []uint64
	}{
		{"all", keyA, 0, 0, seqRange(1, 10)},
		{"from first", keyA, 1, 0, seqRange(1, 10)},
		{"from middle", keyA, 7, 0, seqRange(7, 10)},
		{"from last", keyA, 10, 0, []uint64{10}},
		{"beyond last", keyA, 11, 0, nil},
		{"stop early", keyA, 3, 2, []uint64{3, 4}},
		{"gaps, from between", keyB, 5, 0, []uint64{6, 8, 10, 12, 14, 16, 18, 20}},
		{"unknown key", keyC, 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			err := s.Scan(tt.key, tt.from, func(e Entry) bool {
				if want := data(tt.key, e.Seq); !bytes.Equal(e.Data, want) {
					t.Errorf("seq %d: data %q; want %q", e.Seq, e.Data, want)
				}
				got = append(got, e.Seq)
				return tt.stop == 0 || len(got) < tt.stop
			})
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Scan(%v, %d) seqs = %v; want %v", tt.key, tt.from, got, tt.want)
			}
		})
	}
}

func TestCommitInvalidWritesNothing(t *testing.T) {
	tests := []struct {
		name    string
		entries []KeyedEntry
		wantErr []string // substrings of the error
	}{
		{"seq equal to stored last", entries(keyA, 3, 4),
			[]string{`"ws1:env:owner"/"dev"`, "seq 3", "last seq 3"}},
		{"seq below stored last", entries(keyA, 2, 2),
			[]string{`"ws1:env:owner"/"dev"`, "seq 2", "last seq 3"}},
		{"repeated seq in batch", append(entries(keyA, 4, 5), entries(keyA, 5, 5)...),
			[]string{`"ws1:env:owner"/"dev"`, "seq 5 follows seq 5"}},
		{"descending in batch", append(entries(keyC, 6, 6), entries(keyC, 5, 5)...),
			[]string{`"ws2:env:owner"/"dev"`, "seq 5 follows seq 6"}},
		{"seq 0", entries(keyC, 0, 1),
			[]string{`"ws2:env:owner"/"dev"`, "seq 0"}},
		{"NUL in key", []KeyedEntry{{Key: Key{"a\x00b", "m"}, Entry: Entry{Seq: 1}}},
			[]string{`"a\x00b"/"m"`, "NUL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTest(t, Options{})
			docs := map[Key][]byte{keyA: []byte(`{"v":1}`)}
			mustCommit(t, s, &Batch{Machines: docs, Entries: entries(keyA, 1, 3)})

			// Valid parts (a new document, entries of keyB) come first.
			es := append(entries(keyB, 1, 5), tt.entries...)
			err := s.Commit(&Batch{
				Machines: map[Key][]byte{keyA: []byte(`{"v":2}`), keyB: []byte(`{}`)},
				Entries:  es,
			})
			if err == nil {
				t.Fatal("Commit: nil error; want one")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Commit error %q does not contain %q", err, w)
				}
			}
			checkMachines(t, s, docs)
			checkLastSeq(t, s, keyA, 3)
			checkLastSeq(t, s, keyB, 0)
			checkLastSeq(t, s, keyC, 0)
			if got := scanSeqs(t, s, keyA, 0); !slices.Equal(got, seqRange(1, 3)) {
				t.Errorf("keyA seqs = %v; want 1..3", got)
			}

			// The store still takes valid commits after the failed one.
			mustCommit(t, s, &Batch{Entries: entries(keyA, 4, 4)})
			checkLastSeq(t, s, keyA, 4)
		})
	}
}

func TestRetention(t *testing.T) {
	tests := []struct {
		name    string
		keep    int
		batches [][2]uint64 // seq ranges of keyA, one commit each
		want    []uint64
	}{
		{"under limit", 5, [][2]uint64{{1, 3}}, seqRange(1, 3)},
		{"at limit", 5, [][2]uint64{{1, 5}}, seqRange(1, 5)},
		{"one over", 5, [][2]uint64{{1, 3}, {4, 6}}, seqRange(2, 6)},
		{"one batch far over", 5, [][2]uint64{{1, 12}}, seqRange(8, 12)},
		{"many batches", 5, [][2]uint64{{1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 9}}, seqRange(5, 9)},
		{"gaps in seqs", 3, [][2]uint64{{1, 2}, {10, 11}, {20, 21}}, []uint64{11, 20, 21}},
		{"keep one", 1, [][2]uint64{{1, 4}, {5, 5}}, []uint64{5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path := openTest(t, Options{KeepEntries: tt.keep})
			mustCommit(t, s, &Batch{Entries: entries(keyB, 1, 1)})
			for _, r := range tt.batches {
				mustCommit(t, s, &Batch{Entries: entries(keyA, r[0], r[1])})
			}
			if got := scanSeqs(t, s, keyA, 0); !slices.Equal(got, tt.want) {
				t.Errorf("keyA seqs = %v; want %v", got, tt.want)
			}
			if got := scanSeqs(t, s, keyB, 0); !slices.Equal(got, []uint64{1}) {
				t.Errorf("keyB seqs = %v; want [1] (other machines are untouched)", got)
			}

			// After reopening, counts come from the file.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = reopen(t, path, Options{KeepEntries: tt.keep})
			next := tt.want[len(tt.want)-1] + 1
			mustCommit(t, s, &Batch{Entries: entries(keyA, next, next)})
			want := append(slices.Clone(tt.want), next)
			if len(want) > tt.keep {
				want = want[len(want)-tt.keep:]
			}
			if got := scanSeqs(t, s, keyA, 0); !slices.Equal(got, want) {
				t.Errorf("after reopen, keyA seqs = %v; want %v", got, want)
			}
		})
	}
}

func TestRetentionLoweredOnReopen(t *testing.T) {
	s, path := openTest(t, Options{KeepEntries: 10})
	mustCommit(t, s, &Batch{Entries: entries(keyA, 1, 10)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, path, Options{KeepEntries: 4})
	if got := scanSeqs(t, s, keyA, 0); !slices.Equal(got, seqRange(1, 10)) {
		t.Errorf("before a commit, seqs = %v; want 1..10 (retention applies on Commit)", got)
	}
	mustCommit(t, s, &Batch{Entries: entries(keyA, 11, 11)})
	if got := scanSeqs(t, s, keyA, 0); !slices.Equal(got, seqRange(8, 11)) {
		t.Errorf("seqs = %v; want 8..11", got)
	}
}

func TestReopen(t *testing.T) {
	s, path := openTest(t, Options{})
	docs := map[Key][]byte{keyA: []byte(`{"a":1}`), keyC: []byte(`{"c":1}`)}
	mustCommit(t, s, &Batch{Machines: docs, Entries: append(entries(keyA, 1, 100), entries(keyC, 1, 7)...)})
	mustCommit(t, s, &Batch{Entries: entries(keyA, 101, 150)})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = reopen(t, path, Options{})
	checkMachines(t, s, docs)
	checkLastSeq(t, s, keyA, 150)
	checkLastSeq(t, s, keyC, 7)
	if got := scanSeqs(t, s, keyA, 0); !slices.Equal(got, seqRange(1, 150)) {
		t.Errorf("keyA seqs = %v; want 1..150", got)
	}
	if got := scanSeqs(t, s, keyC, 0); !slices.Equal(got, seqRange(1, 7)) {
		t.Errorf("keyC seqs = %v; want 1..7", got)
	}
	mustCommit(t, s, &Batch{Entries: entries(keyA, 151, 151)})
	checkLastSeq(t, s, keyA, 151)
}

func TestOpenRejects(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string) // writes the file
		opts    Options
		wantErr []string
	}{
		{
			name: "other schema version",
			prepare: func(t *testing.T, path string) {
				s := reopen(t, path, Options{})
				s.Close()
				writeBolt(t, path, func(tx *bbolt.Tx) error {
					return tx.Bucket(bucketMeta).Put(keySchema, []byte("2"))
				})
			},
			wantErr: []string{"master.db", `schema version is "2"`, "reads version 1"},
		},
		{
			name: "bbolt file of something else",
			prepare: func(t *testing.T, path string) {
				writeBolt(t, path, func(tx *bbolt.Tx) error {
					_, err := tx.CreateBucket([]byte("other"))
					return err
				})
			},
			wantErr: []string{"master.db", "not a porthole-master store", `"other"`},
		},
		{
			name: "not a bbolt file",
			prepare: func(t *testing.T, path string) {
				if err := os.WriteFile(path, bytes.Repeat([]byte("not a database\n"), 1000), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"master.db", "invalid"},
		},
		{
			name:    "negative KeepEntries",
			prepare: func(*testing.T, string) {},
			opts:    Options{KeepEntries: -1},
			wantErr: []string{"master.db", "KeepEntries is -1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.db")
			tt.prepare(t, path)
			s, err := Open(path, tt.opts)
			if err == nil {
				s.Close()
				t.Fatal("Open: nil error; want one")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// writeBolt runs fn in a write transaction on the bbolt file at path.
func writeBolt(t *testing.T, path string, fn func(*bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestOpenInUse(t *testing.T) {
	s, path := openTest(t, Options{})
	start := time.Now()
	s2, err := Open(path, Options{})
	elapsed := time.Since(start)
	if err == nil {
		s2.Close()
		t.Fatal("second Open: nil error; want in use")
	}
	if want := path + " is in use by another process"; !strings.Contains(err.Error(), want) {
		t.Errorf("second Open error %q does not contain %q", err, want)
	}
	if elapsed > lockTimeout+2*time.Second {
		t.Errorf("second Open took %v; want about %v", elapsed, lockTimeout)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopen(t, path, Options{}) // the lock is released by Close
}
