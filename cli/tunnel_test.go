package cli_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

// tunnelMaster is an in-test master: it checks the agent's handshake
// headers, accepts its tunnel, and proxies /agent/ to it.
type tunnelMaster struct {
	url      string
	sessions chan *tunnel.Session
	headers  chan http.Header
}

func startTunnelMaster(t *testing.T, machineToken string) *tunnelMaster {
	t.Helper()
	m := &tunnelMaster{sessions: make(chan *tunnel.Session, 4), headers: make(chan http.Header, 4)}
	var mu sync.Mutex
	var cur []*tunnel.Session
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/agent", func(w http.ResponseWriter, r *http.Request) {
		m.headers <- r.Header.Clone()
		if r.Header.Get("Authorization") != "Bearer "+machineToken {
			http.Error(w, "bad machine token", http.StatusUnauthorized)
			return
		}
		s, err := tunnel.Accept(w, r, nil)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		mu.Lock()
		cur = append(cur, s)
		mu.Unlock()
		m.sessions <- s
	})
	mux.HandleFunc("/agent/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		var s *tunnel.Session
		if len(cur) > 0 {
			s = cur[len(cur)-1]
		}
		mu.Unlock()
		if s == nil {
			http.Error(w, "no agent", http.StatusBadGateway)
			return
		}
		s.Proxy("/agent").ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	m.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	t.Cleanup(func() {
		mu.Lock()
		for _, s := range cur {
			s.Close()
		}
		mu.Unlock()
		srv.Close()
	})
	return m
}

// `porthole agent -listen none -master URL` serves only through the
// master: the handshake carries the machine token and identification,
// children see neither token, and SIGTERM ends it with status 0. The same
// through `porthole entrypoint` with a chained command.
func TestAgentThroughMaster(t *testing.T) {
	t.Parallel()
	for _, cmdName := range []string{"agent", "entrypoint"} {
		t.Run(cmdName, func(t *testing.T) {
			t.Parallel()
			machineToken := randHex(16)
			m := startTunnelMaster(t, machineToken)
			args := []string{cmdName, "-listen", "none", "-master", m.url, "-runtime-id", "ws1:env:owner", "-machine-name", "dev", "-grace", "1s"}
			if cmdName == "entrypoint" {
				args = append(args, "--", "sleep", "1000")
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = append(baseEnv(), "PORTHOLE_MACHINE_TOKEN="+machineToken)
			var out testutil.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
				if t.Failed() {
					t.Logf("%s output:\n%s", cmdName, out.String())
				}
			})

			var h http.Header
			select {
			case h = <-m.headers:
			case <-time.After(waitTimeout):
				t.Fatal("the agent did not connect to the master")
			}
			for k, want := range map[string]string{
				"Authorization":           "Bearer " + machineToken,
				tunnel.HeaderRuntimeID:    "ws1:env:owner",
				tunnel.HeaderMachineName:  "dev",
				tunnel.HeaderProtocol:     protocol.Version,
				tunnel.HeaderAgentVersion: "dev",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("handshake %s: %q; want %q", k, got, want)
				}
			}
			s := <-m.sessions

			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			c, err := client.Dial(ctx, client.Options{URL: m.url + "/agent"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"sh", "-c", "echo ${PORTHOLE_MACHINE_TOKEN:-unset} ${PORTHOLE_TOKEN:-unset}"}})
			if err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			done := make(chan struct{})
			go func() { stdout.ReadFrom(p.Stdout); close(done) }()
			go io.Copy(io.Discard, p.Stderr)
			if err := p.Wait(); err != nil {
				t.Fatal(err)
			}
			<-done
			p.Close()
			if got := stdout.String(); got != "unset unset\n" {
				t.Fatalf("child saw tokens %q; want none", got)
			}
			c.Close()

			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				var ee *exec.ExitError
				switch {
				case cmdName == "agent" && err != nil:
					t.Fatalf("agent after SIGTERM: %v; want status 0", err)
				case cmdName == "entrypoint" && (!errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM)):
					t.Fatalf("entrypoint after SIGTERM: %v; want 143 (sleep killed by the forwarded SIGTERM)", err)
				}
				exited <- err
			case <-time.After(waitTimeout):
				t.Fatalf("no exit within %s of SIGTERM", waitTimeout)
			}
			select {
			case <-s.Done():
			case <-time.After(waitTimeout):
				t.Fatal("the master's session outlived the agent")
			}
		})
	}
}
