package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/protocol"
)

// BenchmarkPTYThroughput: `cat` of a 64 MiB text file on a terminal, read
// directly from a bare PTY master (the limit) and through the agent to a
// client (TTY mode). Both terminals are 24x80 with the kernel's default
// termios (the agent adds IUTF8, which changes nothing on output), so both
// carry the same bytes: the file with every \n turned into \r\n (ONLCR).
// MiB/s counts file bytes over the time from starting cat to its exit with
// all output read.
func BenchmarkPTYThroughput(b *testing.B) {
	const size = 64 * mib
	ctx := benchCtx(b, 5*time.Minute)
	file, n, lines := textFile(b, size)
	want := n + lines // ONLCR
	url := inProcAgent(b, agent.Options{})
	c, err := dial(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var raw, via []float64
	for i := range reps {
		settle()
		got, d, err := rawPTYCat(ctx, file)
		if err != nil {
			b.Fatalf("bare PTY cat: %v", err)
		}
		if got != want {
			b.Fatalf("bare PTY cat: read %d bytes, want %d (%d file bytes + %d CRs)", got, want, n, lines)
		}
		raw = append(raw, mibps(n, d))

		settle()
		out, _, d, err := agentCat(ctx, c, file, true)
		if err != nil {
			b.Fatalf("agent TTY cat: %v", err)
		}
		if out != want {
			b.Fatalf("agent TTY cat: read %d bytes, want %d (%d file bytes + %d CRs)", out, want, n, lines)
		}
		via = append(via, mibps(n, d))
		b.Logf("rep %d: bare PTY %.1f MiB/s, agent %.1f MiB/s", i+1, raw[i], via[i])
	}
	r, a := median(raw), median(via)
	report(b, map[string]float64{"raw_MiB/s": r, "agent_MiB/s": a, "ratio": a / r})
	verdict(b, "agent/raw PTY throughput", a/r, ">=", 0.95)
}

// rawPTYCat runs cat FILE on a fresh 24x80 PTY and counts what the master
// yields until EIO (the slave side closed).
func rawPTYCat(ctx context.Context, file string) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	cmd := exec.Command("cat", file)
	m, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: protocol.DefaultRows, Cols: protocol.DefaultCols})
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()
	n, rerr := drain(eioIsEOF{m})
	werr := cmd.Wait()
	d := time.Since(t0)
	if ctx.Err() != nil {
		return n, d, ctx.Err()
	}
	return n, d, errors.Join(rerr, werr)
}

// eioIsEOF turns the PTY master's EIO (no slave left) into io.EOF.
type eioIsEOF struct{ r io.Reader }

func (e eioIsEOF) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	return n, err
}

// agentCat starts cat FILE in the agent, drains its output and waits for
// its exit. The time runs from the start request to Wait's return.
func agentCat(ctx context.Context, c *client.Client, file string, tty bool) (stdout, stderr int64, d time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"cat", file}, TTY: tty})
	if err != nil {
		return 0, 0, 0, err
	}
	defer p.Close()
	stop := context.AfterFunc(ctx, func() { p.Close() })
	defer stop()
	errc := make(chan error, 1)
	go func() {
		var err error
		stderr, err = drain(p.Stderr)
		errc <- err
	}()
	stdout, err = drain(p.Stdout)
	err = errors.Join(err, <-errc, p.Wait())
	d = time.Since(t0)
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return stdout, stderr, d, err
}

// BenchmarkPipeThroughput: `cat` of a 256 MiB file with plain pipes through
// the agent to a client, next to the WebSocket loopback limit: a gorilla
// server writing the same total in 32 KiB binary messages to a gorilla
// client on 127.0.0.1 (same buffer sizes as the agent and the client).
func BenchmarkPipeThroughput(b *testing.B) {
	const size = 256 * mib
	ctx := benchCtx(b, 5*time.Minute)
	file, n, _ := textFile(b, size)
	url := inProcAgent(b, agent.Options{})
	c, err := dial(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var lim, via []float64
	for i := range reps {
		settle()
		got, d, err := wsLoopback(ctx, n)
		if err != nil {
			b.Fatalf("websocket loopback: %v", err)
		}
		if got != n {
			b.Fatalf("websocket loopback: read %d bytes, want %d", got, n)
		}
		lim = append(lim, mibps(n, d))

		settle()
		out, errb, d, err := agentCat(ctx, c, file, false)
		if err != nil {
			b.Fatalf("agent pipe cat: %v", err)
		}
		if out != n || errb != 0 {
			b.Fatalf("agent pipe cat: read %d stdout and %d stderr bytes, want %d and 0", out, errb, n)
		}
		via = append(via, mibps(n, d))
		b.Logf("rep %d: websocket loopback %.0f MiB/s, agent %.0f MiB/s", i+1, lim[i], via[i])
	}
	l, a := median(lim), median(via)
	report(b, map[string]float64{"ws_limit_MiB/s": l, "agent_MiB/s": a, "ratio": a / l})
	verdict(b, "agent pipe throughput MiB/s", a, ">=", 300)
}

// wsLoopback sends total bytes in 32 KiB binary messages from a gorilla
// server to a gorilla client over loopback and times dial to last byte.
func wsLoopback(ctx context.Context, total int64) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	msg := make([]byte, 32<<10)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	up := websocket.Upgrader{ReadBufferSize: 32 << 10, WriteBufferSize: 64 << 10}
	srvErr := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			srvErr <- err
			return
		}
		defer ws.Close()
		for sent := int64(0); sent < total; {
			k := min(int64(len(msg)), total-sent)
			if err := ws.WriteMessage(websocket.BinaryMessage, msg[:k]); err != nil {
				srvErr <- err
				return
			}
			sent += k
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		srvErr <- nil
	}))
	defer srv.Close()

	t0 := time.Now()
	d := websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 32 << 10}
	ws, _, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		return 0, 0, err
	}
	defer ws.Close()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	var n int64
	buf := make([]byte, 256<<10)
	for {
		typ, r, err := ws.NextReader()
		if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			break
		}
		if err != nil {
			return n, time.Since(t0), err
		}
		if typ != websocket.BinaryMessage {
			return n, time.Since(t0), fmt.Errorf("message type %d", typ)
		}
		k, err := drainBuf(r, buf)
		n += k
		if err != nil {
			return n, time.Since(t0), err
		}
	}
	dur := time.Since(t0)
	return n, dur, <-srvErr
}
