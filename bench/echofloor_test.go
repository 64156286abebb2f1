package bench

// Yardsticks for BenchmarkUserEcho, run in the same run as porthole so
// that its echo can be read against what any server on the same path
// costs, not only against the bare PTY:
//
//   - the Go floor (bench/floor): a minimal Go WebSocket terminal server,
//     gorilla/websocket, two goroutines per session, nothing else;
//   - socat, a C relay between one TCP connection and a PTY: no
//     WebSocket and no Go runtime, so the cost of the loopback hop and
//     one more process's two wake-ups per keystroke, and nothing else.
//
// Either is skipped with its reason when it cannot run (socat is a
// Debian package: apt-get install socat).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// floorEcho is the Go floor's echo side: one server for the run, a
// fresh PTY per socket.
func floorEcho(ctx context.Context, b *testing.B, argv ...string) *echoSide {
	sd := &echoSide{name: "Go floor (minimal server)"}
	srv, err := startServer(ctx, b, floor(b), func(addr string) []string { return []string{"-listen", addr} })
	if err != nil {
		sd.skipped = err.Error()
		return sd
	}
	b.Cleanup(func() { srv.stop(b) })
	q := url.Values{"cmd": {argv[0]}, "arg": argv[1:]}
	sd.watch = []watched{{"floor", srv.cmd.Process.Pid}}
	sd.open = func(ctx context.Context) (term, error) {
		ws, err := dialWS(ctx, "ws://"+srv.addr+"/attach?"+q.Encode(), nil, nil)
		if err != nil {
			return nil, err
		}
		return &rawTerm{ws: ws}, nil
	}
	return sd
}

// socatEcho is socat's echo side: a socat per terminal, listening for one
// connection, running the command on a PTY (SYSTEM:…,pty), relaying.
func socatEcho(b *testing.B, command string) *echoSide {
	sd := &echoSide{name: "socat (C, raw TCP)"}
	bin, err := exec.LookPath("socat")
	if err != nil {
		sd.skipped = "socat not installed (apt-get install socat)"
		return sd
	}
	if strings.Contains(command, ",") {
		sd.skipped = "the command holds a comma, which ends socat's SYSTEM address"
		return sd
	}
	// socat's pid changes with every terminal: the side watches the
	// current one, and echoRecord reads sd.watch after open.
	sd.watch = []watched{{"socat", 0}}
	sd.open = func(ctx context.Context) (term, error) {
		addr := testutil.FreeAddr(b)
		cmd := exec.Command(bin, "TCP-LISTEN:"+portOf(addr)+",bind=127.0.0.1,reuseaddr",
			"SYSTEM:"+command+",pty,setsid,ctty,stderr")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		c, err := dialUntil(ctx, addr, exited)
		if err != nil {
			stop()
			return nil, fmt.Errorf("socat: %w: %s", err, out.String())
		}
		sd.watch[0].pid = cmd.Process.Pid
		return &connTerm{Conn: c, stop: stop}, nil
	}
	return sd
}

// connTerm is a terminal on a raw TCP connection.
type connTerm struct {
	net.Conn
	stop func()
}

func (t *connTerm) Close() error {
	err := t.Conn.Close()
	t.stop()
	return err
}

// dialUntil dials addr until it answers, the server exits or ctx ends.
func dialUntil(ctx context.Context, addr string, exited <-chan struct{}) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		select {
		case <-exited:
			return nil, errors.New("exited before accepting")
		case <-ctx.Done():
			return nil, fmt.Errorf("no listener at %s: %w", addr, err)
		case <-time.After(5 * time.Millisecond): // poll interval while socat starts
		}
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// socatRelayEcho is the master hop's yardstick: the agent reached through
// socat relaying TCP (one forked socat per connection, C, no parsing), so
// that the echo the master adds can be read against what any relay
// process adds: two more loopback hops and two more wake-ups per
// keystroke.
func socatRelayEcho(b *testing.B, s *stack, argv ...string) *echoSide {
	sd := &echoSide{name: "porthole via socat relay"}
	bin, err := exec.LookPath("socat")
	if err != nil {
		sd.skipped = "socat not installed (apt-get install socat)"
		return sd
	}
	addr := testutil.FreeAddr(b)
	cmd := exec.Command(bin, "TCP-LISTEN:"+portOf(addr)+",bind=127.0.0.1,reuseaddr,fork", "TCP:"+s.agent.addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		sd.skipped = err.Error()
		return sd
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	c, err := dialUntil(context.Background(), addr, exited)
	if err != nil {
		sd.skipped = fmt.Sprintf("socat relay: %v: %s", err, out.String())
		return sd
	}
	c.Close()
	sd.watch = []watched{{"agent", s.agent.cmd.Process.Pid}}
	r := route{"http://" + addr, s.agentTok}
	sd.open = func(ctx context.Context) (term, error) { return r.open(ctx, argv...) }
	return sd
}
