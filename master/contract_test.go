package master_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// TestContract runs the agent's behaviour suite through porthole-master:
// clients with a client token on the master's agent proxy, an agent of
// this process connected to the master by its tunnel, as `porthole agent
// -master` connects.
func TestContract(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid, name = "w:e:o", "contract"
	clientToken := tm.clientToken(t)
	sub := subscribe(t, tm, clientToken, masterapi.SubscribeParams{RuntimeID: rid})

	a, err := agent.New(agent.Options{Token: "unused-the-tunnel-is-trusted"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- tunnel.Serve(ctx, tunnel.AgentOptions{
			URL: tm.WS + "/api/agent",
			Header: http.Header{
				"Authorization":          {"Bearer " + tm.machineToken(t, rid, name)},
				master.HeaderRuntimeID:   {rid},
				master.HeaderMachineName: {name},
			},
			Handler:    a.Handler(),
			Trust:      agent.TrustedContext,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		})
	}()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), wait)
		defer scancel()
		a.Shutdown(sctx, time.Second)
		cancel()
		if err := testutil.Recv(t, "the tunnel to end", served); !errors.Is(err, context.Canceled) {
			t.Errorf("tunnel.Serve = %v; want context.Canceled", err)
		}
	})
	sub.until(t, "the agent connected", func(ms map[string]*masterapi.Machine, _ map[string][]masterapi.Entry) bool {
		m := ms[rid+"/"+name]
		return m != nil && m.Agent.Connected
	})

	url := tm.WS + "/api/runtimes/" + rid + "/machines/" + name + "/agent"
	agenttest.Contract(t, func(t *testing.T) *client.Client {
		c, err := client.Dial(testutil.Ctx(t), client.Options{URL: url, Token: clientToken})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	})
}
