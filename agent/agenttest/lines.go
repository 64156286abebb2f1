package agenttest

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// LineReader accumulates a process's output and waits for substrings.
// Its goroutine ends when the reader returns an error (EOF, or the
// process's stream closing).
type LineReader struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{}
}

// NewLineReader starts reading r.
func NewLineReader(r io.Reader) *LineReader {
	lr := &LineReader{more: make(chan struct{}, 1)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			lr.mu.Lock()
			lr.buf.Write(b[:n])
			lr.mu.Unlock()
			select {
			case lr.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return lr
}

// Expect waits for s in the output (at most testutil.Wait), and consumes
// the output up to its end.
func (lr *LineReader) Expect(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(testutil.Wait)
	for {
		lr.mu.Lock()
		i := bytes.Index(lr.buf.Bytes(), []byte(s))
		if i >= 0 {
			lr.buf.Next(i + len(s))
		}
		got := lr.buf.String()
		lr.mu.Unlock()
		if i >= 0 {
			return
		}
		select {
		case <-lr.more:
		case <-deadline:
			t.Fatalf("no %q in output; have %q", s, got)
		}
	}
}
