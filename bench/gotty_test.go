package bench

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// gottyModule is the peer the user benchmarks run beside porthole: a Go
// terminal server, built from the Go module proxy into a temporary
// GOPATH once per run. When it cannot be built (no network, the proxy
// refuses it) its lines are skipped with the reason, never failed.
const gottyModule = "github.com/sorenisanerd/gotty@v1.6.0"

var gottyBuild struct {
	once    sync.Once
	dir     string
	bin     string
	skipped string
}

// gottyBin returns gotty's binary, or why there is none.
func gottyBin(b *testing.B) (bin, skipped string) {
	gottyBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "porthole-bench-gotty-")
		if err != nil {
			gottyBuild.skipped = err.Error()
			return
		}
		gottyBuild.dir = dir // TestMain removes it (-modcacherw: the cache is removable)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", gottyModule)
		cmd.Env = append(os.Environ(), "GOPATH="+filepath.Join(dir, "gopath"), "GOBIN="+filepath.Join(dir, "bin"),
			"GOFLAGS=-modcacherw", "CGO_ENABLED=0", "GOTOOLCHAIN=local")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			var why []string
			for _, l := range strings.Split(string(out), "\n") {
				if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "go: downloading") {
					why = append(why, l)
				}
			}
			msg := strings.Join(why, " ")
			if len(msg) > 240 {
				msg = msg[:240] + "…"
			}
			gottyBuild.skipped = fmt.Sprintf("go install %s: %v: %s", gottyModule, err, msg)
			return
		}
		gottyBuild.bin = filepath.Join(dir, "bin", "gotty")
	})
	return gottyBuild.bin, gottyBuild.skipped
}

// gotty is a running gotty serving one command; every socket gets a
// fresh process running it.
type gotty struct {
	srv     *server
	skipped string
}

// startGotty starts gotty serving argv (writable, on loopback) and stops
// it when the benchmark ends; g.skipped says why there is none.
func startGotty(ctx context.Context, b *testing.B, argv ...string) *gotty {
	g, err := newGotty(ctx, b, argv...)
	if err != nil {
		b.Fatalf("gotty: %v", err)
	}
	if g.srv != nil {
		b.Cleanup(func() { g.srv.stop(b) })
	}
	return g
}

func newGotty(ctx context.Context, b *testing.B, argv ...string) (*gotty, error) {
	bin, skipped := gottyBin(b)
	if skipped != "" {
		return &gotty{skipped: skipped}, nil
	}
	srv, err := startServerAt(ctx, b, bin, func(addr string) []string {
		host, port, _ := strings.Cut(addr, ":")
		return append([]string{"--permit-write", "--address", host, "--port", port}, argv...)
	}, "/")
	if err != nil {
		return nil, err
	}
	return &gotty{srv: srv}, nil
}

// open opens a terminal on gotty (its webtty/ and server/ packages): the
// WebSocket at /ws (subprotocol webtty), the init message
// ({"Arguments","AuthToken"}), then input as '1'+bytes and output as
// '1'+base64; gotty starts the command once it has the init message, and
// closes the socket without a close frame when the command exits.
func (g *gotty) open(ctx context.Context) (term, error) {
	ws, err := dialWS(ctx, "ws://"+g.srv.addr+"/ws", []string{"webtty"}, nil)
	if err != nil {
		return nil, err
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"Arguments":"","AuthToken":""}`)); err != nil {
		ws.Close()
		return nil, err
	}
	return &rawTerm{ws: ws, encode: gottyInput, decode: gottyOutput, endIsEOF: true}, nil
}

func gottyInput(p []byte) (int, []byte) {
	return websocket.TextMessage, append([]byte{'1'}, p...)
}

// gottyOutput decodes an Output message ('1' and base64); gotty's other
// messages (window title, preferences, reconnect, pong) carry no output.
func gottyOutput(typ int, msg []byte) ([]byte, error) {
	if len(msg) == 0 || msg[0] != '1' {
		return nil, nil
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(msg)-1))
	n, err := base64.StdEncoding.Decode(out, msg[1:])
	if err != nil {
		return nil, fmt.Errorf("gotty output message: %w", err)
	}
	return out[:n], nil
}

// gottySessionsOnce runs a fresh gotty serving `sleep 3600` with n
// sockets open and returns its RSS growth per session (KiB).
func gottySessionsOnce(ctx context.Context, b *testing.B, n int) (kib float64, skipped string, err error) {
	g, err := newGotty(ctx, b, "sleep", "3600")
	if err != nil || g.skipped != "" {
		return 0, g.skipped, err
	}
	defer g.srv.stop(b)
	time.Sleep(500 * time.Millisecond)
	r0, _, err := g.srv.rss(3, 200*time.Millisecond)
	if err != nil {
		return 0, "", err
	}
	terms, err := fanOut(ctx, n, g.open)
	defer func() {
		for _, t := range terms {
			t.Close()
		}
	}()
	if err != nil {
		return 0, "", fmt.Errorf("after %d sessions: %w", len(terms), err)
	}
	if err := waitChildren(ctx, g.srv.cmd.Process.Pid, n); err != nil {
		return 0, "", fmt.Errorf("gotty: %w", err)
	}
	time.Sleep(time.Second)
	r1, _, err := g.srv.rss(3, 300*time.Millisecond)
	if err != nil {
		return 0, "", err
	}
	return float64(r1-r0) / float64(n), "", nil
}
