package agent_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

func TestMain(m *testing.M) {
	// net/http lingers up to 500ms on a connection it closes after an
	// unread request body; that goroutine is the standard library's.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

const token = "test-token-0123456789"

// testAgent is an agent served on loopback for one test.
type testAgent struct {
	a    *agent.Agent
	addr string
	url  string
}

func startAgent(t *testing.T, o agent.Options) *testAgent {
	t.Helper()
	if o.Token == "" {
		o.Token = token
	}
	if o.Clock == nil {
		// The agent's time stands still unless a test moves it: a viewer
		// that keeps reading is never demoted however busy the machine
		// (TestHundredMiBByteExact lost bytes to a 1 s stall bound under
		// load), and no keepalive ping falls due. Tests of stalls and
		// pings bring their own clock.
		o.Clock = clocktest.New()
	}
	a, addr := agenttest.Start(t, o)
	return &testAgent{a: a, addr: addr, url: "ws://" + addr}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("PORTHOLE_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// The helpers the agent's other tests share with the contract suite.
var (
	ctxT = testutil.Ctx
	run  = agenttest.Run
)

func (ta *testAgent) dial(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), client.Options{URL: ta.url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestContract runs the agent's behaviour suite against an agent on
// loopback; internal/tunnel and master run it through the tunnel.
func TestContract(t *testing.T) {
	ta := startAgent(t, agent.Options{Logger: testLogger(t)})
	agenttest.Contract(t, ta.dial)
}

// bigFile writes n random bytes and returns the path and its sha256.
func bigFile(t *testing.T, n int) (string, [32]byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, sha256.Sum256(b)
}

func TestHundredMiBByteExact(t *testing.T) {
	const size = 100 << 20
	path, want := bigFile(t, size)
	ta := startAgent(t, agent.Options{})
	c := ta.dial(t)
	// Each process prints only once the client is attached and says go:
	// output written before the attach would fill the ring with no reader
	// and be evicted (Start is a start, then an attach).
	for _, tc := range []struct {
		name  string
		spec  protocol.StartParams
		ready string // printed before the process waits for go
	}{
		{"pipes", protocol.StartParams{Argv: []string{"sh", "-c", "read x; exec cat " + path}}, ""},
		// raw mode: no output processing, so the bytes are the file's;
		// no echo, so go is not printed.
		{"tty", protocol.StartParams{Argv: []string{"sh", "-c", "stty raw -echo; printf R; read x; exec cat " + path}, TTY: true}, "R"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			p, err := c.Start(ctx, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			go io.Copy(io.Discard, p.Stderr)
			if ready := make([]byte, len(tc.ready)); len(ready) > 0 {
				if _, err := io.ReadFull(p.Stdout, ready); err != nil || string(ready) != tc.ready {
					t.Fatalf("ready = %q, %v; want %q", ready, err, tc.ready)
				}
			}
			if _, err := p.Stdin.Write([]byte("go\n")); err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, p.Stdout)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(); err != nil {
				t.Fatal(err)
			}
			var got [32]byte
			h.Sum(got[:0])
			if n != size || got != want {
				t.Fatalf("received %d bytes, sha256 %x; want %d bytes, %x", n, got, size, want)
			}
		})
	}
}

func TestReattachAfterRingOverflowReportsGap(t *testing.T) {
	const ring = 64 << 10
	ta := startAgent(t, agent.Options{RingBytes: ring})
	c := ta.dial(t)
	ctx := ctxT(t)
	want := agenttest.SeqOutput(100000) // 588,895 bytes: nine rings
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"seq", "1", "100000"}}, &info); err != nil {
		t.Fatal(err)
	}
	for { // no viewer: output drains into the ring; wait for the exit
		var w protocol.ProcessInfo
		if err := c.Call(ctx, protocol.MethodWait, protocol.IDParams{ID: info.ID}, &w); err != nil {
			t.Fatal(err)
		}
		if w.State == protocol.StateExited {
			break
		}
	}
	p, err := c.Attach(ctx, info.ID, client.Offsets{Stdout: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go io.Copy(io.Discard, p.Stderr)
	got, _ := io.ReadAll(p.Stdout)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	lost := int64(len(want) - ring)
	gaps := p.Gaps()
	if len(gaps) != 1 || gaps[0].From != 1000 || gaps[0].To != lost || gaps[0].Stream != "stdout" {
		t.Fatalf("gaps %+v; want one stdout gap 1000..%d", gaps, lost)
	}
	if !bytes.Equal(got, want[lost:]) {
		t.Fatalf("after the gap got %d bytes, want the last %d identical", len(got), ring)
	}
}
