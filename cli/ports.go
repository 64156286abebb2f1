package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"text/tabwriter"

	"github.com/porthole-dev/porthole/protocol"
)

// runPorts is `porthole ports [-w] [-o json]`: the TCP ports something
// listens on in the agent's machine; -w follows them, a line per change.
func runPorts(ctx context.Context, args []string, e env, stdout, stderr *os.File) error {
	fs := newFlagSet("ports", stderr)
	var cf clientFlags
	cf.register(fs, e)
	watch := fs.Bool("w", false, "watch: then print \"+ PORT ADDRESS\" and \"- PORT ADDRESS\" as ports open and close, until interrupted")
	output := fs.String("o", "table", "output: table or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return usageError{fmt.Sprintf("-o %q: want table or json", *output)}
	}
	c, err := cf.dial(ctx, e)
	if err != nil {
		return err
	}
	defer c.Close()
	if !protocol.AtLeast(c.Info().ProtocolVersion, "1.1") {
		return fmt.Errorf("the agent speaks protocol %s and cannot list ports (1.1 or later); upgrade it", c.Info().ProtocolVersion)
	}
	print := func(ps []protocol.ListeningPort) {
		if *output == "json" {
			json.NewEncoder(stdout).Encode(protocol.PortsResult{Ports: ps})
			return
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PORT\tADDRESS")
		for _, p := range ps {
			fmt.Fprintf(tw, "%d\t%s\n", p.Port, p.Address)
		}
		tw.Flush()
	}
	if !*watch {
		ps, err := c.Ports(ctx)
		if err != nil {
			return err
		}
		print(ps)
		return nil
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	changes := make(chan []protocol.ListeningPort, 16)
	if err := c.SubscribePorts(ctx, func(ps []protocol.ListeningPort) {
		select {
		case changes <- ps:
		case <-ctx.Done():
		}
	}); err != nil {
		return err
	}
	var last []protocol.ListeningPort
	first := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case ps := <-changes:
			switch {
			case first || *output == "json":
				print(ps)
			default:
				for _, p := range last {
					if !slices.Contains(ps, p) {
						fmt.Fprintf(stdout, "- %d %s\n", p.Port, p.Address)
					}
				}
				for _, p := range ps {
					if !slices.Contains(last, p) {
						fmt.Fprintf(stdout, "+ %d %s\n", p.Port, p.Address)
					}
				}
			}
			last, first = ps, false
		}
	}
}
