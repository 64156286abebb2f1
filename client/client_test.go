package client

import (
	"io"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExitErrorCode(t *testing.T) {
	cases := []struct {
		err  ExitError
		code int
		msg  string
	}{
		{ExitError{Code: 3}, 3, "process exited with code 3"},
		{ExitError{Signal: "KILL"}, 137, "process killed by signal KILL"},
		{ExitError{Signal: "TERM"}, 143, "process killed by signal TERM"},
		{ExitError{Signal: "40"}, 168, "process killed by signal 40"},
	}
	for _, tc := range cases {
		if got := tc.err.ExitCode(); got != tc.code {
			t.Errorf("%+v.ExitCode() = %d; want %d", tc.err, got, tc.code)
		}
		if got := tc.err.Error(); got != tc.msg {
			t.Errorf("Error() = %q; want %q", got, tc.msg)
		}
	}
}

// An aborted write reports exactly how many bytes the reader took, and the
// pipe stays open for the next writer.
func TestOutPipeAbortKeepsCount(t *testing.T) {
	p := newOutPipe()
	abort := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	done := make(chan result)
	go func() {
		n, err := p.write([]byte("0123456789"), abort)
		done <- result{n, err}
	}()
	b := make([]byte, 4)
	if n, err := p.Read(b); n != 4 || err != nil || string(b) != "0123" {
		t.Fatalf("Read = %d %v %q", n, err, b[:n])
	}
	close(abort)
	r := <-done
	if r.n != 4 || r.err != errAborted {
		t.Fatalf("aborted write = %d, %v; want 4, errAborted", r.n, r.err)
	}
	go func() {
		p.write([]byte("456789"), make(chan struct{}))
		p.closeWithError(nil)
	}()
	rest, err := io.ReadAll(p)
	if err != nil || string(rest) != "456789" {
		t.Fatalf("after reattach read %q, %v", rest, err)
	}
	if _, err := p.write([]byte("x"), nil); err != io.ErrClosedPipe {
		t.Fatalf("write after close = %v", err)
	}
}
