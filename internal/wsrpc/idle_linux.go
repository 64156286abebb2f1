package wsrpc

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Poller waits for idle sockets (Stream.ServeRaw) with one goroutine:
// each socket's descriptor is in one epoll set, once (EPOLLONESHOT), and
// the set waits in the Go poller (an epoll instance is itself pollable).
// The goroutine runs only while some socket is parked; Wait waits for
// it. The zero value is ready to use.
type Poller struct {
	wg sync.WaitGroup

	mu      sync.Mutex
	ep      *os.File         // the set; nil while nothing is parked
	epfd    int              // its descriptor (ep.Fd would make it blocking)
	waiting map[int32]func() // by descriptor: what to start once readable
}

// add parks fd: fn runs on a goroutine of its own once fd is readable,
// hung up or in error. false: it cannot be parked.
func (p *Poller) add(fd int, fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ep == nil {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return false
		}
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
			return false
		}
		p.ep = os.NewFile(uintptr(epfd), "wsrpc-idle") // non-blocking: in the poller
		p.epfd = epfd
		p.waiting = make(map[int32]func())
		ep := p.ep
		p.wg.Go(func() { p.run(ep) })
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.closeIfEmptyLocked()
		return false
	}
	p.waiting[int32(fd)] = fn
	return true
}

// remove unparks fd: false when it is not parked (its function was
// started, or is about to be).
func (p *Poller) remove(fd int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.waiting[int32(fd)]; !ok {
		return false
	}
	delete(p.waiting, int32(fd))
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	p.closeIfEmptyLocked()
	return true
}

// closeIfEmptyLocked closes the set once nothing is parked; its
// goroutine then ends.
func (p *Poller) closeIfEmptyLocked() {
	if p.ep != nil && len(p.waiting) == 0 {
		p.ep.Close()
		p.ep, p.waiting = nil, nil
	}
}

// run is the poller's goroutine for the set ep: it starts the function
// of every socket that became readable, and ends once ep is closed.
func (p *Poller) run(ep *os.File) {
	rc, err := ep.SyscallConn()
	if err != nil {
		return
	}
	var events [32]unix.EpollEvent
	for {
		var n int
		err := rc.Read(func(fd uintptr) bool {
			var werr error
			n, werr = unix.EpollWait(int(fd), events[:], 0)
			if werr != nil || n < 0 {
				n = 0
			}
			return n > 0 // none: wait until the set is readable
		})
		if err != nil { // closed: nothing is parked
			return
		}
		p.mu.Lock()
		if p.ep != ep { // closed meanwhile
			p.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			fn, ok := p.waiting[ev.Fd]
			if !ok {
				continue
			}
			delete(p.waiting, ev.Fd)
			unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
			go fn()
		}
		p.closeIfEmptyLocked()
		p.mu.Unlock()
	}
}

// Wait waits for the poller's goroutine, once nothing is parked.
func (p *Poller) Wait() { p.wg.Wait() }
