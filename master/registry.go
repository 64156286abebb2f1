package master

// The token registry: every token the token command issued, by id, with
// its name, kind, machine, lifetime and revocation, in the data directory
// (tokens.json, mode 0600; never the tokens themselves). The token
// command writes it while the master runs (the store is the master's
// alone), under a lock file; the master reads it again whenever it
// changes, and closes at once the connections of a token revoked there.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TokensFile is the registry's name in the data directory.
const TokensFile = "tokens.json"

// TokenRecord is one issued token.
type TokenRecord struct {
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Kind    string     `json:"kind"`
	Runtime string     `json:"runtimeId,omitempty"`
	Machine string     `json:"machine,omitempty"`
	Issued  time.Time  `json:"issued"`
	Expires *time.Time `json:"expires,omitempty"`
	Revoked *time.Time `json:"revoked,omitempty"`
}

// Registry is the data directory's token registry.
type Registry struct{ dir string }

// NewRegistry returns dir's registry.
func NewRegistry(dir string) Registry { return Registry{dir} }

func (g Registry) path() string { return filepath.Join(g.dir, TokensFile) }

// List returns every record, oldest first.
func (g Registry) List() ([]TokenRecord, error) {
	b, err := os.ReadFile(g.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []TokenRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("%s: %w", g.path(), err)
	}
	return recs, nil
}

// Add records rec.
func (g Registry) Add(rec TokenRecord) error {
	return g.update(func(recs []TokenRecord) ([]TokenRecord, error) { return append(recs, rec), nil })
}

// Revoke revokes every token whose id or name is nameOrID and returns how
// many it revoked (already revoked ones are not counted again).
func (g Registry) Revoke(nameOrID string, now time.Time) (int, error) {
	n := 0
	err := g.update(func(recs []TokenRecord) ([]TokenRecord, error) {
		found := false
		for i := range recs {
			r := &recs[i]
			if r.ID != nameOrID && r.Name != nameOrID {
				continue
			}
			found = true
			if r.Revoked == nil {
				t := now.UTC()
				r.Revoked = &t
				n++
			}
		}
		if !found {
			return nil, fmt.Errorf("no token named or numbered %q (porthole-master token list)", nameOrID)
		}
		return recs, nil
	})
	return n, err
}

// update rewrites the registry with f's result, under the lock file,
// atomically (a reader sees the old file or the new one).
func (g Registry) update(f func([]TokenRecord) ([]TokenRecord, error)) error {
	lock, err := os.OpenFile(filepath.Join(g.dir, TokensFile+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	recs, err := g.List()
	if err != nil {
		return err
	}
	if recs, err = f(recs); err != nil {
		return err
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(g.dir, TokensFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), g.path())
}

// revocations is the master's view of the registry: the revoked ids, and
// the open connections of each token, closed when it is revoked.
type revocations struct {
	reg Registry

	mu      sync.Mutex
	revoked map[string]bool
	conns   map[string]map[net.Conn]bool // by revocable id
	stamp   fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// CheckEvery is how often the master looks at the registry for changes:
// a revocation closes the token's connections within about this long.
const revocationCheck = time.Second

func newRevocations(dir string) *revocations {
	r := &revocations{revoked: map[string]bool{}, conns: map[string]map[net.Conn]bool{}}
	if dir != "" {
		r.reg = NewRegistry(dir)
	}
	return r
}

// isRevoked reports whether c's token (or a ticket's parent) is revoked.
func (r *revocations) isRevoked(c *Claims) bool {
	id := c.revocable()
	if id == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revoked[id]
}

// track registers conn as one of c's connections until the returned func.
func (r *revocations) track(c *Claims, conn net.Conn) (untrack func()) {
	id := c.revocable()
	if id == "" || conn == nil {
		return func() {}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns[id] == nil {
		r.conns[id] = map[net.Conn]bool{}
	}
	r.conns[id][conn] = true
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.conns[id], conn)
		if len(r.conns[id]) == 0 {
			delete(r.conns, id)
		}
	}
}

// reload reads the registry when it changed, and closes the connections
// of tokens newly revoked; it returns the names of those tokens.
func (r *revocations) reload() ([]string, error) {
	if r.reg.dir == "" {
		return nil, nil
	}
	st, err := os.Stat(r.reg.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	stamp := fileStamp{st.ModTime(), st.Size()}
	r.mu.Lock()
	same := stamp == r.stamp
	r.mu.Unlock()
	if same {
		return nil, nil
	}
	recs, err := r.reg.List()
	if err != nil {
		return nil, err
	}
	var names []string
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stamp = stamp
	for _, rec := range recs {
		if rec.Revoked == nil || r.revoked[rec.ID] {
			continue
		}
		r.revoked[rec.ID] = true
		names = append(names, rec.Name)
		for c := range r.conns[rec.ID] {
			c.Close()
		}
	}
	return names, nil
}

// watch reloads the registry every revocationCheck until ctx ends.
func (r *revocations) watch(ctx context.Context, log func(names []string, err error)) {
	t := time.NewTicker(revocationCheck)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if names, err := r.reload(); err != nil || len(names) > 0 {
				log(names, err)
			}
		case <-ctx.Done():
			return
		}
	}
}

type connKey struct{}

// ConnContext is http.Server.ConnContext for a master's server: it lets
// the master close a revoked token's connections, WebSockets included.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// connOf returns r's connection (nil when the server has no ConnContext).
func connOf(r *http.Request) net.Conn {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	return c
}
