package client

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/wsconn"
	"github.com/porthole-dev/porthole/protocol"
)

// Conn is a byte stream to the agent: one forwarded TCP connection
// (DialPort) or one file copy. See package internal/wsconn.
type Conn = wsconn.Conn

// DialPort opens one TCP connection to port on the agent's machine
// (127.0.0.1, else [::1]), carried by a WebSocket (docs/protocol.md §19).
// Join it with a local connection (JoinPort), or Read, Write and
// CloseWrite it. An agent that cannot connect refuses with an
// *HTTPError (502) naming the port.
func DialPort(ctx context.Context, opts Options, port int) (*Conn, error) {
	ws, max, err := dialStream(ctx, opts, "/v1/ports/"+strconv.Itoa(port)+"/forward", "", protocol.SubprotocolForward)
	if err != nil {
		return nil, err
	}
	return wsconn.New(ws, streamOptions(opts, max)), nil
}

// JoinPort copies between local and c in both directions until both end,
// passing each end on, then closes both (see wsconn.Join).
func JoinPort(c *Conn, local wsconn.HalfConn) error { return wsconn.Join(c, local) }

// streamOptions are a byte-stream socket's: frames no larger than the
// agent reads (max, from its Porthole-Max-Message; 0: unknown).
func streamOptions(opts Options, max int) wsconn.Options {
	ping := opts.PingInterval
	if ping == 0 {
		ping = 15 * time.Second
	}
	frame := wsconn.DefaultFrameBytes
	if max > 0 {
		frame = min(frame, max)
	}
	return wsconn.Options{Limit: 1 << 20, PingInterval: ping, FrameBytes: frame}
}

// dialStream opens a WebSocket to path (with query) with the token and
// version headers, for the byte-stream endpoints.
func dialStream(ctx context.Context, opts Options, path, query, subprotocol string) (*websocket.Conn, int, error) {
	base, err := opts.base()
	if err != nil {
		return nil, 0, err
	}
	opts.setDialer()
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query
	h := http.Header{}
	h.Set("Authorization", "Bearer "+opts.Token)
	h.Set(protocol.HeaderProtocol, protocol.Version)
	d := *opts.Dialer
	d.Subprotocols = []string{subprotocol}
	ws, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil {
			e := &HTTPError{Status: resp.StatusCode, Message: readBody(resp)}
			if resp.StatusCode == http.StatusNotFound && e.Message == "404 page not found" {
				return nil, 0, fmt.Errorf("%w (the agent has no %s endpoint: it needs protocol %s or later)", e, path, protocol.Version)
			}
			return nil, 0, e
		}
		return nil, 0, fmt.Errorf("connect to agent %s: %w", opts.URL, err)
	}
	max, _ := strconv.Atoi(resp.Header.Get(protocol.HeaderMaxMessage))
	return ws, max, nil
}
