package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// crashChildEnv, set to a directory, makes the test binary run crashChild
// instead of the tests.
const crashChildEnv = "PORTHOLE_STORE_CRASH_CHILD"

const (
	crashKeep     = 1000 // KeepEntries in the crash test: retention runs too
	crashChildMax = 60 * time.Second
)

var crashKeys = []Key{keyA, keyB, keyC}

// crashData is the payload of seq under k: about 200 bytes, derived from both.
func crashData(k Key, seq uint64) []byte {
	b := fmt.Appendf(nil, "%s/%s seq=%d ", k.Runtime, k.Machine, seq)
	for x := seq * 0x9E3779B97F4A7C15; len(b) < 200; x = x*6364136223846793005 + 1442695040888963407 {
		b = strconv.AppendUint(b, x, 36)
	}
	return b[:200]
}

// crashDoc is the machine document committed with entries up to seq.
type crashDoc struct{ Last uint64 }

// crashChild commits random batches to the store in dir forever, continuing
// after the stored last seqs, and after each Commit returns writes one line
// "keyIndex seq" per committed entry to stdout in a single write. It exits
// when stdout breaks or after crashChildMax.
func crashChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := Open(filepath.Join(dir, "master.db"), Options{KeepEntries: crashKeep})
	if err != nil {
		fail(err)
	}
	next := make([]uint64, len(crashKeys))
	for i, k := range crashKeys {
		last, err := s.LastSeq(k)
		if err != nil {
			fail(err)
		}
		next[i] = last + 1
	}
	deadline := time.Now().Add(crashChildMax)
	var out []byte
	for time.Now().Before(deadline) {
		b := &Batch{Machines: make(map[Key][]byte)}
		out = out[:0]
		// Per key, up to 149 entries in order; keys interleaved at random.
		left := make([]int, len(crashKeys))
		total := 0
		for i, k := range crashKeys {
			left[i] = rand.IntN(150)
			total += left[i]
			if left[i] > 0 {
				doc, _ := json.Marshal(crashDoc{Last: next[i] + uint64(left[i]) - 1})
				b.Machines[k] = doc
			}
		}
		for ; total > 0; total-- {
			i := rand.IntN(len(crashKeys))
			for left[i] == 0 {
				i = (i + 1) % len(crashKeys)
			}
			left[i]--
			k := crashKeys[i]
			b.Entries = append(b.Entries, KeyedEntry{Key: k, Entry: Entry{Seq: next[i], Data: crashData(k, next[i])}})
			out = fmt.Appendf(out, "%d %d\n", i, next[i])
			next[i]++
		}
		if err := s.Commit(b); err != nil {
			fail(err)
		}
		if _, err := os.Stdout.Write(out); err != nil {
			os.Exit(0) // the parent is gone
		}
	}
	os.Exit(3)
}

// TestCrash SIGKILLs a process in the middle of committing, several times,
// and checks after each that every entry it reported committed is stored,
// intact and without holes, with the machine documents of the same commits.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-execs the test binary; skipped in -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	reported := make([]uint64, len(crashKeys)) // highest seq reported committed

	for round := range 8 {
		killAfter := 500 + rand.IntN(4000) // lines read before the kill
		lines := runCrashChild(ctx, t, dir, killAfter, reported)
		t.Logf("round %d: killed after reading %d lines; reported last seqs %v", round, lines, reported)
		if lines < killAfter {
			t.Fatalf("round %d: child output ended after %d lines, before the kill at %d", round, lines, killAfter)
		}
		checkCrashStore(t, dir, reported)
	}
}

// runCrashChild starts crashChild on dir, reads its reports into reported
// (checking they continue it), SIGKILLs it after killAfter lines, reads the
// rest of its output, and returns the number of lines read.
func runCrashChild(ctx context.Context, t *testing.T, dir string, killAfter int, reported []uint64) int {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	n := 0
	killed := false
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF {
			break // a line without "\n" was cut by the kill: not reported
		}
		if err != nil {
			t.Fatalf("reading child output: %v", err)
		}
		var i int
		var seq uint64
		if _, err := fmt.Sscanf(line, "%d %d\n", &i, &seq); err != nil || i < 0 || i >= len(reported) {
			t.Fatalf("child line %q: %v", line, err)
		}
		if seq != reported[i]+1 {
			t.Fatalf("child reported key %d seq %d after seq %d", i, seq, reported[i])
		}
		reported[i] = seq
		n++
		if n == killAfter {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("SIGKILL child: %v", err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before the kill: %v; stderr:\n%s", err, &stderr)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
		t.Fatalf("child wait: %v; want killed by a signal; stderr:\n%s", err, &stderr)
	}
	return n
}

// checkCrashStore opens the store in dir, checks it against reported, and
// sets reported to the stored last seqs (commits the child made but did not
// report before the kill are stored too).
func checkCrashStore(t *testing.T, dir string, reported []uint64) {
	t.Helper()
	s, err := Open(filepath.Join(dir, "master.db"), Options{KeepEntries: crashKeep})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	docs, err := s.Machines()
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range crashKeys {
		last, err := s.LastSeq(k)
		if err != nil {
			t.Fatal(err)
		}
		if last < reported[i] {
			t.Errorf("%v: last seq %d; child reported seq %d committed", k, last, reported[i])
		}
		var doc crashDoc
		if err := json.Unmarshal(docs[k], &doc); err != nil {
			t.Errorf("%v: document %q: %v", k, docs[k], err)
		} else if doc.Last != last {
			t.Errorf("%v: document says last seq %d, journal has %d (not one commit)", k, doc.Last, last)
		}
		first := uint64(1)
		if last > crashKeep {
			first = last - crashKeep + 1
		}
		want := first
		err = s.Scan(k, 0, func(e Entry) bool {
			if e.Seq != want {
				t.Errorf("%v: seq %d where %d expected (hole or misorder)", k, e.Seq, want)
				return false
			}
			if d := crashData(k, e.Seq); !bytes.Equal(e.Data, d) {
				t.Errorf("%v: seq %d data %q; want %q", k, e.Seq, e.Data, d)
				return false
			}
			want++
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if want != last+1 {
			t.Errorf("%v: scan ended before seq %d; last seq %d", k, want, last)
		}
		reported[i] = last // the next child continues from here
	}
}
