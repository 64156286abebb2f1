package bootstrapper

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/porthole-dev/porthole/protocol/che"
)

// outputs reads the stdout and stderr pipes of every installer on one
// goroutine with poll(2), splits them into lines and hands each line to
// emit, in order. One reader for all streams gives two guarantees that a
// reader per stream cannot:
//
//   - sync: once an installer's script has exited, everything it wrote is
//     already in its pipes; sync reads the pipes empty before returning,
//     so the installer's status event follows all of its output.
//   - when stdout and stderr are readable at once, stdout is read first,
//     so "echo 1; echo error >&2" gives STDOUT "1" then STDERR "error"
//     (which of two pipes was written first is otherwise unknowable).
//
// A line longer than maxLine bytes is split into pieces of at most
// maxLine bytes, cut between UTF-8 characters; every piece but the last
// is emitted with partial set.
type outputs struct {
	maxLine int
	emit    func(inst int, stream string, text []byte, partial bool)
	wake    int // eventfd: requests are waiting
	reqs    chan outputRequest
	done    chan struct{} // closed when the loop has ended
}

// pipes are one installer's two output pipes.
type pipes struct {
	inst    int
	streams [2]*stream    // stdout, stderr
	eof     chan struct{} // closed when both have ended
	open    int
}

type stream struct {
	fd      int
	name    string
	pending []byte // an unfinished line
	p       *pipes
}

type outputRequest struct {
	add   *pipes // start reading these
	sync  *pipes // read these until they are empty
	stop  bool   // read what is there, close everything, end
	reply chan struct{}
}

func newOutputs(maxLine int, emit func(inst int, stream string, text []byte, partial bool)) (*outputs, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	o := &outputs{maxLine: maxLine, emit: emit, wake: fd, reqs: make(chan outputRequest, 16), done: make(chan struct{})}
	go o.loop()
	return o, nil
}

// add starts reading an installer's stdout and stderr (non-blocking read
// ends; outputs closes them).
func (o *outputs) add(inst, stdout, stderr int) *pipes {
	p := &pipes{inst: inst, eof: make(chan struct{}), open: 2}
	p.streams[0] = &stream{fd: stdout, name: che.StreamStdout, p: p}
	p.streams[1] = &stream{fd: stderr, name: che.StreamStderr, p: p}
	if !o.request(outputRequest{add: p}) {
		unix.Close(stdout)
		unix.Close(stderr)
		close(p.eof)
	}
	return p
}

// sync returns once everything in p's pipes at the time of the call has
// been emitted.
func (o *outputs) sync(p *pipes) { o.request(outputRequest{sync: p}) }

// stop emits what the pipes hold, closes them and ends the loop.
func (o *outputs) stop() {
	o.request(outputRequest{stop: true})
	<-o.done
	unix.Close(o.wake)
}

// request hands r to the loop and waits for it to be done; false if the
// loop has ended.
func (o *outputs) request(r outputRequest) bool {
	r.reply = make(chan struct{})
	select {
	case o.reqs <- r:
	case <-o.done:
		return false
	}
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	unix.Write(o.wake, one)
	select {
	case <-r.reply:
		return true
	case <-o.done:
		return false
	}
}

func (o *outputs) loop() {
	defer close(o.done)
	var streams []*stream
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{}
	for {
		fds = append(fds[:0], unix.PollFd{Fd: int32(o.wake), Events: unix.POLLIN})
		for _, s := range streams {
			fds = append(fds, unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN})
		}
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			panic(fmt.Sprintf("bootstrapper: poll: %v", err)) // EFAULT, EINVAL, ENOMEM: a bug or no memory
		}
		// Output first, in stream order, one read each, so that no
		// stream starves the others.
		n := 0
		for i, s := range streams {
			if fds[i+1].Revents == 0 || o.read(s, buf) {
				streams[n] = s
				n++
			}
		}
		clear(streams[n:])
		streams = streams[:n]
		if fds[0].Revents == 0 {
			continue
		}
		var v [8]byte
		unix.Read(o.wake, v[:])
		for {
			var r outputRequest
			select {
			case r = <-o.reqs:
			default:
			}
			if r.reply == nil {
				break
			}
			switch {
			case r.add != nil:
				streams = append(streams, r.add.streams[:]...)
			case r.sync != nil:
				for _, s := range r.sync.streams {
					o.drain(s, buf)
				}
			case r.stop:
				for _, s := range streams {
					o.drain(s, buf)
					o.end(s)
				}
				close(r.reply)
				return
			}
			close(r.reply)
		}
		// A synced stream may have ended.
		n = 0
		for _, s := range streams {
			if s.fd >= 0 {
				streams[n] = s
				n++
			}
		}
		clear(streams[n:])
		streams = streams[:n]
	}
}

// read reads s once and reports whether it is still open.
func (o *outputs) read(s *stream, buf []byte) bool {
	if s.fd < 0 {
		return false
	}
	for {
		n, err := unix.Read(s.fd, buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return true
		case err != nil || n == 0:
			o.end(s)
			return false
		}
		o.lines(s, buf[:n])
		return true
	}
}

// drain reads what s holds now, until it is empty or ended; not what is
// written meanwhile, or a script that never stops writing would hold it
// forever.
func (o *outputs) drain(s *stream, buf []byte) {
	if s.fd < 0 {
		return
	}
	left, err := unix.IoctlGetInt(s.fd, unix.TIOCINQ) // FIONREAD: bytes in the pipe
	if err != nil {
		left = 1 << 30 // cannot tell: until it is empty
	}
	for s.fd >= 0 && left > 0 {
		n, err := unix.Read(s.fd, buf[:min(len(buf), left)])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return
		case err != nil || n == 0:
			o.end(s)
			return
		}
		left -= n
		o.lines(s, buf[:n])
	}
}

// end closes s, emitting its unfinished line, if any, as a line.
func (o *outputs) end(s *stream) {
	if s.fd < 0 {
		return
	}
	if len(s.pending) > 0 {
		o.emit(s.p.inst, s.name, s.pending, false)
		s.pending = nil
	}
	unix.Close(s.fd)
	s.fd = -1
	if s.p.open--; s.p.open == 0 {
		close(s.p.eof)
	}
}

// lines emits the complete lines in data and keeps the rest.
func (o *outputs) lines(s *stream, data []byte) {
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := data[:i]
		if len(s.pending) > 0 {
			line = append(s.pending, line...)
		}
		o.line(s, line)
		s.pending = s.pending[:0]
		data = data[i+1:]
	}
	s.pending = append(s.pending, data...)
	for len(s.pending) > o.maxLine {
		cut := cutLine(s.pending, o.maxLine)
		o.emit(s.p.inst, s.name, s.pending[:cut], true)
		s.pending = s.pending[:copy(s.pending, s.pending[cut:])]
	}
}

// line emits one line, in pieces if it is too long.
func (o *outputs) line(s *stream, line []byte) {
	for len(line) > o.maxLine {
		cut := cutLine(line, o.maxLine)
		o.emit(s.p.inst, s.name, line[:cut], true)
		line = line[cut:]
	}
	o.emit(s.p.inst, s.name, line, false)
}

// cutLine returns where to cut b (longer than n) to keep at most n bytes:
// at n, or before the UTF-8 character that n falls into. Where there is no
// character start within reach (invalid bytes), at n.
func cutLine(b []byte, n int) int {
	for cut := n; cut > n-utf8.UTFMax && cut > 0; cut-- {
		if utf8.RuneStart(b[cut]) {
			return cut
		}
	}
	return n
}
