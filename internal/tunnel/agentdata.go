package tunnel

// The agent's side of data connections (data.go): the control request
// served on the tunnel, the dial back to the master, and the server of
// the connections it dialled.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dataDialTimeout bounds one dial back (connect, TLS, handshake) beside
// the master's own deadline, which the control request carries.
const dataDialTimeout = 10 * time.Second

// dataServer serves the data connections of one tunnel with the
// tunnel's handler and trust: an http.Server over a listener that
// serveDial feeds. They end with the tunnel (close).
type dataServer struct {
	o      *AgentOptions
	u      *url.URL // the master's tunnel URL, http:// or https://
	log    *slog.Logger
	srv    *http.Server
	ln     *connListener
	served chan error
	ctx    context.Context // ends with the tunnel: dials in progress end
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // dialled, possibly closed since (prune)
}

func newDataServer(o *AgentOptions, log *slog.Logger) (*dataServer, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "ws", "http", 1) // ws→http, wss→https
	ctx, cancel := context.WithCancel(context.Background())
	d := &dataServer{o: o, u: u, log: log, ln: newConnListener(), served: make(chan error, 1),
		ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	d.srv = &http.Server{
		// No ReadHeaderTimeout: a spare data connection waits for its
		// request as long as the master keeps it (the master dialled
		// for it, and its tunnel bounds it).
		Handler:  o.Handler,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	// A data connection carries one request (the master sends one).
	d.srv.SetKeepAlivesEnabled(false)
	if o.Trust != nil {
		d.srv.ConnContext = func(ctx context.Context, _ net.Conn) context.Context { return o.Trust(ctx) }
	}
	go func() { d.served <- d.srv.Serve(d.ln) }()
	return d, nil
}

// handler is the tunnel's handler: DialPath, then o.Handler.
func (d *dataServer) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == DialPath {
			d.serveDial(w, r)
			return
		}
		d.o.Handler.ServeHTTP(w, r)
	})
}

// serveDial answers the master's control request: it dials the data
// connection, hands it to the data server, and answers 200 once it is
// up, or 502 with the dial's error.
func (d *dataServer) serveDial(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, DialPath+" takes POST", http.StatusMethodNotAllowed)
		return
	}
	id := r.Header.Get(HeaderDialID)
	if id == "" || len(id) > maxDialID || strings.ContainsFunc(id, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9')
	}) {
		http.Error(w, HeaderDialID+": want 1 to 64 letters and digits", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dataDialTimeout)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	conn, err := d.dial(ctx, id)
	if err != nil {
		d.log.Debug("data connection not dialled", "err", err)
		http.Error(w, "dialling the master back: "+err.Error(), http.StatusBadGateway)
		return
	}
	if !d.add(conn) {
		conn.Close()
		http.Error(w, "the tunnel is ending", http.StatusServiceUnavailable)
		return
	}
	if !d.ln.give(conn) {
		conn.Close()
		http.Error(w, "the tunnel is ending", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// add tracks conn until close; false once closing. Closed connections
// are forgotten on the way (their socket says so).
func (d *dataServer) add(conn net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	for c := range d.conns {
		if isClosedConn(c) {
			delete(d.conns, c)
		}
	}
	d.conns[conn] = struct{}{}
	return true
}

// isClosedConn reports whether c has been closed: the agent's handlers
// own a hijacked connection and close it without telling the tunnel.
func isClosedConn(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	return rc.Control(func(uintptr) {}) != nil
}

// close ends every data connection of the tunnel and the server, within
// ctx for the requests still being served.
func (d *dataServer) close(ctx context.Context) {
	d.cancel()
	d.mu.Lock()
	d.closed = true
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	d.ln.Close()
	for c := range conns {
		c.Close()
	}
	if d.srv.Shutdown(ctx) != nil {
		d.srv.Close()
	}
	<-d.served
}

// dial connects to the master's tunnel URL (through the environment's
// HTTP proxy, if any; over TLS for wss://) and switches it to a data
// connection for id with the tunnel's headers (the machine token).
func (d *dataServer) dial(ctx context.Context, id string) (net.Conn, error) {
	addr := d.u.Host
	if d.u.Port() == "" {
		if d.u.Scheme == "https" {
			addr = net.JoinHostPort(d.u.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(d.u.Hostname(), "80")
		}
	}
	var nd net.Dialer
	proxy, err := http.ProxyFromEnvironment(&http.Request{URL: d.u})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var conn net.Conn
	if proxy != nil {
		conn, err = dialConnect(ctx, &nd, proxy, addr)
	} else {
		conn, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	// ctx bounds the handshakes below too: through the socket itself,
	// which handshake may wrap (TLS) while the deadline is being set.
	raw := conn
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	conn, err = d.handshake(ctx, raw, id)
	if !stop() && err == nil {
		conn.Close()
		return nil, context.Cause(ctx)
	}
	if err != nil {
		return nil, errors.Join(err, ctx.Err())
	}
	return conn, nil
}

// handshake does TLS (https) and the data handshake on conn; on failure
// it closes conn.
func (d *dataServer) handshake(ctx context.Context, conn net.Conn, id string) (net.Conn, error) {
	if d.u.Scheme == "https" {
		cfg := &tls.Config{}
		if d.o.TLSConfig != nil {
			cfg = d.o.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = d.u.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"} // never h2: the connection is switched
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	req := &http.Request{Method: http.MethodGet, URL: d.u, Host: d.u.Host, Header: d.o.Header.Clone(), ProtoMajor: 1, ProtoMinor: 1}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", UpgradeData)
	req.Header.Set(HeaderDialID, id)
	req.Header.Set("User-Agent", "porthole-agent")
	resp, br, err := handshake(conn, req)
	if br != nil {
		defer func() {
			br.Reset(nil)
			handshakeReaders.Put(br)
		}()
	}
	switch {
	case err != nil:
		conn.Close()
		return nil, fmt.Errorf("data handshake: %w", err)
	case resp.StatusCode != http.StatusSwitchingProtocols:
		conn.Close()
		return nil, &HandshakeError{Status: resp.StatusCode, Body: readBody(resp)}
	case !strings.EqualFold(upgradeType(resp.Header), UpgradeData):
		conn.Close()
		return nil, fmt.Errorf("data handshake: the master switched to %q, not %s", upgradeType(resp.Header), UpgradeData)
	case br.Buffered() > 0:
		// The master sends nothing before the control request's answer.
		conn.Close()
		return nil, errors.New("data handshake: the master sent bytes behind its 101")
	}
	return conn, nil
}

// dialConnect opens a connection to addr through an HTTP proxy (CONNECT).
func dialConnect(ctx context.Context, nd *net.Dialer, proxy *url.URL, addr string) (net.Conn, error) {
	if proxy.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s: data connections go through http:// proxies only", redact(proxy))
	}
	paddr := proxy.Host
	if proxy.Port() == "" {
		paddr = net.JoinHostPort(proxy.Hostname(), "80")
	}
	conn, err := nd.DialContext(ctx, "tcp", paddr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := proxy.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 1<<10)
	resp, err := http.ReadResponse(br, req)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("proxy %s refused CONNECT: %s", redact(proxy), resp.Status)
	}
	if err == nil && br.Buffered() > 0 {
		err = fmt.Errorf("proxy %s sent bytes behind its CONNECT answer", redact(proxy))
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// connListener is a net.Listener of the connections given to it.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

// give hands c to Accept; false once closed.
func (l *connListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return dataAddr{} }

type dataAddr struct{}

func (dataAddr) Network() string { return "tunnel-data" }
func (dataAddr) String() string  { return "tunnel-data" }
