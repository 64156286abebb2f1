package client

import (
	"errors"
	"io"
	"sync"
)

// errAborted is returned by a pipe write cut short by its abort channel.
var errAborted = errors.New("client: write aborted")

// outPipe is a synchronous in-memory pipe, like io.Pipe, whose blocked
// writer can be aborted without closing the pipe: a detached connection
// must stop writing while the reader keeps its stream open for a
// reattach. write reports how many bytes the reader took, so offsets stay
// exact.
type outPipe struct {
	mu     sync.Mutex
	data   []byte
	closed bool
	err    error

	ready    chan struct{} // cap 1: data offered
	consumed chan struct{} // cap 1: the reader took bytes
	done     chan struct{} // closed on close
}

func newOutPipe() *outPipe {
	return &outPipe{ready: make(chan struct{}, 1), consumed: make(chan struct{}, 1), done: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Read implements io.Reader.
func (p *outPipe) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if len(p.data) > 0 {
			n := copy(b, p.data)
			p.data = p.data[n:]
			p.mu.Unlock()
			signal(p.consumed)
			return n, nil
		}
		if p.closed {
			err := p.err
			p.mu.Unlock()
			return 0, err
		}
		p.mu.Unlock()
		select {
		case <-p.ready:
		case <-p.done:
		}
	}
}

// write offers b and waits until the reader took all of it, the pipe is
// closed, or abort is closed.
func (p *outPipe) write(b []byte, abort <-chan struct{}) (int, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, io.ErrClosedPipe
	}
	p.data = b
	p.mu.Unlock()
	signal(p.ready)
	for {
		p.mu.Lock()
		left := len(p.data)
		if left == 0 {
			p.mu.Unlock()
			return len(b), nil
		}
		if p.closed {
			p.data = nil
			p.mu.Unlock()
			return len(b) - left, io.ErrClosedPipe
		}
		p.mu.Unlock()
		select {
		case <-p.consumed:
		case <-p.done:
		case <-abort:
			p.mu.Lock()
			n := len(b) - len(p.data)
			p.data = nil
			p.mu.Unlock()
			return n, errAborted
		}
	}
}

// closeWithError ends the stream: the reader gets err (io.EOF for nil)
// once it has read what was offered.
func (p *outPipe) closeWithError(err error) {
	if err == nil {
		err = io.EOF
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed, p.err = true, err
	p.data = nil
	close(p.done)
}
