package bootstrapper

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

type emitted struct {
	mu    sync.Mutex
	lines []string
}

func (e *emitted) emit(inst int, stream string, text []byte, partial bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	mark := ""
	if partial {
		mark = "+"
	}
	e.lines = append(e.lines, fmt.Sprintf("%d %s %s%s", inst, stream, text, mark))
}

func (e *emitted) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.lines)
}

// testPipes returns read ends registered with o and the write ends.
func testPipes(t *testing.T, o *outputs, inst int) (p *pipes, stdout, stderr int) {
	t.Helper()
	var fds [2][2]int
	for i := range fds {
		if err := unix.Pipe2(fds[i][:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.SetNonblock(fds[i][0], true)
	}
	return o.add(inst, fds[0][0], fds[1][0]), fds[0][1], fds[1][1]
}

func write(t *testing.T, fd int, s string) {
	t.Helper()
	if _, err := unix.Write(fd, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

// testOutputs returns outputs emitting to e, stopped at cleanup.
func testOutputs(t *testing.T, maxLine int, e *emitted) *outputs {
	t.Helper()
	o, err := newOutputs(maxLine, e.emit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.stop)
	return o
}

func TestOutputsLines(t *testing.T) {
	var e emitted
	o := testOutputs(t, 8, &e)
	p, out, errw := testPipes(t, o, 1)
	// Written before either is read: stdout is read first.
	write(t, out, "1\n")
	write(t, errw, "error\n")
	o.sync(p)
	write(t, out, "two\r\nthree")
	o.sync(p)
	want := []string{"1 STDOUT 1", "1 STDERR error", "1 STDOUT two\r"}
	if got := e.get(); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	write(t, out, " and more\n") // the unfinished line goes on
	// Longer than 8 bytes: pieces of 8, the last one ends the line.
	write(t, out, "0123456789abcdefXYZ\n")
	write(t, out, "01234567\n") // exactly 8: one piece
	// A piece never ends inside a UTF-8 character: "é" is 2 bytes.
	write(t, out, "abcdefgé12\n")
	write(t, out, "no newline at the end")
	unix.Close(out)
	unix.Close(errw)
	<-p.eof
	want = append(want,
		"1 STDOUT three an+", "1 STDOUT d more",
		"1 STDOUT 01234567+", "1 STDOUT 89abcdef+", "1 STDOUT XYZ",
		"1 STDOUT 01234567",
		"1 STDOUT abcdefg+", "1 STDOUT é12",
		"1 STDOUT no newli+", "1 STDOUT ne at th+", "1 STDOUT e end",
	)
	if got := e.get(); !slices.Equal(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

func TestCutLine(t *testing.T) {
	cases := []struct {
		in   string
		n    int
		want int
	}{
		{"abcdef", 3, 3},
		{"abé", 3, 2},        // é is 2 bytes at 2-3
		{"a€bc", 2, 1},       // € is 3 bytes at 1-3
		{"a€bc", 3, 1},       //
		{"a€bc", 4, 4},       // after it
		{"a\xff\xffb", 2, 2}, // invalid bytes: cut where asked
		{"\x80\x80\x80\x80\x80", 4, 4},
	}
	for _, c := range cases {
		got := cutLine([]byte(c.in), c.n)
		if got != c.want {
			t.Errorf("cutLine(%q, %d) = %d; want %d", c.in, c.n, got, c.want)
		}
		if utf8.ValidString(c.in) && !utf8.ValidString(c.in[:got]) {
			t.Errorf("cutLine(%q, %d) cut a character", c.in, c.n)
		}
	}
}

// Many installers and long output: nothing is lost or reordered within a
// stream.
func TestOutputsMany(t *testing.T) {
	var e emitted
	o := testOutputs(t, 64, &e)
	const n = 5000
	var ps []*pipes
	var wg sync.WaitGroup
	for i := range 3 {
		p, out, errw := testPipes(t, o, i)
		ps = append(ps, p)
		wg.Go(func() {
			var b strings.Builder
			for k := range n {
				fmt.Fprintf(&b, "%d\n", k)
			}
			write(t, out, b.String())
			unix.Close(out)
			unix.Close(errw)
		})
	}
	wg.Wait()
	for _, p := range ps {
		<-p.eof
	}
	next := map[int]int{}
	for _, l := range e.get() {
		var inst, k int
		var stream string
		fmt.Sscanf(l, "%d %s %d", &inst, &stream, &k)
		if k != next[inst] {
			t.Fatalf("installer %d: line %d after %d", inst, k, next[inst]-1)
		}
		next[inst]++
	}
	for i := range 3 {
		if next[i] != n {
			t.Fatalf("installer %d: %d lines", i, next[i])
		}
	}
}
