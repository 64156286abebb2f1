package master_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/store"
)

// gatedStore holds every commit until the test releases it, and tells
// the test each commit's entry count first; once open is closed, commits
// pass straight through (the master's own shutdown commits).
type gatedStore struct {
	master.Store
	commits   chan int
	release   chan struct{}
	open      chan struct{}
	closeOnce sync.Once
}

func (s *gatedStore) Commit(b *store.Batch) error {
	select {
	case s.commits <- len(b.Entries):
		select {
		case <-s.release:
		case <-s.open:
		}
	case <-s.open:
	}
	return s.Store.Commit(b)
}

func (s *gatedStore) ungate() { s.closeOnce.Do(func() { close(s.open) }) }

// One connection flooding the master never has more than
// Options.ConnPendingBytes accepted and not committed (plus the frame
// being handled): every commit, taken with everything pending, holds at
// most that many bytes of its frames, however slow the store. And its
// ping is answered only once every frame before it is committed.
func TestIngestBoundedWhileCommitsAreSlow(t *testing.T) {
	const (
		bound  = 16 << 10
		frames = 400
		rid    = "w:e:o"
		name   = "m"
	)
	gs := &gatedStore{commits: make(chan int), release: make(chan struct{}), open: make(chan struct{})}
	tm := startMaster(t, t.TempDir(), "", func(o *master.Options) {
		gs.Store = o.Store
		o.Store = gs
		o.ConnPendingBytes = bound
		o.MachineRate, o.MachineBurst = 1<<30, 1<<30
	})
	t.Cleanup(gs.ungate) // before the master stops (cleanups run last first)
	p := push(t, tm, tm.machineToken(t, rid, name))

	text := strings.Repeat("x", 300)
	minFrame := len(logEvent(name, rid, "b1", 1, text))
	sent := make(chan error, 1)
	go func() {
		for seq := 1; seq <= frames; seq++ {
			if err := p.ws.WriteMessage(websocket.TextMessage, []byte(logEvent(name, rid, "b1", seq, text))); err != nil {
				sent <- fmt.Errorf("frame %d: %w", seq, err)
				return
			}
		}
		sent <- p.ws.WriteControl(websocket.PingMessage, []byte("all"), time.Now().Add(wait))
	}()

	maxEntries := bound/minFrame + 1
	committed, commits := 0, 0
	deadline := time.After(wait)
	for done := false; !done; {
		select {
		case n := <-gs.commits:
			commits++
			if n > maxEntries {
				t.Errorf("commit %d holds %d entries of at least %d bytes each: more than the %d bytes one connection may have pending", commits, n, minFrame, bound)
			}
			gs.release <- struct{}{}
			committed += n
		case err := <-sent:
			if err != nil {
				t.Fatalf("sending: %v", err)
			}
			sent = nil
		case <-p.pongs:
			if committed != frames {
				t.Errorf("pong after %d of %d entries were committed; want it only once all are", committed, frames)
			}
			done = true
		case err := <-p.readErr:
			t.Fatalf("the connection ended: %v", err)
		case <-deadline:
			t.Fatalf("no pong: %d of %d entries committed in %d commits", committed, frames, commits)
		}
	}
	if commits < frames*minFrame/bound {
		t.Errorf("%d commits for %d bytes of frames: the connection was not held to %d bytes pending", commits, frames*minFrame, bound)
	}
}
