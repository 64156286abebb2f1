// Package client is porthole's Go client: it starts processes in an agent,
// attaches to them with stdin, stdout and stderr, resizes, signals and
// waits, and reattaches exactly where it left off after a broken
// connection.
package client

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
)

// Options configure a Client.
type Options struct {
	// URL is the agent's base URL: ws://host:port or wss://host:port.
	URL string
	// Token is the agent's token.
	Token string
	// Dialer is used for WebSockets; nil means a default dialer.
	Dialer *websocket.Dialer
	// TLS configures the default dialer for wss:// (nil: the system's
	// roots); ignored when Dialer is set.
	TLS *tls.Config
	// PingInterval keeps connections alive through proxies. Default 15s.
	PingInterval time.Duration
	// MaxMessageBytes bounds messages from the agent. Default 16 MiB.
	MaxMessageBytes int64
}

// base parses URL: ws or wss (http and https are taken as these).
func (o *Options) base() (*url.URL, error) {
	base, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("agent url %q: %w", o.URL, err)
	}
	switch base.Scheme {
	case "ws", "wss":
	case "http":
		base.Scheme = "ws"
	case "https":
		base.Scheme = "wss"
	default:
		return nil, fmt.Errorf("agent url %q: scheme must be ws or wss", o.URL)
	}
	return base, nil
}

func (o *Options) setDialer() {
	if o.Dialer == nil {
		o.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 64 << 10, WriteBufferSize: 32 << 10, TLSClientConfig: o.TLS}
	}
}

// Client talks to one agent over a control socket.
type Client struct {
	opts   Options
	base   *url.URL
	stream *wsrpc.Stream
	conn   *jsonrpc2.Conn
	hello  protocol.AgentInfo

	portsMu sync.Mutex
	ports   func([]protocol.ListeningPort) // SubscribePorts's
}

// Dial connects the control socket and reads the agent's hello. It fails
// with a clear error on a wrong token, an incompatible protocol version or
// an unreachable agent.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	base, err := opts.base()
	if err != nil {
		return nil, err
	}
	opts.setDialer()
	if opts.PingInterval == 0 {
		opts.PingInterval = 15 * time.Second
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 16 << 20
	}
	c := &Client{opts: opts, base: base}
	helloCh := make(chan protocol.AgentInfo, 1)
	stream, err := c.dial(ctx, "/v1/rpc", nil, protocol.SubprotocolRPC, nil)
	if err != nil {
		return nil, err
	}
	c.stream = stream
	c.conn = jsonrpc2.NewConn(context.Background(), stream, jsonrpc2.HandlerWithError(func(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
		if req.Method == protocol.EventPortsChanged && req.Params != nil {
			c.onPorts(*req.Params)
		}
		if req.Method == protocol.EventHello && req.Params != nil {
			var info protocol.AgentInfo
			if jsonUnmarshal(*req.Params, &info) == nil {
				select {
				case helloCh <- info:
				default:
				}
			}
		}
		return nil, nil
	}), quiet)
	select {
	case c.hello = <-helloCh:
	case <-c.conn.DisconnectNotify():
		return nil, errors.New("agent closed the connection before its hello")
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
	if err := protocol.CheckVersion(c.hello.ProtocolVersion); err != nil {
		c.Close()
		return nil, fmt.Errorf("agent %s: %w", opts.URL, err)
	}
	return c, nil
}

// dial opens a WebSocket to path with the token and version headers.
func (c *Client) dial(ctx context.Context, path string, query url.Values, subprotocol string, onBinary func([]byte) error) (*wsrpc.Stream, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+c.opts.Token)
	h.Set(protocol.HeaderProtocol, protocol.Version)
	d := *c.opts.Dialer
	d.Subprotocols = []string{subprotocol}
	ws, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil {
			msg := readBody(resp)
			return nil, &HTTPError{Status: resp.StatusCode, Message: msg}
		}
		return nil, fmt.Errorf("connect to agent %s: %w", c.opts.URL, err)
	}
	return wsrpc.New(ws, wsrpc.Options{
		Limit:        c.opts.MaxMessageBytes,
		OnBinary:     onBinary,
		PingInterval: c.opts.PingInterval,
		WriteTimeout: 30 * time.Second,
	}), nil
}

// HTTPError is the agent's refusal of a connection (bad token, origin,
// version, unknown process, bad offset).
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("agent refused: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Info returns the agent's hello: its version, protocol version and limits.
func (c *Client) Info() protocol.AgentInfo { return c.hello }

// Close closes the control socket. Processes keep running in the agent.
func (c *Client) Close() error {
	c.stream.CloseWith(protocol.CloseNormal, "client closed")
	<-c.conn.DisconnectNotify()
	return nil
}

// Done is closed when the control socket is closed, by Close or by the
// agent.
func (c *Client) Done() <-chan struct{} { return c.conn.DisconnectNotify() }

// Call makes one JSON-RPC call on the control socket.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	if result == nil {
		result = &protocol.Empty{}
	}
	return c.conn.Call(ctx, method, params, result)
}

// List returns every process the agent keeps.
func (c *Client) List(ctx context.Context) ([]protocol.ProcessInfo, error) {
	var res protocol.ListResult
	err := c.Call(ctx, protocol.MethodList, struct{}{}, &res)
	return res.Processes, err
}

// Get returns one process.
func (c *Client) Get(ctx context.Context, id string) (protocol.ProcessInfo, error) {
	var info protocol.ProcessInfo
	err := c.Call(ctx, protocol.MethodGet, protocol.IDParams{ID: id}, &info)
	return info, err
}

// Signal sends a signal (name or number) to a process's group.
func (c *Client) Signal(ctx context.Context, id, signal string) error {
	return c.Call(ctx, protocol.MethodSignal, protocol.SignalParams{ID: id, Signal: signal}, nil)
}

// Kill sends SIGKILL to a process's group.
func (c *Client) Kill(ctx context.Context, id string) error {
	return c.Call(ctx, protocol.MethodKill, protocol.IDParams{ID: id}, nil)
}

// Start starts a process and attaches to it from its first byte, so no
// output is missed.
func (c *Client) Start(ctx context.Context, spec protocol.StartParams) (*Process, error) {
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, spec, &info); err != nil {
		return nil, err
	}
	return c.Attach(ctx, info.ID, Offsets{})
}

// Offsets are the stream positions a client already has.
type Offsets struct{ Stdout, Stderr int64 }

// TokenSubprotocol is the subprotocol a browser offers to carry token.
func TokenSubprotocol(token string) string {
	return protocol.TokenSubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))
}

var errClosed = errors.New("client: process handle closed")

// quiet keeps jsonrpc2 from logging to the process's stderr.
var quiet = jsonrpc2.SetLogger(log.New(io.Discard, "", 0))
