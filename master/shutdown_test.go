package master

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol/che"
)

// flakyStore is a Store whose first fail commits fail (-1: all of them),
// as on a full or broken disk.
type flakyStore struct {
	fail  int
	tried chan struct{} // a commit was attempted

	mu        sync.Mutex
	attempts  int
	committed []*store.Batch
}

func (s *flakyStore) Machines() (map[store.Key][]byte, error) { return nil, nil }
func (s *flakyStore) Scan(store.Key, uint64, func(store.Entry) bool) error {
	return nil
}
func (s *flakyStore) Close() error { return nil }

func (s *flakyStore) Commit(b *store.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	select {
	case s.tried <- struct{}{}:
	default:
	}
	if s.fail < 0 || s.attempts <= s.fail {
		return errors.New("no space left on device")
	}
	s.committed = append(s.committed, b)
	return nil
}

func newFlakyMaster(t *testing.T, fail int) (*Master, *flakyStore) {
	t.Helper()
	signer, err := LoadSigner(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &flakyStore{fail: fail, tried: make(chan struct{}, 1)}
	m, err := New(Options{Store: st, Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	k := store.Key{Runtime: "ws:env:me", Machine: "dev"}
	if _, _, err := m.state.ingest(k, "/api/websocket", "", che.MethodInstallerLog, ev(func(e *che.Event) { e.Stream, e.Seq = che.StreamStdout, 1 })); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.tried:
	case <-time.After(30 * time.Second):
		t.Fatal("the committer never tried to commit")
	}
	return m, st
}

// On a disk that keeps failing, SIGTERM does not hang: the committer
// retries until Shutdown's context ends, then gives up, and Shutdown
// returns saying so.
func TestShutdownGivesUpOnAFailingStore(t *testing.T) {
	m, _ := newFlakyMaster(t, -1)
	cause := errors.New("the shutdown grace period ended")
	ctx, cancel := context.WithCancelCause(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Shutdown(ctx) }()
	cancel(cause)
	select {
	case err := <-errc:
		if !errors.Is(err, cause) {
			t.Errorf("Shutdown = %v; want it to wrap %q", err, cause)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return once its context ended: the committer retries forever")
	}
	if err := m.state.waitCommitted(m.state.gen); !errors.Is(err, errClosed) {
		t.Errorf("waitCommitted after Shutdown = %v; want errClosed", err)
	}
}

// A store that recovers while the master shuts down gets the last
// commit: what was accepted is stored.
func TestShutdownCommitsOnceTheStoreRecovers(t *testing.T) {
	m, st := newFlakyMaster(t, 2)
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.attempts != 3 || len(st.committed) != 1 || len(st.committed[0].Entries) != 1 {
		t.Errorf("%d attempts, committed %+v; want the entry committed at the third", st.attempts, st.committed)
	}
}
