package tunnel

import (
	"net"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/clock"
)

// NewConnClock is NewConn with read deadlines measured by clk.
func NewConnClock(ws *websocket.Conn, clk clock.Clock) net.Conn { return newConn(ws, clk) }

// CopyBuffersInUse is how many proxy copy buffers are taken.
func CopyBuffersInUse() int64 { return copyBuffersOut.Load() }
