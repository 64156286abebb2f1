package agent

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper learns of the exit of every child of the agent with one
// goroutine, instead of one waiting goroutine per process: each child's
// pidfd is in one epoll set, and that set waits in the Go poller (an
// epoll instance is itself pollable). An idle process then costs no
// goroutine and no thread for its waiting. The goroutine runs only while
// some child is watched.
type reaper struct {
	wg *sync.WaitGroup // the manager's: runs the goroutine and the callbacks

	mu      sync.Mutex
	ep      *os.File            // the epoll set; nil while nothing is watched
	epfd    int                 // its descriptor (ep.Fd would make it blocking)
	waiting map[int32]func()    // by pidfd: what to run once it exited
	events  [16]unix.EpollEvent // used by the goroutine only
}

// watch runs fn on a goroutine of wg once the process pid has exited (it
// is then a zombie, so Wait returns at once). It returns false, and
// watches nothing, when it cannot (no pidfds: Linux before 5.3); the
// caller then waits on its own.
func (r *reaper) watch(pid int, fn func()) bool {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ep == nil {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			unix.Close(pidfd)
			return false
		}
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
			unix.Close(pidfd)
			return false
		}
		r.ep = os.NewFile(uintptr(epfd), "reaper") // non-blocking: in the poller
		r.epfd = epfd
		r.waiting = make(map[int32]func())
		ep := r.ep
		r.wg.Go(func() { r.run(ep) })
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(pidfd)}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, pidfd, &ev); err != nil {
		unix.Close(pidfd)
		return false
	}
	r.waiting[int32(pidfd)] = fn
	return true
}

// run is the reaper's goroutine: it hands every exited child to its
// callback, and ends (closing the set) once nothing is watched.
func (r *reaper) run(ep *os.File) {
	rc, err := ep.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n int
		err := rc.Read(func(fd uintptr) bool {
			var werr error
			n, werr = unix.EpollWait(int(fd), r.events[:], 0)
			if werr != nil || n < 0 {
				n = 0
			}
			return n > 0 // none: wait until the set is readable
		})
		r.mu.Lock()
		if err != nil { // the set was closed: cannot happen while watched
			r.mu.Unlock()
			return
		}
		for _, ev := range r.events[:n] {
			fn, ok := r.waiting[ev.Fd]
			if !ok {
				continue
			}
			delete(r.waiting, ev.Fd)
			unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
			unix.Close(int(ev.Fd))
			r.wg.Go(fn)
		}
		if len(r.waiting) == 0 {
			r.ep = nil
			ep.Close()
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}
