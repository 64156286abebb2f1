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

// listeningPorts reads the sockets in state LISTEN (0A) from /proc/net/tcp
// and tcp6: one read of each small file, no process scan.
func listeningPorts() ([]protocol.ListeningPort, error) {
	var out []protocol.ListeningPort
	for _, f := range procNetTCP {
		ps, err := parseProcNetTCP(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	slices.SortFunc(out, func(a, b protocol.ListeningPort) int {
		if a.Port != b.Port {
			return a.Port - b.Port
		}
		return strings.Compare(a.Address, b.Address)
	})
	return slices.Compact(out), nil
}

func parseProcNetTCP(file string) ([]protocol.ListeningPort, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []protocol.ListeningPort
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" {
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
		out = append(out, protocol.ListeningPort{Port: int(port), Address: ip.String()})
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

func (s *session) portsList(context.Context, *call) (any, error) {
	ps, err := listeningPorts()
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
			ps, err := listeningPorts()
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
