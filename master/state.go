package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/master/store"
)

// Store is what the master needs of its persistence (master/store.Bolt is
// the embedded one). It keeps machine documents and, per machine, a
// journal of entries numbered from 1.
type Store interface {
	Machines() (map[store.Key][]byte, error)
	Commit(b *store.Batch) error
	Scan(k store.Key, from uint64, fn func(store.Entry) bool) error
	Close() error
}

// Limits of the state.
const (
	// tailEntries: the last entries of each machine kept in memory for
	// subscribers; older ones are read from the store.
	tailEntries = 512
	// maxPendingBytes: entries waiting for the next commit, all machines
	// together; beyond, ingestion waits for the commit (backpressure).
	maxPendingBytes = 32 << 20
	// reorderWindow: a commit waits until its oldest entry is this old,
	// and a machine's entries are ordered by their time before they are
	// numbered. A bootstrapper with separate status and log endpoints
	// sends over two connections, whose events may arrive out of order by
	// a few milliseconds; within the window the journal has them in the
	// order they happened.
	reorderWindow = 10 * time.Millisecond
)

var errClosed = errors.New("master is shutting down")

// state is the master's model: machines in memory, made durable by a
// committer goroutine that writes everything changed since its last
// commit in one transaction (group commit), then makes it visible to
// subscribers. Nothing is visible before it is durable.
type state struct {
	log *slog.Logger
	st  Store

	mu       sync.Mutex
	cond     *sync.Cond // committed advanced or closed
	machines map[store.Key]*machine
	pending  []pendingEntry
	pendN    int       // bytes in pending (approximately)
	pendAt   time.Time // when the oldest pending entry arrived
	dirty    map[store.Key]bool
	gen      uint64 // the generation being filled; committed when committed >= gen
	commit   uint64 // last committed generation
	closed   bool
	kick     chan struct{}
	changed  chan struct{} // closed and replaced after each commit
	done     chan struct{} // the committer ended
}

// machine is one machine's live state.
type machine struct {
	doc Machine // the latest, possibly not yet durable
	// What subscribers may see: committed.
	pub     *Machine // snapshot as of the last commit
	pubRev  uint64
	rev     uint64 // bumped on every change of doc
	tail    []tailEntry
	bsConns int // open bootstrapper connections
}

// pendingEntry is an entry accepted and not yet numbered nor committed.
type pendingEntry struct {
	key store.Key
	e   Entry
}

type tailEntry struct {
	seq  uint64
	data []byte
}

func newState(st Store, log *slog.Logger) (*state, error) {
	docs, err := st.Machines()
	if err != nil {
		return nil, fmt.Errorf("load machines: %w", err)
	}
	s := &state{
		log: log, st: st,
		machines: map[store.Key]*machine{},
		dirty:    map[store.Key]bool{},
		gen:      1,
		kick:     make(chan struct{}, 1),
		changed:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	for k, b := range docs {
		m := &machine{}
		if err := json.Unmarshal(b, &m.doc); err != nil {
			return nil, fmt.Errorf("load machine %s/%s: %w", k.Runtime, k.Machine, err)
		}
		// Connections did not survive the restart; they are reconciled
		// as agents and bootstrappers reconnect.
		m.doc.Agent.Connected = false
		m.doc.Bootstrapper.Connected = false
		m.rev, m.pubRev = 1, 1
		m.pub = m.doc.view(true)
		s.machines[k] = m
	}
	go s.committer()
	return s, nil
}

// close stops the committer after a last commit of what is pending.
func (s *state) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wake()
	<-s.done
	s.mu.Lock()
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *state) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// get returns k's machine, creating it; mu held.
func (s *state) get(k store.Key) *machine {
	m := s.machines[k]
	if m == nil {
		m = &machine{doc: Machine{RuntimeID: k.Runtime, Name: k.Machine, Status: MachineStarting}}
		s.machines[k] = m
	}
	return m
}

// touch records a change of m's document; mu held.
func (s *state) touch(k store.Key, m *machine, now time.Time) {
	m.rev++
	m.doc.Updated = now
	s.dirty[k] = true
}

// append journals e for k (numbered at commit); mu held.
func (s *state) append(k store.Key, m *machine, e *Entry) {
	if len(s.pending) == 0 {
		s.pendAt = time.Now()
	}
	s.pending = append(s.pending, pendingEntry{k, *e})
	s.pendN += 200 + len(e.Text) + len(e.Error) + 2*len(e.Raw)
	s.dirty[k] = true
	s.wake()
}

// number orders each machine's pending entries by time (stable: arrival
// order among equal times), assigns their seq and renders them; mu held.
func (s *state) number(pending []pendingEntry) []store.KeyedEntry {
	byKey := map[store.Key][]int{}
	var keys []store.Key
	for i, p := range pending {
		if _, ok := byKey[p.key]; !ok {
			keys = append(keys, p.key)
		}
		byKey[p.key] = append(byKey[p.key], i)
	}
	out := make([]store.KeyedEntry, 0, len(pending))
	for _, k := range keys {
		idx := byKey[k]
		sort.SliceStable(idx, func(a, b int) bool { return pending[idx[a]].e.Time.Before(pending[idx[b]].e.Time) })
		m := s.machines[k]
		for _, i := range idx {
			e := &pending[i].e
			m.doc.Seq++
			e.Seq = m.doc.Seq
			b, err := json.Marshal(e)
			if err != nil { // Entry cannot fail to marshal
				panic(fmt.Sprintf("master: marshal entry: %v", err))
			}
			out = append(out, store.KeyedEntry{Key: k, Entry: store.Entry{Seq: e.Seq, Data: b}})
		}
	}
	return out
}

// waitRoom blocks while too much waits for a commit; mu held.
func (s *state) waitRoom() error {
	for s.pendN > maxPendingBytes && !s.closed {
		s.wake()
		s.cond.Wait()
	}
	if s.closed {
		return errClosed
	}
	return nil
}

// waitCommitted blocks until generation gen is durable.
func (s *state) waitCommitted(gen uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commit < gen {
		s.wake()
	}
	for s.commit < gen && !s.closed {
		s.cond.Wait()
	}
	if s.commit < gen {
		return errClosed
	}
	return nil
}

// committer writes what changed, one transaction at a time, and publishes
// it once durable. A failed commit is retried (the store may be full for
// a while); ingestion meanwhile waits (backpressure), and nothing is
// acknowledged, so bootstrappers keep their spools.
func (s *state) committer() {
	defer close(s.done)
	backoff := 10 * time.Millisecond
	for {
		s.mu.Lock()
		for len(s.pending) == 0 && len(s.dirty) == 0 && !s.closed {
			s.mu.Unlock()
			<-s.kick
			s.mu.Lock()
		}
		if len(s.pending) == 0 && len(s.dirty) == 0 && s.closed {
			s.mu.Unlock()
			return
		}
		if age := time.Since(s.pendAt); len(s.pending) > 0 && age < reorderWindow && s.pendN < maxPendingBytes/2 && !s.closed {
			s.mu.Unlock()
			time.Sleep(reorderWindow - age)
			s.mu.Lock()
		}
		b := &store.Batch{Machines: make(map[store.Key][]byte, len(s.dirty)), Entries: s.number(s.pending)}
		snaps := make(map[store.Key]*Machine, len(s.dirty))
		revs := make(map[store.Key]uint64, len(s.dirty))
		for k := range s.dirty {
			m := s.machines[k]
			doc, err := json.Marshal(&m.doc)
			if err != nil {
				panic(fmt.Sprintf("master: marshal machine: %v", err))
			}
			b.Machines[k] = doc
			snaps[k] = m.doc.view(true)
			revs[k] = m.rev
		}
		gen := s.gen
		s.gen++
		s.pending, s.pendN, s.dirty = nil, 0, map[store.Key]bool{}
		s.cond.Broadcast() // room again
		s.mu.Unlock()

		for {
			err := s.st.Commit(b)
			if err == nil {
				backoff = 10 * time.Millisecond
				break
			}
			s.log.Error("commit failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, 2*time.Second)
		}

		s.mu.Lock()
		for k, snap := range snaps {
			m := s.machines[k]
			m.pub, m.pubRev = snap, revs[k]
		}
		for _, e := range b.Entries {
			m := s.machines[e.Key]
			if len(m.tail) >= tailEntries {
				n := copy(m.tail, m.tail[len(m.tail)-tailEntries/2:])
				m.tail = m.tail[:n]
			}
			m.tail = append(m.tail, tailEntry{e.Seq, e.Data})
		}
		s.commit = gen
		close(s.changed)
		s.changed = make(chan struct{})
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// event is the params of a bootstrapper event, Che's fields and
// porthole's, as the master reads them.
type event struct {
	MachineName string `json:"machineName"`
	RuntimeID   struct {
		WorkspaceID string `json:"workspaceId"`
		EnvName     string `json:"envName"`
		OwnerID     string `json:"ownerId"`
	} `json:"runtimeId"`
	Time       time.Time `json:"time"`
	Status     string    `json:"status"`
	Installer  string    `json:"installer"`
	Error      string    `json:"error"`
	Text       string    `json:"text"`
	Stream     string    `json:"stream"`
	Partial    bool      `json:"partial"`
	Raw        []byte    `json:"raw"`
	Lost       uint64    `json:"lost"`
	Server     string    `json:"server"`
	Port       string    `json:"port"`
	BootID     string    `json:"bootId"`
	Seq        uint64    `json:"seq"`
	Installers []struct {
		ID      string `json:"id"`
		Servers map[string]struct {
			Port       string          `json:"port"`
			Protocol   string          `json:"protocol"`
			Path       string          `json:"path"`
			Attributes json.RawMessage `json:"attributes"`
		} `json:"servers"`
	} `json:"installers"`
}

func (e *event) runtimeID() string {
	return e.RuntimeID.WorkspaceID + ":" + e.RuntimeID.EnvName + ":" + e.RuntimeID.OwnerID
}

// Bootstrapper methods.
const (
	methodBootstrapperStatus = "bootstrapper/statusChanged"
	methodInstallerStatus    = "installer/statusChanged"
	methodInstallerLog       = "installer/log"
	methodServerStatus       = "installer/serverStatusChanged"
)

// ingest applies one bootstrapper event of machine k received on
// endpoint path from host. It returns the generation that makes it
// durable, or dup when the event was accepted before (same boot,
// endpoint and seq or lower).
func (s *state) ingest(k store.Key, path, host, method string, ev *event) (gen uint64, dup bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.waitRoom(); err != nil {
		return 0, false, err
	}
	m := s.get(k)
	if ev.BootID != "" && ev.Seq > 0 {
		cur := ev.BootID + " " + path
		if ev.Seq <= m.doc.Cursors[cur] {
			return s.gen, true, nil
		}
		if m.doc.Cursors == nil {
			m.doc.Cursors = map[string]uint64{}
		}
		if _, known := m.doc.Cursors[cur]; !known {
			pruneCursors(m.doc.Cursors, ev.BootID)
		}
		m.doc.Cursors[cur] = ev.Seq
	}
	now := time.Now()
	at := ev.Time
	if at.IsZero() {
		at = now
	}
	e := Entry{Time: at, Installer: ev.Installer, Status: ev.Status, Error: ev.Error, BootID: ev.BootID}
	d := &m.doc
	switch method {
	case methodBootstrapperStatus:
		e.Type = EntryBootstrapper
		d.Bootstrapper.Status = ev.Status
		switch ev.Status {
		case "STARTING":
			d.Status, d.Error, d.BootID = MachineStarting, "", ev.BootID
			if host != "" && d.Agent.Via == "" {
				d.Address = host
			}
			if len(ev.Installers) > 0 {
				d.Installers, d.Servers = nil, nil
				for _, in := range ev.Installers {
					d.Installers = append(d.Installers, Installer{ID: in.ID, Status: InstallerPending})
					names := make([]string, 0, len(in.Servers))
					for n := range in.Servers {
						names = append(names, n)
					}
					sort.Strings(names)
					for _, n := range names {
						sv := in.Servers[n]
						d.Servers = append(d.Servers, Server{Name: n, Installer: in.ID, Port: sv.Port, Protocol: sv.Protocol,
							Path: sv.Path, Attributes: attributes(sv.Attributes), Status: ServerUnknown})
					}
				}
				d.setURLs()
			}
		case "DONE":
			d.Status, d.Error = MachineRunning, ""
		case "FAILED":
			d.Status, d.Error = MachineFailed, ev.Error
		}
	case methodInstallerStatus:
		e.Type = EntryInstaller
		in := d.installer(ev.Installer)
		in.Status, in.Error = ev.Status, ev.Error
		switch ev.Status {
		case "RUNNING":
			d.setServers(ev.Installer, "", ServerRunning)
		case "FAILED":
			d.setServers(ev.Installer, "", ServerStopped)
		}
	case methodServerStatus:
		e.Type, e.Server, e.Port = EntryServer, ev.Server, ev.Port
		d.setServers(ev.Installer, ev.Server, ev.Status)
	case methodInstallerLog:
		e.Type, e.Status, e.Error = EntryLog, "", ""
		e.Text, e.Stream, e.Partial, e.Raw, e.Lost = ev.Text, ev.Stream, ev.Partial, ev.Raw, ev.Lost
	}
	if e.Type != EntryLog {
		s.touch(k, m, now)
	}
	s.append(k, m, &e)
	return s.gen, false, nil
}

// pruneCursors keeps the cursors of boot and of at most one other boot
// (a previous run's connection may still deliver its last events).
func pruneCursors(c map[string]uint64, boot string) {
	others := map[string]bool{}
	for k := range c {
		if b, _, _ := strings.Cut(k, " "); b != boot {
			others[b] = true
		}
	}
	if len(others) <= 1 {
		return
	}
	for k := range c {
		if b, _, _ := strings.Cut(k, " "); b != boot {
			delete(c, k)
		}
	}
}

// setServers sets the status of installer's servers (all of them when
// name is empty), adding a server the plan did not announce.
func (d *Machine) setServers(installer, name, status string) {
	found := false
	for i := range d.Servers {
		sv := &d.Servers[i]
		if sv.Installer == installer && (name == "" || sv.Name == name) {
			sv.Status, found = status, true
		}
	}
	if !found && name != "" {
		d.Servers = append(d.Servers, Server{Name: name, Installer: installer, Status: status})
		d.setURLs()
	}
}

// setURLs computes the servers' URLs from the machine's address.
func (d *Machine) setURLs() {
	for i := range d.Servers {
		sv := &d.Servers[i]
		sv.URL = ""
		port, _, _ := strings.Cut(sv.Port, "/")
		if d.Address == "" || port == "" || sv.Protocol == "" {
			continue
		}
		path := sv.Path
		if path != "" && !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		sv.URL = sv.Protocol + "://" + net.JoinHostPort(d.Address, port) + path
	}
}

// bootstrapperConn records a bootstrapper connection of k opening or
// closing; a normal close after DONE means the machine stopped (the
// bootstrapper ends when its servers' processes have ended).
func (s *state) bootstrapperConn(k store.Key, open, normalEnd bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.get(k)
	if open {
		m.bsConns++
	} else if m.bsConns > 0 {
		m.bsConns--
	}
	d := &m.doc
	was := d.Bootstrapper.Connected
	d.Bootstrapper.Connected = m.bsConns > 0
	if d.Bootstrapper.Connected != was {
		d.Bootstrapper.Since = time.Now()
	}
	if !open && normalEnd && m.bsConns == 0 && d.Status == MachineRunning {
		d.Status = MachineStopped
		for i := range d.Servers {
			d.Servers[i].Status = ServerStopped
		}
	}
	s.touch(k, m, time.Now())
	s.wake()
}

// agentConn records k's agent connecting (a = its announcement) or
// disconnecting (a == nil), with a journal entry.
func (s *state) agentConn(k store.Key, a *AgentState, address string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.get(k)
	now := time.Now()
	e := Entry{Time: now, Type: EntryAgent}
	if a != nil {
		m.doc.Agent = *a
		if address != "" {
			m.doc.Address = address
			m.doc.setURLs()
		}
		e.Status = "CONNECTED"
		e.Text = "agent " + a.Version + " connected (" + a.Via + ")"
	} else {
		m.doc.Agent.Connected = false
		m.doc.Agent.Since = now
		e.Status = "DISCONNECTED"
		e.Text = "agent disconnected"
	}
	s.touch(k, m, now)
	s.append(k, m, &e)
	s.wake()
}

// snapshot returns the committed machines (views), by runtime, sorted.
func (s *state) runtimes(internal bool, only string) []*Runtime {
	s.mu.Lock()
	byID := map[string]*Runtime{}
	for k, m := range s.machines {
		if m.pub == nil || (only != "" && k.Runtime != only) {
			continue
		}
		r := byID[k.Runtime]
		if r == nil {
			ws, env, owner := splitRuntimeID(k.Runtime)
			r = &Runtime{ID: k.Runtime, WorkspaceID: ws, EnvName: env, OwnerID: owner}
			byID[k.Runtime] = r
		}
		r.Machines = append(r.Machines, m.pub.view(internal))
	}
	s.mu.Unlock()
	out := make([]*Runtime, 0, len(byID))
	for _, r := range byID {
		sort.Slice(r.Machines, func(i, j int) bool { return r.Machines[i].Name < r.Machines[j].Name })
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// machineView returns k's committed machine.
func (s *state) machineView(k store.Key, internal bool) *Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.machines[k]
	if m == nil || m.pub == nil {
		return nil
	}
	return m.pub.view(internal)
}

// entries calls fn with k's committed entries after seq after, in order,
// at most limit of them (0: no limit), from memory when it still has
// them, else from the store. fn's slice is valid only during the call.
func (s *state) entries(ctx context.Context, k store.Key, after uint64, limit int, fn func(seq uint64, data []byte) bool) error {
	s.mu.Lock()
	m := s.machines[k]
	if m == nil {
		s.mu.Unlock()
		return nil
	}
	var upto uint64
	if m.pub != nil {
		upto = m.pub.Seq
	}
	var fromTail []tailEntry
	if len(m.tail) > 0 && m.tail[0].seq <= after+1 {
		for _, t := range m.tail {
			if t.seq > after && t.seq <= upto {
				fromTail = append(fromTail, t)
				if limit > 0 && len(fromTail) >= limit {
					break
				}
			}
		}
		s.mu.Unlock()
		for _, t := range fromTail {
			if !fn(t.seq, t.data) {
				return nil
			}
		}
		return nil
	}
	s.mu.Unlock()
	n := 0
	return s.st.Scan(k, after+1, func(e store.Entry) bool {
		if e.Seq > upto || ctx.Err() != nil {
			return false
		}
		n++
		return fn(e.Seq, e.Data) && (limit <= 0 || n < limit)
	})
}

// changes returns a channel closed at the next commit.
func (s *state) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}
