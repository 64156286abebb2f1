package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/protocol"
)

// forwardSpec is one [LOCAL:]REMOTE of port-forward; local 0 picks a free
// port.
type forwardSpec struct{ local, remote int }

func parseForwardSpec(s string) (forwardSpec, error) {
	port := func(what, v string, zero bool) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 || (n == 0 && !zero) {
			return 0, usageError{fmt.Sprintf("port-forward %q: %s port %q: want 1-65535", s, what, v)}
		}
		return n, nil
	}
	l, r, ok := strings.Cut(s, ":")
	if !ok {
		n, err := port("remote", s, false)
		return forwardSpec{n, n}, err
	}
	var f forwardSpec
	var err error
	if l != "" { // ":REMOTE" picks a free local port
		if f.local, err = port("local", l, true); err != nil {
			return f, err
		}
	}
	f.remote, err = port("remote", r, false)
	return f, err
}

// runPortForward is `porthole port-forward [-address A] [LOCAL:]REMOTE...`:
// it listens on each LOCAL and carries every connection accepted there to
// REMOTE in the agent's machine, each over its own WebSocket, until
// interrupted. A connection that fails is reported and closed alone.
func runPortForward(ctx context.Context, args []string, e env, stdout, stderr *os.File) error {
	fs := newFlagSet("port-forward", stderr)
	var cf clientFlags
	cf.register(fs, e)
	address := fs.String("address", "127.0.0.1", "local address to listen on")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageError{"port-forward needs at least one port: porthole port-forward [flags] [LOCAL:]REMOTE..."}
	}
	var specs []forwardSpec
	for _, a := range pos {
		f, err := parseForwardSpec(a)
		if err != nil {
			return err
		}
		specs = append(specs, f)
	}
	opts, err := cf.options(ctx, e)
	if err != nil {
		return err
	}
	// Check the agent and the token once, so that a wrong one is an error
	// now rather than on every connection.
	c, err := cf.dial(ctx, e)
	if err != nil {
		return err
	}
	if ver := c.Info().ProtocolVersion; !protocol.AtLeast(ver, "1.1") {
		c.Close()
		return fmt.Errorf("the agent speaks protocol %s and cannot forward ports (1.1 or later); upgrade it", ver)
	}
	c.Close()

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	f := &forwarder{opts: opts, stderr: stderr, conns: map[int]func(){}}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, s := range specs {
		ln, err := net.Listen("tcp", net.JoinHostPort(*address, strconv.Itoa(s.local)))
		if err != nil {
			return fmt.Errorf("port-forward %d: %w", s.remote, err)
		}
		lns = append(lns, ln)
	}
	for i, ln := range lns {
		fmt.Fprintf(stdout, "Forwarding from %s -> %d\n", ln.Addr(), specs[i].remote)
	}
	for i, ln := range lns {
		f.wg.Go(func() { f.accept(ctx, ln, specs[i].remote) })
	}
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	f.closeAll()
	f.wg.Wait()
	return nil
}

// forwarder owns the connections of one port-forward.
type forwarder struct {
	opts   client.Options
	stderr io.Writer
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	conns  map[int]func() // closes one connection
	seq    int
}

func (f *forwarder) accept(ctx context.Context, ln net.Listener, remote int) {
	for {
		lc, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
			return
		}
		if err != nil { // out of descriptors, say: wait, then accept again
			f.report("port-forward %d: %v", remote, err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			continue
		}
		id, ok := f.add(func() { lc.Close() })
		if !ok {
			lc.Close()
			return
		}
		f.wg.Go(func() {
			defer f.remove(id)
			f.forward(ctx, lc.(*net.TCPConn), remote)
		})
	}
}

// forward carries one local connection to remote.
func (f *forwarder) forward(ctx context.Context, lc *net.TCPConn, remote int) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	rc, err := client.DialPort(dctx, f.opts, remote)
	cancel()
	if err != nil {
		lc.SetLinger(0) // a reset, as a refused connection would be
		lc.Close()
		f.report("port-forward %d: connection from %s: %v", remote, lc.RemoteAddr(), err)
		return
	}
	id, ok := f.add(func() { rc.Close(protocol.CloseGoingAway, "port-forward stopped") })
	if !ok {
		lc.Close()
		rc.Close(protocol.CloseGoingAway, "port-forward stopped")
		return
	}
	defer f.remove(id)
	if err := client.JoinPort(rc, lc); err != nil && ctx.Err() == nil {
		f.report("port-forward %d: connection from %s: %v", remote, lc.RemoteAddr(), err)
	}
}

func (f *forwarder) report(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintf(f.stderr, "porthole: "+format+"\n", args...)
}

// add tracks a connection's close so that closeAll can end it; false
// once stopping.
func (f *forwarder) add(close func()) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, false
	}
	f.seq++
	f.conns[f.seq] = close
	return f.seq, true
}

func (f *forwarder) remove(id int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, id)
}

func (f *forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for _, close := range f.conns {
		close()
	}
}
