// Command floor is a minimal Go terminal server, the yardstick of
// the footprint benchmarks in package bench: one WebSocket per terminal,
// gorilla/websocket as in the agent, the PTY master read through the Go
// poller, two goroutines per session (socket reader, PTY reader), nothing
// else: no protocol, no scrollback, no reattach, no auth.
//
//	floor -listen 127.0.0.1:PORT
//
// GET /attach?cmd=ARGV0&arg=ARG... starts the command on a fresh PTY and
// bridges it to the socket until either side ends. On SIGTERM or SIGINT
// every child is killed and floor exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

var (
	upgrader = websocket.Upgrader{WriteBufferSize: 64 << 10, WriteBufferPool: &sync.Pool{}}

	mu       sync.Mutex
	children = map[*exec.Cmd]struct{}{}
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	http.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	http.HandleFunc("GET /attach", attach)
	go http.Serve(ln, nil)
	<-ctx.Done()
	mu.Lock()
	for cmd := range children {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	mu.Unlock()
}

func attach(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	argv := append([]string{q.Get("cmd")}, q["arg"]...)
	if argv[0] == "" {
		http.Error(w, "cmd is required", http.StatusBadRequest)
		return
	}
	master, cmd, err := start(argv)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		cmd.Process.Kill()
		master.Close()
		reap(cmd)
		return
	}
	// PTY → socket. The PTY's EIO means the terminal has no process left.
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			if n > 0 && ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
				break
			}
			if err != nil {
				break
			}
		}
		ws.Close()
	}()
	// Socket → PTY, on the handler's goroutine.
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			break
		}
		master.Write(b)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGHUP)
	master.Close()
	reap(cmd)
}

// start runs argv in a new session on a fresh PTY and returns the master,
// made non-blocking so that reading it parks a goroutine, not a thread.
func start(argv []string) (*os.File, *exec.Cmd, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer tty.Close()
	defer ptmx.Close()
	fd, err := unix.FcntlInt(ptmx.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	master := os.NewFile(uintptr(fd), ptmx.Name())
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, nil, err
	}
	mu.Lock()
	children[cmd] = struct{}{}
	mu.Unlock()
	return master, cmd, nil
}

func reap(cmd *exec.Cmd) {
	cmd.Wait()
	mu.Lock()
	delete(children, cmd)
	mu.Unlock()
}
