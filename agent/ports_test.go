package agent_test

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

func hasPort(ps []protocol.ListeningPort, want protocol.ListeningPort) bool {
	return slices.Contains(ps, want)
}

// ports.list and ports.changed follow a listener opening and closing.
func TestPortsChanged(t *testing.T) {
	clk := clocktest.New()
	ta := startAgent(t, agent.Options{Clock: clk})
	c := ta.dial(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want := protocol.ListeningPort{Port: ln.Addr().(*net.TCPAddr).Port, Address: "127.0.0.1"}
	ps, err := c.Ports(ctxT(t))
	if err != nil || !hasPort(ps, want) {
		t.Fatalf("ports.list: %v, %v; want %v in it", ps, err, want)
	}
	events := make(chan []protocol.ListeningPort, 64)
	if err := c.SubscribePorts(ctxT(t), func(ps []protocol.ListeningPort) { events <- ps }); err != nil {
		t.Fatal(err)
	}
	if ps := testutil.Recv(t, "the first ports.changed", events); !hasPort(ps, want) {
		t.Fatalf("first ports.changed %v: no %v", ps, want)
	}
	if err := c.SubscribePorts(ctxT(t), func([]protocol.ListeningPort) {}); err == nil {
		t.Error("a second ports.subscribe on the connection: no error")
	}
	ln.Close()
	// Other tests open and close listeners too: poll until ours is gone.
	for {
		clk.WaitDue(t, agent.DefaultPortPollInterval, 1)
		clk.Advance(agent.DefaultPortPollInterval)
		select {
		case ps := <-events:
			if !hasPort(ps, want) {
				return
			}
		case <-time.After(testutil.Wait):
			t.Fatal("no ports.changed without the closed listener")
		}
	}
}
