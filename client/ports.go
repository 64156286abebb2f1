package client

import (
	"context"
	"encoding/json"

	"github.com/porthole-dev/porthole/protocol"
)

// Ports returns the TCP ports something listens on in the agent's
// machine (docs/protocol.md §21).
func (c *Client) Ports(ctx context.Context) ([]protocol.ListeningPort, error) {
	var res protocol.PortsResult
	err := c.Call(ctx, protocol.MethodPortsList, struct{}{}, &res)
	return res.Ports, err
}

// SubscribePorts calls fn with every listening port now, and again each
// time the set changes, on the client's reading goroutine (fn must not
// call the client), until the client is closed.
func (c *Client) SubscribePorts(ctx context.Context, fn func([]protocol.ListeningPort)) error {
	c.portsMu.Lock()
	prev := c.ports
	c.ports = fn // before the call: the first event may come before Call returns
	c.portsMu.Unlock()
	err := c.Call(ctx, protocol.MethodPortsSubscribe, struct{}{}, nil)
	if err != nil {
		c.portsMu.Lock()
		c.ports = prev
		c.portsMu.Unlock()
	}
	return err
}

func (c *Client) onPorts(params json.RawMessage) {
	var res protocol.PortsResult
	if json.Unmarshal(params, &res) != nil {
		return
	}
	c.portsMu.Lock()
	fn := c.ports
	c.portsMu.Unlock()
	if fn != nil {
		fn(res.Ports)
	}
}
