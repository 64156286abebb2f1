package master

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// The read side of the state: what the HTTP API and the subscriptions
// see. Only committed state is visible (journal.go publishes it).

// view returns a copy of m fit for a reader: the cursors removed, and the
// internal servers too unless internal (a machine of the runtime reads).
func view(m *masterapi.Machine, internal bool) *masterapi.Machine {
	c := *m
	c.Cursors = nil
	c.Installers = slices.Clone(m.Installers)
	c.Servers = nil
	hidden := map[string]bool{}
	for _, s := range m.Servers {
		if internal || !s.Internal() {
			c.Servers = append(c.Servers, s)
		} else {
			p, _, _ := strings.Cut(s.Port, "/")
			hidden[p] = true
		}
	}
	c.Ports = nil
	for _, p := range m.Ports {
		if !hidden[strconv.Itoa(p.Port)] {
			c.Ports = append(c.Ports, p)
		}
	}
	if c.Ports == nil {
		c.Ports = []masterapi.ListeningPort{}
	}
	if c.Installers == nil {
		c.Installers = []masterapi.Installer{}
	}
	if c.Servers == nil {
		c.Servers = []masterapi.Server{}
	}
	return &c
}

// runtimes returns the committed machines (views), by runtime, sorted;
// only one runtime when only is set.
func (s *state) runtimes(internal bool, only string) []*masterapi.Runtime {
	s.mu.Lock()
	byID := map[string]*masterapi.Runtime{}
	for k, m := range s.machines {
		if m.pub == nil || (only != "" && k.Runtime != only) {
			continue
		}
		r := byID[k.Runtime]
		if r == nil {
			ws, env, owner := splitRuntimeID(k.Runtime)
			r = &masterapi.Runtime{ID: k.Runtime, WorkspaceID: ws, EnvName: env, OwnerID: owner}
			byID[k.Runtime] = r
		}
		r.Machines = append(r.Machines, view(m.pub, internal))
	}
	s.mu.Unlock()
	out := make([]*masterapi.Runtime, 0, len(byID))
	for _, r := range byID {
		sort.Slice(r.Machines, func(i, j int) bool { return r.Machines[i].Name < r.Machines[j].Name })
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// splitRuntimeID splits "workspace:env:owner".
func splitRuntimeID(id string) (ws, env, owner string) {
	parts := strings.SplitN(id, ":", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return parts[0], parts[1], parts[2]
}

// machineView returns k's committed machine.
func (s *state) machineView(k store.Key, internal bool) *masterapi.Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.machines[k]
	if m == nil || m.pub == nil {
		return nil
	}
	return view(m.pub, internal)
}

// changes returns a channel closed at the next commit.
func (s *state) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// machineRef is a machine's committed state as a subscription sees it.
type machineRef struct {
	key store.Key
	rev uint64
	seq uint64
	doc *masterapi.Machine
}

// watch returns the committed state of the machines of runtime rid
// ("*": all).
func (s *state) watch(rid string) []machineRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []machineRef
	for k, m := range s.machines {
		if m.pub == nil || (rid != "*" && k.Runtime != rid) {
			continue
		}
		out = append(out, machineRef{key: k, rev: m.pubRev, seq: m.pub.Seq, doc: m.pub})
	}
	return out
}
