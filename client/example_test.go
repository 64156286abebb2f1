package client_test

import (
	"context"
	"errors"
	"io"
	"log"
	"os"

	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/protocol"
)

// The README's Go snippet, compiled: run make on an agent, stream its
// output, get its exit status, and reattach from the exact offsets after a
// dropped connection.
func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Options{URL: "ws://127.0.0.1:4444", Token: os.Getenv("PORTHOLE_TOKEN")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := c.Start(ctx, protocol.StartParams{Argv: []string{"make"}, TTY: false})
	if err != nil {
		log.Fatal(err)
	}
	go io.Copy(os.Stdout, p.Stdout)
	go io.Copy(os.Stderr, p.Stderr)
	for {
		err = p.Wait() // nil, *client.ExitError{Code, Signal}, or *client.DisconnectedError
		var lost *client.DisconnectedError
		if !errors.As(err, &lost) || lost.AgentShutDown() {
			break
		}
		// The process still runs: continue at p.Offsets(), nothing lost.
		if err := p.Reattach(ctx); err != nil {
			log.Fatal(err)
		}
	}
	var exit *client.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.ExitCode())
	}
}
