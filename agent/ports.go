package agent

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/internal/clock"
	"github.com/porthole-dev/porthole/protocol"
)

// DefaultPortPollInterval is how often a ports.subscribe subscription
// reads the machine's listening sockets.
const DefaultPortPollInterval = 2 * time.Second

// procNetTCP are the kernel's tables of TCP sockets of the agent's
// network namespace (the container's).
var procNetTCP = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// Port scopes: which listening sockets the agent reports (-ports).
const (
	// PortsAll reports every listening socket of the agent's network
	// namespace: in a container (or a pod), every server in it.
	PortsAll = "all"
	// PortsOwn reports only sockets held by the agent's own process or
	// its descendants (what it, the bootstrapper's installers and the
	// chained entrypoint started): for an agent that shares the host's
	// network namespace, as `make run`'s demo machines do.
	PortsOwn = "own"
)

// listener is one listening socket: its port, address and inode.
type listener struct {
	protocol.ListeningPort
	inode uint64
}

// portScanner reads the listening sockets of one scope. For PortsOwn it
// keeps the last answer and scans processes again only when the set of
// listening sockets changed: a poll costs two small reads while nothing
// changes.
type portScanner struct {
	scope string
	root  int // PortsOwn: the process whose descendants count

	lastInodes []uint64
	lastPorts  []protocol.ListeningPort
	scans      int // process scans so far (tests)
}

func newPortScanner(scope string) *portScanner {
	return &portScanner{scope: scope, root: os.Getpid()}
}

// listeningPorts reads the sockets in state LISTEN (0A) from /proc/net/tcp
// and tcp6: one read of each small file; for PortsOwn, also the socket
// file descriptors of the agent's descendants when the sockets changed.
func (sc *portScanner) listeningPorts() ([]protocol.ListeningPort, error) {
	var ls []listener
	for _, f := range procNetTCP {
		ps, err := parseProcNetTCP(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		ls = append(ls, ps...)
	}
	if sc.scope != PortsOwn {
		return sortPorts(ls, nil), nil
	}
	inodes := make([]uint64, len(ls))
	for i, l := range ls {
		inodes[i] = l.inode
	}
	slices.Sort(inodes)
	if sc.lastInodes != nil && slices.Equal(inodes, sc.lastInodes) {
		return sc.lastPorts, nil
	}
	sc.scans++
	owned, err := socketsOfTree(sc.root)
	if err != nil {
		return nil, err
	}
	ports := sortPorts(ls, owned)
	sc.lastInodes, sc.lastPorts = inodes, ports
	return ports, nil
}

// sortPorts returns the ports of ls (only those whose inode is in keep,
// unless keep is nil), sorted, without duplicates.
func sortPorts(ls []listener, keep map[uint64]bool) []protocol.ListeningPort {
	var out []protocol.ListeningPort
	for _, l := range ls {
		if keep == nil || keep[l.inode] {
			out = append(out, l.ListeningPort)
		}
	}
	slices.SortFunc(out, func(a, b protocol.ListeningPort) int {
		if a.Port != b.Port {
			return a.Port - b.Port
		}
		return strings.Compare(a.Address, b.Address)
	})
	return slices.Compact(out)
}

func parseProcNetTCP(file string) ([]listener, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []listener
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(fields[1], ":")
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: bad local address %q", file, fields[1])
		}
		ip, err := procIP(hexIP)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bad inode %q", file, fields[9])
		}
		out = append(out, listener{protocol.ListeningPort{Port: int(port), Address: ip.String()}, inode})
	}
	return out, sc.Err()
}

// procIP decodes /proc/net/tcp's address: 32-bit words in host (little-
// endian) order.
func procIP(h string) (net.IP, error) {
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return nil, fmt.Errorf("bad address %q", h)
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b), nil
}

// socketsOfTree returns the inodes of the sockets held open by root and
// its descendants: the parent of every process from /proc/PID/stat, then
// the fd links ("socket:[N]") of the tree's processes. Processes that end
// or deny access meanwhile are skipped.
func socketsOfTree(root int) (map[uint64]bool, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentPID(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	owned := map[uint64]bool{}
	for todo := []int{root}; len(todo) > 0; {
		pid := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[pid]...)
		dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // ended, or not ours to read
		}
		for _, fd := range fds {
			l, err := os.Readlink(dir + fd.Name())
			if n, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
				if inode, err := strconv.ParseUint(strings.TrimSuffix(n, "]"), 10, 64); err == nil {
					owned[inode] = true
				}
			}
		}
	}
	return owned, nil
}

// parentPID reads the parent's PID from /proc/PID/stat: the fourth field,
// counted after the command name's closing parenthesis (the name may hold
// spaces and parentheses).
func parentPID(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

func (s *session) portsList(context.Context, *call) (any, error) {
	ps, err := newPortScanner(s.a.opts.PortScope).listeningPorts()
	if err != nil {
		return nil, err
	}
	return protocol.PortsResult{Ports: nonNil(ps)}, nil
}

func nonNil(ps []protocol.ListeningPort) []protocol.ListeningPort {
	if ps == nil {
		return []protocol.ListeningPort{}
	}
	return ps
}

// portsSubKey is the ports subscription's key among a session's.
const portsSubKey = "ports"

// portsSubscribe sends ports.changed on this control socket after the
// reply, with every listening port, and again each time the set changes,
// read every PortPollInterval while the subscription lasts.
func (s *session) portsSubscribe(_ context.Context, c *call) (any, error) {
	if s.stream == nil || c.conn == nil {
		return nil, &protocol.Error{Code: protocol.CodeMethodNotFound, Message: "ports.subscribe needs a WebSocket control socket"}
	}
	s.mu.Lock()
	if _, dup := s.subs[portsSubKey]; dup {
		s.mu.Unlock()
		return nil, invalidParams("already subscribed to ports on this connection")
	}
	subCtx, cancel := context.WithCancelCause(s.ctx)
	s.subs[portsSubKey] = cancel
	s.mu.Unlock()
	clk, every := clock.Or(s.a.opts.Clock), s.a.opts.PortPollInterval
	scan := newPortScanner(s.a.opts.PortScope)
	ok := s.goTracked(func() {
		defer func() {
			s.mu.Lock()
			delete(s.subs, portsSubKey)
			s.mu.Unlock()
			cancel(nil)
		}()
		if c.replied != nil {
			select {
			case <-c.replied:
			case <-subCtx.Done():
				return
			}
		}
		var last []protocol.ListeningPort
		first := true
		tick := make(chan struct{}, 1)
		for {
			ps, err := scan.listeningPorts()
			if err != nil {
				s.log.Warn("reading listening ports", "err", err)
			} else if first || !slices.Equal(ps, last) {
				if c.conn.Notify(subCtx, protocol.EventPortsChanged, protocol.PortsResult{Ports: nonNil(ps)}) != nil {
					return
				}
				last, first = ps, false
			}
			stop := clk.AfterFunc(every, func() { tick <- struct{}{} })
			select {
			case <-tick:
			case <-subCtx.Done():
				stop()
				return
			}
		}
	})
	if !ok {
		cancel(nil)
		return nil, errClosing
	}
	return protocol.Empty{}, nil
}

func (s *session) portsUnsubscribe(context.Context, *call) (any, error) {
	s.mu.Lock()
	cancel, ok := s.subs[portsSubKey]
	s.mu.Unlock()
	if !ok {
		return nil, invalidParams("not subscribed to ports")
	}
	cancel(errors.New("unsubscribed"))
	return protocol.Empty{}, nil
}
