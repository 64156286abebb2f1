package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/protocol"
)

const (
	echoWarmup  = 200
	echoSamples = 2000
	// echoLine is how many keystrokes go on one line before a newline
	// empties the terminal's line buffer (4095 bytes at most).
	echoLine = 250
)

// terminal is one side of the echo benchmark: a `cat` on a terminal in
// canonical mode with ECHO, as a fresh PTY has. A typed byte comes back as
// the terminal's echo; a newline comes back as its echo (\r\n) and then as
// cat's copy of the line (the line and \r\n).
type terminal interface {
	io.Writer
	io.Reader
}

// echoRun types warmup+samples bytes one at a time and times each until its
// echo is read back. It returns the samples in microseconds.
func echoRun(ctx context.Context, t terminal) ([]float64, error) {
	buf := make([]byte, 4096)
	readN := func(want int) error {
		for got := 0; got < want; {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			n, err := t.Read(buf)
			if err != nil {
				return err
			}
			got += n
			if got > want {
				return fmt.Errorf("read %d bytes, want %d: %q", got, want, buf[:n])
			}
		}
		return nil
	}
	key := []byte{'x'}
	nl := []byte{'\n'}
	onLine := 0
	var us []float64
	for i := range echoWarmup + echoSamples {
		if onLine == echoLine {
			if _, err := t.Write(nl); err != nil {
				return nil, err
			}
			if err := readN(2 + onLine + 2); err != nil {
				return nil, fmt.Errorf("newline: %w", err)
			}
			onLine = 0
		}
		t0 := time.Now()
		if _, err := t.Write(key); err != nil {
			return nil, err
		}
		if err := readN(1); err != nil {
			return nil, fmt.Errorf("echo: %w", err)
		}
		d := time.Since(t0)
		onLine++
		if i >= echoWarmup {
			us = append(us, float64(d.Nanoseconds())/1e3)
		}
	}
	return us, nil
}

// agentTerminal is a TTY process in the agent, seen through the client.
type agentTerminal struct{ p *client.Process }

func (a agentTerminal) Write(b []byte) (int, error) { return a.p.Stdin.Write(b) }
func (a agentTerminal) Read(b []byte) (int, error)  { return a.p.Stdout.Read(b) }

// BenchmarkEchoLatency: keystroke to echo, one byte at a time, on `cat` in
// a terminal: through the agent (client stdin frame → agent → PTY → echo →
// agent → output frame → client) and on a bare PTY master (the limit).
// 2000 samples after 200 warm-up keystrokes, three runs each, interleaved;
// the medians of the runs' p50 and p99 are reported.
func BenchmarkEchoLatency(b *testing.B) {
	ctx := benchCtx(b, 3*time.Minute)
	url := inProcAgent(b, agent.Options{})
	c, err := dial(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var rawP50, rawP99, viaP50, viaP99, wsP50 []float64
	for i := range reps {
		settle()
		us, err := wsEcho(ctx)
		if err != nil {
			b.Fatalf("websocket echo: %v", err)
		}
		wsP50 = append(wsP50, percentile(us, 50))

		settle()
		us, err = rawEcho(ctx)
		if err != nil {
			b.Fatalf("bare PTY echo: %v", err)
		}
		rawP50 = append(rawP50, percentile(us, 50))
		rawP99 = append(rawP99, percentile(us, 99))

		settle()
		us, err = agentEcho(ctx, c)
		if err != nil {
			b.Fatalf("agent echo: %v", err)
		}
		viaP50 = append(viaP50, percentile(us, 50))
		viaP99 = append(viaP99, percentile(us, 99))
		b.Logf("rep %d: bare PTY p50 %.0f µs p99 %.0f µs; agent p50 %.0f µs p99 %.0f µs; websocket round trip p50 %.0f µs", i+1, rawP50[i], rawP99[i], viaP50[i], viaP99[i], wsP50[i])
	}
	r50, r99, a50, a99 := median(rawP50), median(rawP99), median(viaP50), median(viaP99)
	report(b, map[string]float64{
		"raw_p50_µs": r50, "raw_p99_µs": r99,
		"agent_p50_µs": a50, "agent_p99_µs": a99,
		"p50_ratio":     a50 / r50,
		"ws_rtt_p50_µs": median(wsP50),
	})
	verdict(b, "agent echo p50 µs", a50, "<=", 150)
	verdict(b, "agent echo p99 µs", a99, "<=", 350)
}

// wsEcho is the transport's share: a 1-byte binary message from a gorilla
// client to a gorilla echo server on loopback and back, same samples.
func wsEcho(ctx context.Context) ([]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			typ, m, err := ws.ReadMessage()
			if err != nil || ws.WriteMessage(typ, m) != nil {
				return
			}
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		return nil, err
	}
	defer ws.Close()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	key := []byte{'x'}
	var us []float64
	for i := range echoWarmup + echoSamples {
		t0 := time.Now()
		if err := ws.WriteMessage(websocket.BinaryMessage, key); err != nil {
			return nil, err
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			return nil, err
		}
		if i >= echoWarmup {
			us = append(us, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	return us, nil
}

func rawEcho(ctx context.Context) ([]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.Command("cat")
	m, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: protocol.DefaultRows, Cols: protocol.DefaultCols})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()
	us, err := echoRun(ctx, m)
	cmd.Process.Kill()
	m.Close()
	cmd.Wait()
	return us, err
}

func agentEcho(ctx context.Context, c *client.Client) ([]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"cat"}, TTY: true})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	stop := context.AfterFunc(ctx, func() { p.Close() })
	defer stop()
	us, err := echoRun(ctx, agentTerminal{p})
	if kerr := c.Kill(ctx, p.ID); kerr != nil && err == nil {
		err = kerr
	}
	go drain(p.Stdout) // whatever is left, until the exit closes it
	var ee *client.ExitError
	if werr := p.Wait(); werr != nil && !errors.As(werr, &ee) && err == nil {
		err = werr
	}
	return us, err
}

const connectRuns = 20

// BenchmarkConnectToPrompt: from client.Dial to the first output holding
// the prompt of an interactive shell (`/bin/sh -i`, PS1='$ ') in a TTY,
// next to the same shell started on a bare PTY (the limit). p50 of 20 runs
// each, interleaved.
func BenchmarkConnectToPrompt(b *testing.B) {
	ctx := benchCtx(b, 3*time.Minute)
	url := inProcAgent(b, agent.Options{})
	var raw, via []float64
	for range connectRuns {
		d, err := rawPrompt(ctx)
		if err != nil {
			b.Fatalf("bare PTY shell: %v", err)
		}
		raw = append(raw, float64(d.Nanoseconds())/1e6)
		d, err = agentPrompt(ctx, url)
		if err != nil {
			b.Fatalf("agent shell: %v", err)
		}
		via = append(via, float64(d.Nanoseconds())/1e6)
	}
	r, a := percentile(raw, 50), percentile(via, 50)
	b.Logf("bare PTY ms: %.2f", raw)
	b.Logf("agent ms:    %.2f", via)
	report(b, map[string]float64{"raw_p50_ms": r, "agent_p50_ms": a, "ratio": a / r})
}

var prompt = []byte("$ ")

// readPrompt reads r until the prompt appears.
func readPrompt(r io.Reader) error {
	var seen []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(seen, prompt) {
		n, err := r.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil {
			return fmt.Errorf("no prompt in %q: %w", seen, err)
		}
	}
	return nil
}

func shellEnv() []string { return append(os.Environ(), "PS1=$ ") }

func rawPrompt(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	t0 := time.Now()
	cmd := exec.Command("/bin/sh", "-i")
	cmd.Env = shellEnv()
	m, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: protocol.DefaultRows, Cols: protocol.DefaultCols})
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()
	err = readPrompt(m)
	d := time.Since(t0)
	m.Write([]byte("exit\n"))
	go drain(eioIsEOF{m})
	cmd.Wait()
	m.Close()
	return d, err
}

func agentPrompt(ctx context.Context, url string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	t0 := time.Now()
	c, err := dial(ctx, url)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"/bin/sh", "-i"}, Env: []string{"PS1=$ "}, TTY: true})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	stop := context.AfterFunc(ctx, func() { p.Close() })
	defer stop()
	err = readPrompt(p.Stdout)
	d := time.Since(t0)
	if err != nil {
		return d, err
	}
	if _, err := p.Stdin.Write([]byte("exit\n")); err != nil {
		return d, err
	}
	go drain(p.Stdout)
	return d, p.Wait()
}
