package bootstrapper

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/internal/backoff"
	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/che"
)

const (
	handshakeTimeout = 10 * time.Second
	// writeTimeout: a master that reads nothing for this long has gone.
	writeTimeout = 10 * time.Second
	// ackTimeout: a ping not answered for this long means the connection
	// is dead, even if writes still succeed (they only fill buffers).
	ackTimeout = 20 * time.Second
	// keepalive: an idle connection is pinged this often.
	keepalive = 10 * time.Second
	// pingEvery: while frames stream, a ping (an acknowledgement request)
	// follows every this many bytes.
	pingEvery = 64 << 10
	// maxBatch frames are written at most between two flushes.
	maxBatch = 512
	// firstWindow: a new connection writes this many frames, then asks
	// for their acknowledgement; every frame acknowledged on it lets one
	// more frame be in flight (slow start: the window doubles with every
	// round trip), up to the spool's window in bytes. So a connection the
	// peer drops after a handful of frames still advances the spool.
	firstWindow = 4
	// corkMax: a corked connection writes once this many bytes wait.
	corkMax = 256 << 10
	// firstBackoff bounds the wait before a reconnection after a
	// connection that made no progress; it doubles with each such
	// failure, up to the reconnect period (backoff.Options.First).
	firstBackoff = 500 * time.Millisecond
	// stableConn: a connection that lived this long counts as progress
	// even if no acknowledgement advanced (an idle one).
	stableConn = 5 * time.Second
	// reportTimeout bounds the last connection, the one that tells the
	// master how many events were not delivered (pusher.report).
	reportTimeout = 5 * time.Second
)

// FlushTimeout is the default time given to deliver what is left at the
// end: three reconnect periods, so that at least three reconnection
// attempts fit (the first at once, then one every period, the last with a
// period to deliver), and at least 10 s.
func FlushTimeout(reconnect time.Duration) time.Duration {
	return max(10*time.Second, 3*reconnect)
}

// pusher owns the connection to one endpoint of the master and writes its
// spool's events there, in order, reconnecting when the connection
// breaks: at once after a connection that made progress, else after a
// backoff (exponential with full jitter up to the reconnect period; see
// redial).
// Each connection starts with a small window of frames in flight that
// grows as acknowledgements come back (firstWindow).
//
// Delivery is acknowledged with WebSocket pings: after frames are
// written, a ping carries the last frame's sequence number; the master's
// WebSocket stack answers it with a pong (RFC 6455 requires it) only after
// reading every frame before it, so a pong acknowledges everything up to
// that number and the spool forgets it. Whatever was not acknowledged
// when a connection breaks is written again on the next one.
type pusher struct {
	flag   string // the flag that named the endpoint, for messages
	url    string
	header http.Header
	tls    *tls.Config
	sp     *spool
	// undelivered renders the event that stands for n events not
	// delivered at the end, the first from installer inst (nil: none).
	undelivered func(inst int, n uint64) unnumbered
	reconnect   time.Duration // <= 0: never reconnect (as Che with 0)
	backoff     *backoff.Backoff
	log         *slog.Logger

	// What the master said of itself on the last handshake
	// (che.HeaderMaxMessage, che.HeaderCapabilities): its largest frame in
	// bytes (0: not said), and whether it understands serverStatusChanged.
	maxMessage   atomic.Int64
	serverStatus atomic.Bool

	ctx      context.Context // ends the pusher; cancelled at the flush deadline
	cancel   context.CancelFunc
	finished chan struct{} // closed when no more events will come
	once     sync.Once
	done     chan struct{} // closed when run returns
}

func newPusher(flag, url, token string, tlsConf *tls.Config, sp *spool, reconnect time.Duration, log *slog.Logger) *pusher {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", token) // as Che: the raw token, no "Bearer "
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &pusher{
		flag: flag, url: url, header: h, tls: tlsConf, sp: sp, reconnect: reconnect,
		backoff: backoff.New(backoff.Options{First: min(firstBackoff, max(reconnect, time.Millisecond)), Max: reconnect, Stable: stableConn}),
		log:     log.With("endpoint", redactURL(url)), ctx: ctx, cancel: cancel,
		finished: make(chan struct{}), done: make(chan struct{}),
	}
}

// handshakeError is a refused WebSocket handshake.
type handshakeError struct {
	status int
	text   string
}

func (e *handshakeError) Error() string { return "handshake refused: " + e.text }

// permanent reports whether retrying cannot help (bad credentials, no
// such endpoint).
func (e *handshakeError) permanent() bool {
	return e.status >= 400 && e.status < 500 && e.status != 408 && e.status != 429
}

// connect makes the first connection, retrying (at once, then every
// reconnect period) until deadline unless the master refuses for good.
func (p *pusher) connect(ctx context.Context, deadline time.Time) (*conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for attempt := 0; ; attempt++ {
		c, err := p.dial(ctx)
		if err == nil {
			p.backoff.Connected()
			return c, nil
		}
		var he *handshakeError
		if p.reconnect <= 0 || (errors.As(err, &he) && he.permanent()) {
			return nil, fmt.Errorf("%s %s: %w", p.flag, redactURL(p.url), err)
		}
		p.log.Warn("cannot connect, retrying", "err", err, "attempt", attempt+1)
		if attempt > 0 {
			select {
			case <-time.After(p.reconnect):
			case <-ctx.Done():
				return nil, fmt.Errorf("%s %s: %w (gave up after %d attempts)", p.flag, redactURL(p.url), err, attempt+1)
			}
		}
	}
}

// conn is one WebSocket connection to the master.
type conn struct {
	ws      *websocket.Conn
	cork    *corkConn
	stream  *wsrpc.Stream
	rpc     *jsonrpc2.Conn
	readEnd chan struct{} // closed when reading has ended
	pong    chan uint64   // capacity 1: the last pong's seq, when nobody took it
	pongAt  atomic.Int64  // unix nanoseconds of the last pong
	acked   atomic.Int64  // frames written on this connection and acknowledged
}

// window returns how many frames c may have written and not acknowledged:
// firstWindow, plus one for every frame acknowledged on c.
func (c *conn) window() int {
	return int(min(firstWindow+c.acked.Load(), 1<<30))
}

func (p *pusher) dial(ctx context.Context) (*conn, error) {
	var cork *corkConn
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: handshakeTimeout,
		TLSClientConfig:  p.tls,
		WriteBufferSize:  64 << 10, // an event is one frame
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cork = &corkConn{Conn: nc}
			return cork, nil
		},
	}
	ws, resp, err := d.DialContext(ctx, p.url, p.header)
	if err != nil {
		if resp != nil {
			return nil, &handshakeError{status: resp.StatusCode, text: resp.Status}
		}
		return nil, err
	}
	p.learn(resp.Header)
	c := &conn{ws: ws, cork: cork, readEnd: make(chan struct{}), pong: make(chan uint64, 1)}
	c.stream = wsrpc.New(ws, wsrpc.Options{
		Limit:        1 << 20,
		OnBinary:     func([]byte) error { return nil }, // nothing binary is expected: ignored
		OnReadEnd:    func(error) { close(c.readEnd) },
		WriteTimeout: writeTimeout,
	})
	ws.SetPongHandler(func(data string) error {
		c.pongAt.Store(time.Now().UnixNano())
		if seq, err := strconv.ParseUint(data, 10, 64); err == nil {
			if p.sp == nil { // ReportFailure's: no spool
			} else if n := p.sp.ack(seq); n > 0 {
				c.acked.Add(int64(n))
				p.backoff.Progress()
			}
			select {
			case <-c.pong:
			default:
			}
			c.pong <- seq
		}
		return nil
	})
	// The master has nothing to ask: requests get "method not found",
	// notifications and stray responses are ignored, and what is not
	// JSON-RPC at all is answered with an error by wsrpc.
	h := jsonrpc2.HandlerWithError(func(context.Context, *jsonrpc2.Conn, *jsonrpc2.Request) (any, error) {
		return nil, &jsonrpc2.Error{Code: protocol.CodeMethodNotFound, Message: "the bootstrapper serves no methods"}
	}).SuppressErrClosed()
	c.rpc = jsonrpc2.NewConn(context.Background(), c.stream, h,
		jsonrpc2.SetLogger(slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)))
	return c, nil
}

// learn records what the master says of itself on a handshake's response.
func (p *pusher) learn(h http.Header) {
	limit, err := strconv.ParseInt(h.Get(che.HeaderMaxMessage), 10, 64)
	if err != nil || limit <= 0 {
		limit = 0
	}
	if old := p.maxMessage.Swap(limit); old != limit {
		p.log.Debug("the master's message limit", "bytes", limit)
	}
	p.serverStatus.Store(che.HasCapability(h.Get(che.HeaderCapabilities), che.CapServerStatus))
}

// close ends the connection, with a normal close frame when graceful, and
// waits until its reading has ended.
func (c *conn) close(graceful bool) {
	if graceful {
		c.stream.CloseWith(websocket.CloseNormalClosure, "bootstrapper done")
	}
	c.rpc.Close()
	<-c.readEnd
}

// start runs the pusher on its first connection, in a goroutine that
// finish waits for.
func (p *pusher) start(c *conn) {
	go func() {
		defer close(p.done)
		p.run(c)
	}()
}

// finish tells the pusher that no more events will come: it writes what
// is left, waits for it to be acknowledged (reconnecting if need be) for
// at most timeout, and closes the connection. It returns how many events
// were not delivered; when some were not, it tries to tell the master
// (report).
func (p *pusher) finish(timeout time.Duration) int {
	p.once.Do(func() { close(p.finished) })
	t := time.AfterFunc(timeout, p.cancel)
	<-p.done
	t.Stop()
	p.cancel()
	pending, last, _ := p.sp.stats()
	if pending > 0 && p.undelivered != nil {
		if err := p.report(uint64(pending), last); err != nil {
			p.log.Warn("could not report the events not delivered to the master", "err", err)
		} else {
			p.log.Info("reported the events not delivered to the master", "events", pending)
		}
	}
	return pending
}

// report tells the master, on one last connection of at most
// reportTimeout, that n events, the last numbered last, were not
// delivered: one installer/log event, lost n, numbered last so that a
// master that had all of them after all drops it as a duplicate. A flush
// that failed may have failed on something that passes now (a master
// back from a restart, a link that carries a frame or two): the master
// then knows, instead of showing the machine as it was for ever.
func (p *pusher) report(n, last uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), reportTimeout)
	defer cancel()
	c, err := p.dial(ctx)
	if err != nil {
		return err
	}
	defer c.close(true)
	return c.sendOne(ctx, p.undelivered(p.sp.oldest(), n).number(last), last)
}

// sendOne writes frame, numbered seq, and waits until the master has
// acknowledged it or ctx ends.
func (c *conn) sendOne(ctx context.Context, frame []byte, seq uint64) error {
	if err := c.stream.WriteText(frame); err != nil {
		return err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(writeTimeout)
	}
	if err := c.ws.WriteControl(websocket.PingMessage, strconv.AppendUint(nil, seq, 10), deadline); err != nil {
		return err
	}
	for {
		select {
		case got := <-c.pong:
			if got >= seq {
				return nil
			}
		case <-c.readEnd:
			return fmt.Errorf("the master closed the connection: %v", c.stream.Err())
		case <-ctx.Done():
			return fmt.Errorf("no acknowledgement: %w", context.Cause(ctx))
		}
	}
}

func (p *pusher) run(c *conn) {
	for {
		err := p.serve(c)
		c.close(err == nil)
		if err == nil || p.ctx.Err() != nil {
			return
		}
		p.log.Warn("connection lost", "err", err)
		if c = p.redial(c.acked.Load() > 0); c == nil {
			return
		}
		p.log.Info("reconnected")
	}
}

// redial reconnects after a connection ended: at once when it made
// progress (an acknowledgement advanced on it), else after p.backoff's
// wait, as after every failed attempt: a connection that ended without
// progress counts as a failure, so a master that accepts and drops every
// connection gets a few handshakes per period, not thousands per second.
// It returns nil when the pusher ends first, or when it is finishing and
// there is nothing left to send.
func (p *pusher) redial(progress bool) *conn {
	if p.reconnect <= 0 {
		<-p.ctx.Done() // Che's -logs-endpoint-reconnect-period 0: no reconnection
		return nil
	}
	var wait time.Duration
	if !progress {
		wait = p.backoff.Next()
	}
	for {
		if wait > 0 && p.backoff.Wait(p.ctx, wait) != nil {
			return nil
		}
		if p.finishing() && p.sp.empty() {
			return nil
		}
		c, err := p.dial(p.ctx)
		if err == nil {
			p.backoff.Connected()
			return c
		}
		wait = p.backoff.Next()
		p.log.Warn("reconnect failed", "err", err, "next_in", wait)
	}
}

func (p *pusher) finishing() bool {
	select {
	case <-p.finished:
		return true
	default:
		return false
	}
}

// serve writes the spool's events to c until c breaks (an error) or,
// once finishing, everything is acknowledged (nil).
func (p *pusher) serve(c *conn) error {
	p.sp.setConnected(true)
	defer p.sp.setConnected(false)
	var (
		buf      [][]byte
		last     uint64 // sequence number of the last frame written
		unpinged int    // bytes written since the last ping
		// Unix nanoseconds of the last ping, and of the first ping not
		// answered yet (0: none).
		pingAt, waitingSince int64
	)
	ping := func() error {
		now := time.Now()
		if waitingSince == 0 || c.pongAt.Load() >= waitingSince {
			waitingSince = now.UnixNano()
		}
		pingAt, unpinged = now.UnixNano(), 0
		return c.ws.WriteControl(websocket.PingMessage, strconv.AppendUint(nil, last, 10), now.Add(writeTimeout))
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	finish := p.finished
	for {
		var seq uint64
		buf, seq = p.sp.take(buf[:0], min(maxBatch, c.window()-p.sp.unacked()))
		if len(buf) > 0 {
			if err := p.write(c, buf); err != nil {
				return err
			}
			for _, f := range buf {
				unpinged += len(f)
			}
			last = seq
			clear(buf)
			if unpinged >= pingEvery {
				if err := ping(); err != nil {
					return err
				}
			}
			continue
		}
		answered := c.pongAt.Load() >= pingAt
		if unpinged > 0 && answered {
			if err := ping(); err != nil {
				return err
			}
		}
		if finish == nil && p.sp.empty() {
			return nil
		}
		select {
		case <-p.sp.ready:
		case <-finish:
			finish = nil
		case <-c.readEnd:
			return fmt.Errorf("the master closed the connection: %v", c.stream.Err())
		case now := <-tick.C:
			if waitingSince != 0 && c.pongAt.Load() < waitingSince && time.Duration(now.UnixNano()-waitingSince) > ackTimeout {
				return fmt.Errorf("no pong for %s: the connection is dead", ackTimeout)
			}
			if time.Duration(now.UnixNano()-pingAt) >= keepalive && answered {
				if err := ping(); err != nil {
					return err
				}
			}
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
	}
}

// write sends frames, one text frame each, in as few writes as the
// connection allows.
func (p *pusher) write(c *conn, frames [][]byte) error {
	c.cork.cork()
	for _, f := range frames {
		if err := c.stream.WriteText(f); err != nil {
			c.cork.uncork()
			return err
		}
	}
	return c.cork.uncork()
}

// corkConn lets a burst of frames go out in few system calls: while
// corked, writes collect in a buffer that uncork writes at once.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(b)
	}
	c.buf = append(c.buf, b...)
	if len(c.buf) >= corkMax {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flush()
}

func (c *corkConn) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 4*corkMax {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	return err
}
