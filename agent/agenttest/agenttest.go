// Package agenttest serves agents and handlers on loopback for tests and
// benchmarks, and stops them when the test ends, and holds the agent's
// contract suite (Contract), run against an agent directly and through a
// master.
package agenttest

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
)

// Serve serves h on a free loopback port until tb ends and returns its
// address, "127.0.0.1:PORT".
func Serve(tb testing.TB, h http.Handler) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return ln.Addr().String()
}

// Start creates an agent with o, serves it on loopback, and shuts it down
// (one second of grace for its children) when tb ends, before the server.
func Start(tb testing.TB, o agent.Options) (*agent.Agent, string) {
	tb.Helper()
	a, err := agent.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	addr := Serve(tb, a.Handler())
	tb.Cleanup(func() { // runs before Serve's cleanup
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx, time.Second)
	})
	return a, addr
}
