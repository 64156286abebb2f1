package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func readBody(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	// porthole-master's refusals are {"error": "..."} (the agent's are
	// text): the message alone.
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	return string(b)
}

// ExitError is returned by Wait when the process did not exit with 0.
type ExitError struct {
	Code   int    // exit code, when it exited
	Signal string // signal name ("KILL"), when a signal killed it
}

func (e *ExitError) Error() string {
	if e.Signal != "" {
		return "process killed by signal " + e.Signal
	}
	return fmt.Sprintf("process exited with code %d", e.Code)
}

// ExitCode is the code a shell would report: the exit code, or 128 plus
// the signal number.
func (e *ExitError) ExitCode() int {
	if e.Signal != "" {
		if sig, err := protocol.ParseSignal(e.Signal); err == nil {
			return 128 + int(sig)
		}
		return 255
	}
	return e.Code
}

// DisconnectedError is returned by Wait when the connection ended before
// the process did. The process still runs; Reattach continues exactly at
// Offsets.
type DisconnectedError struct {
	Offsets Offsets
	Err     error
}

func (e *DisconnectedError) Error() string {
	return fmt.Sprintf("disconnected from the agent at stdout offset %d, stderr offset %d (the process still runs; reattach to continue): %v", e.Offsets.Stdout, e.Offsets.Stderr, e.Err)
}

func (e *DisconnectedError) Unwrap() error { return e.Err }

// AgentShutDown reports whether the agent closed the connection because it
// is shutting down (close code 1001): its processes are being hung up, so
// reattaching is pointless.
func (e *DisconnectedError) AgentShutDown() bool {
	var ce *websocket.CloseError
	return errors.As(e.Err, &ce) && ce.Code == protocol.CloseGoingAway
}

// Process is an attached process. Read Stdout and Stderr concurrently (as
// with os/exec pipes); a reader that stops reading eventually stalls the
// connection and the agent then reports a gap.
type Process struct {
	ID     string
	Stdin  io.WriteCloser
	Stdout io.Reader
	Stderr io.Reader
	c      *Client
	outW   [3]*outPipe

	mu      sync.Mutex
	info    protocol.ProcessInfo
	off     [3]int64
	eof     [3]bool
	exit    *protocol.ProcessInfo
	gaps    []protocol.GapEvent
	stream  *wsrpc.Stream
	conn    *jsonrpc2.Conn
	ended   chan struct{} // the current connection ended
	abort   chan struct{} // closed to stop the current connection's writes
	connErr error
	wg      sync.WaitGroup
}

// Attach attaches to a running or exited process from the given offsets.
func (c *Client) Attach(ctx context.Context, id string, off Offsets) (*Process, error) {
	p := &Process{ID: id, c: c}
	p.outW[protocol.Stdout], p.outW[protocol.Stderr] = newOutPipe(), newOutPipe()
	p.Stdout, p.Stderr = p.outW[protocol.Stdout], p.outW[protocol.Stderr]
	p.Stdin = stdinWriter{p}
	p.off[protocol.Stdout], p.off[protocol.Stderr] = off.Stdout, off.Stderr
	if err := p.connect(ctx); err != nil {
		p.closePipes(err)
		return nil, err
	}
	return p, nil
}

// Info returns what the agent last said about the process.
func (p *Process) Info() protocol.ProcessInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit != nil {
		return *p.exit
	}
	return p.info
}

// Gaps returns the output ranges that fell out of the agent's ring before
// this client received them, in order.
func (p *Process) Gaps() []protocol.GapEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]protocol.GapEvent(nil), p.gaps...)
}

// Offsets returns the stream positions received so far.
func (p *Process) Offsets() Offsets {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Offsets{Stdout: p.off[protocol.Stdout], Stderr: p.off[protocol.Stderr]}
}

func (p *Process) connect(ctx context.Context) error {
	p.mu.Lock()
	q := url.Values{}
	q.Set("stdout", strconv.FormatInt(p.off[protocol.Stdout], 10))
	q.Set("stderr", strconv.FormatInt(p.off[protocol.Stderr], 10))
	p.mu.Unlock()
	stream, err := p.c.dial(ctx, "/v1/processes/"+url.PathEscape(p.ID)+"/attach", q, protocol.SubprotocolAttach, p.onOutput)
	if err != nil {
		return err
	}
	started := make(chan struct{})
	var startOnce sync.Once
	// abort is in place before the read loop starts: onOutput reads it
	// with the first frame, and a frame's write waits on it.
	ended, abort := make(chan struct{}), make(chan struct{})
	p.mu.Lock()
	p.abort = abort
	p.mu.Unlock()
	conn := jsonrpc2.NewConn(context.Background(), stream, jsonrpc2.HandlerWithError(func(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
		err := p.onEvent(req)
		if req.Method == protocol.EventStarted {
			startOnce.Do(func() { close(started) })
		}
		return nil, err
	}), quiet)
	p.mu.Lock()
	p.stream, p.conn, p.ended, p.connErr = stream, conn, ended, nil
	p.mu.Unlock()
	p.wg.Go(func() {
		<-conn.DisconnectNotify()
		stream.Close()
		p.mu.Lock()
		exited := p.exit != nil
		if !exited && p.connErr == nil {
			p.connErr = stream.Err()
			if p.connErr == nil {
				p.connErr = errors.New("connection closed")
			}
		}
		p.mu.Unlock()
		if exited {
			p.closePipes(nil)
		}
		close(ended)
	})
	select {
	case <-started:
		return nil
	case <-ended:
		// A process that exits at once sends started and exited, and the
		// socket ends, before this select runs: it was attached all the
		// same, and its exit is Wait's to report, not Attach's error.
		select {
		case <-started:
			return nil
		default:
		}
		return p.waitErr()
	case <-ctx.Done():
		stream.Close()
		<-ended
		return ctx.Err()
	}
}

// onOutput handles one binary frame, on the connection's read loop.
func (p *Process) onOutput(frame []byte) error {
	s, off, payload, err := protocol.ParseOutputFrame(frame)
	if err != nil {
		return err
	}
	p.mu.Lock()
	want, abort := p.off[s], p.abort
	p.mu.Unlock()
	if off > want {
		return fmt.Errorf("%s frame at offset %d but %d expected, without a gap notice", s, off, want)
	}
	if skip := want - off; skip > 0 { // already have these bytes
		if skip >= int64(len(payload)) {
			return nil
		}
		payload = payload[skip:]
	}
	n, err := p.outW[s].write(payload, abort)
	p.mu.Lock()
	p.off[s] += int64(n)
	p.mu.Unlock()
	if err == errAborted {
		return err // detached: end this connection's read loop
	}
	return nil // a closed reader keeps the session for Wait
}

// onEvent handles a notification, in order with the output frames.
func (p *Process) onEvent(req *jsonrpc2.Request) error {
	if req.Params == nil {
		return nil
	}
	switch req.Method {
	case protocol.EventStarted:
		var info protocol.ProcessInfo
		if err := json.Unmarshal(*req.Params, &info); err != nil {
			return err
		}
		p.mu.Lock()
		p.info = info
		p.mu.Unlock()
		if info.TTY {
			p.endStream(protocol.Stderr, 0)
		}
	case protocol.EventGap:
		var g protocol.GapEvent
		if err := json.Unmarshal(*req.Params, &g); err != nil {
			return err
		}
		s, err := protocol.ParseStream(g.Stream)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.off[s] = g.To
		p.gaps = append(p.gaps, g)
		p.mu.Unlock()
	case protocol.EventEOF:
		var e protocol.EOFEvent
		if err := json.Unmarshal(*req.Params, &e); err != nil {
			return err
		}
		s, err := protocol.ParseStream(e.Stream)
		if err != nil {
			return err
		}
		p.endStream(s, e.Offset)
	case protocol.EventExited:
		var info protocol.ProcessInfo
		if err := json.Unmarshal(*req.Params, &info); err != nil {
			return err
		}
		p.mu.Lock()
		p.exit = &info
		p.mu.Unlock()
	}
	return nil
}

func (p *Process) endStream(s protocol.Stream, off int64) {
	p.mu.Lock()
	already := p.eof[s]
	p.eof[s] = true
	if off > p.off[s] {
		p.off[s] = off
	}
	p.mu.Unlock()
	if !already {
		p.outW[s].closeWithError(nil)
	}
}

func (p *Process) closePipes(err error) {
	for _, s := range []protocol.Stream{protocol.Stdout, protocol.Stderr} {
		p.outW[s].closeWithError(err)
	}
}

// Wait waits until the process exits and all its output was delivered, or
// the connection ends. It returns nil for exit code 0, an *ExitError for
// any other exit, and a *DisconnectedError when the connection ended first.
func (p *Process) Wait() error {
	p.mu.Lock()
	ended := p.ended
	p.mu.Unlock()
	<-ended
	return p.waitErr()
}

func (p *Process) waitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit != nil {
		switch {
		case p.exit.Signal != "":
			return &ExitError{Signal: p.exit.Signal}
		case p.exit.ExitCode != nil && *p.exit.ExitCode != 0:
			return &ExitError{Code: *p.exit.ExitCode}
		}
		return nil
	}
	return &DisconnectedError{Offsets: Offsets{Stdout: p.off[protocol.Stdout], Stderr: p.off[protocol.Stderr]}, Err: p.connErr}
}

// Reattach opens a new connection after the previous one ended, continuing
// exactly at the offsets already received: no byte is duplicated or
// skipped (unless the agent reports a gap).
func (p *Process) Reattach(ctx context.Context) error {
	p.mu.Lock()
	ended := p.ended
	p.mu.Unlock()
	select {
	case <-ended:
	default:
		return errors.New("client: still attached")
	}
	return p.connect(ctx)
}

// Detach ends the connection; the process keeps running in the agent.
func (p *Process) Detach() {
	p.mu.Lock()
	stream, ended, abort := p.stream, p.ended, p.abort
	p.mu.Unlock()
	select {
	case <-abort:
	default:
		close(abort)
	}
	stream.CloseWith(protocol.CloseNormal, "detached")
	<-ended
}

// Close detaches and ends the Stdout and Stderr pipes.
func (p *Process) Close() error {
	p.Detach()
	p.closePipes(errClosed)
	p.wg.Wait()
	return nil
}

// errExited is returned for a request that the agent could not answer
// because the process exited and the attach socket closed meanwhile.
var errExited = errors.New("client: the process has exited")

func (p *Process) call(ctx context.Context, method string, params any) error {
	p.mu.Lock()
	conn, ended := p.conn, p.ended
	p.mu.Unlock()
	err := conn.Call(ctx, method, params, &protocol.Empty{})
	if errors.Is(err, jsonrpc2.ErrClosed) {
		<-ended // the read loop has seen everything the agent sent
		p.mu.Lock()
		exited := p.exit != nil
		p.mu.Unlock()
		if exited {
			switch method {
			case protocol.MethodCloseStdin, protocol.MethodSignal, protocol.MethodKill:
				// The process exited while the request was on its way (often
				// because of it): what was asked for holds.
				return nil
			}
			return errExited
		}
	}
	return err
}

// Resize sets the terminal size of a TTY process.
func (p *Process) Resize(ctx context.Context, size protocol.WindowSize) error {
	return p.call(ctx, protocol.MethodResize, protocol.ResizeParams{WindowSize: size})
}

// Signal sends a signal (name like "INT" or number) to the process group.
func (p *Process) Signal(ctx context.Context, signal string) error {
	return p.call(ctx, protocol.MethodSignal, protocol.SignalParams{Signal: signal})
}

// SignalOS sends an os signal value.
func (p *Process) SignalOS(ctx context.Context, sig syscall.Signal) error {
	return p.Signal(ctx, protocol.SignalName(sig))
}

// CloseStdin half-closes stdin after everything written so far.
func (p *Process) CloseStdin(ctx context.Context) error {
	return p.call(ctx, protocol.MethodCloseStdin, protocol.IDParams{})
}

// stdinFrame is the largest stdin payload per frame.
const stdinFrame = 32 << 10

type stdinWriter struct{ p *Process }

func (w stdinWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	stream := w.p.stream
	w.p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), stdinFrame)]
		if err := stream.WriteBinary(protocol.AppendInputFrame(nil, chunk)); err != nil {
			return n, err
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
	return n, nil
}

func (w stdinWriter) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return w.p.CloseStdin(ctx)
}
