package agent_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/protocol"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Run serves on its listener until its context ends, then shuts down:
// children are hung up (and killed after the grace period), and the
// listener is closed.
func TestRunServesUntilCanceled(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() {
		ran <- agent.Run(ctx, agent.RunOptions{
			Options:      agent.Options{Token: token, Logger: testLogger(t)},
			ServeOptions: agent.ServeOptions{Listener: ln, Grace: 100 * time.Millisecond},
		})
	}()
	c, err := client.Dial(ctxT(t), client.Options{URL: "ws://" + addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var info protocol.ProcessInfo
	if err := c.Call(ctxT(t), protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", "trap '' HUP TERM; sleep 1000"}}, &info); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run after cancel: %v; want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := syscall.Kill(info.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child %d still exists after Run returned (kill 0 = %v)", info.PID, err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Run returned", addr)
	}
}

// Run refuses options it cannot serve, and closes the listener it was
// given.
func TestRunRefusesBadOptions(t *testing.T) {
	cases := []struct {
		name    string
		o       agent.RunOptions
		listen  bool
		wantErr string
	}{
		{name: "no token", listen: true, wantErr: "no token"},
		{name: "nothing to serve on", o: agent.RunOptions{Options: agent.Options{Token: token}}, wantErr: "nothing to serve on"},
		{name: "bad master url", listen: true, o: agent.RunOptions{
			Options:      agent.Options{Token: token},
			ServeOptions: agent.ServeOptions{Master: &agent.MasterOptions{URL: "http://master"}},
		}, wantErr: `master "http://master"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var addr string
			if tc.listen {
				ln := listen(t)
				addr = ln.Addr().String()
				tc.o.Listener = ln
			}
			err := agent.Run(ctxT(t), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run: %v; want an error mentioning %q", err, tc.wantErr)
			}
			if addr == "" {
				return
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after Run failed", addr)
			}
		})
	}
}

// With Master, Run keeps a tunnel to URL/api/agent whose handshake names
// the machine, and serves the agent through it.
func TestRunThroughMaster(t *testing.T) {
	const machineToken = "machine-token-0123"
	headers := make(chan http.Header, 1)
	sessions := make(chan *tunnel.Session, 1)
	master := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/base/api/agent" {
			http.Error(w, "wrong path "+r.URL.Path, http.StatusNotFound)
			return
		}
		headers <- r.Header.Clone()
		s, err := tunnel.Accept(w, r, nil)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		sessions <- s
	}))
	defer master.Close()

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() {
		ran <- agent.Run(ctx, agent.RunOptions{
			Options: agent.Options{Token: token, Version: "v-test", Logger: testLogger(t)},
			ServeOptions: agent.ServeOptions{Master: &agent.MasterOptions{
				URL: "ws" + strings.TrimPrefix(master.URL, "http") + "/base/", Token: machineToken,
				RuntimeID: "ws:env:owner", MachineName: "dev",
			}},
		})
	}()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run after cancel: %v; want nil", err)
		}
	}()

	var h http.Header
	select {
	case h = <-headers:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not connect to the master")
	}
	for k, want := range map[string]string{
		"Authorization":           "Bearer " + machineToken,
		tunnel.HeaderRuntimeID:    "ws:env:owner",
		tunnel.HeaderMachineName:  "dev",
		tunnel.HeaderAgentVersion: "v-test",
		tunnel.HeaderProtocol:     protocol.Version,
	} {
		if got := h.Get(k); got != want {
			t.Errorf("handshake %s: %q; want %q", k, got, want)
		}
	}
	s := <-sessions
	defer s.Close()
	// Requests through the tunnel are trusted: no token needed.
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(ctxT(t), http.MethodPost, "/agent/v1/rpc", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`))
	s.Proxy("/agent").ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"version":"v-test"`) {
		t.Fatalf("agent.info through the tunnel: %d %s", rec.Code, rec.Body)
	}
}
