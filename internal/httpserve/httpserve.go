// Package httpserve is the HTTP server of porthole's servers (the master;
// the agent may use it too): the timeouts and the connection limits every
// server facing untrusted peers needs, in one place.
//
// Timeouts: a request's headers must arrive within ReadHeaderTimeout; an
// ordinary request's body within ReadTimeout and its response within
// WriteTimeout; a keep-alive connection idle for IdleTimeout is closed. A
// WebSocket upgrade (a request with "Upgrade: websocket") is exempt from
// ReadTimeout and WriteTimeout: it lives as long as its keepalive says
// (the WebSocket layers have their own ping and write timeouts), and its
// handshake is bounded by ReadHeaderTimeout.
//
// Limits: connections that are not serving a request (new ones before
// their first request, idle keep-alive ones) are "pending": at most
// MaxPending of them at once, at most MaxPendingPerIP from one address.
// A new connection over either limit is closed at once. A connection
// stops being pending while a request is served, and for good once
// hijacked (a WebSocket): so a peer that cannot authenticate holds at most
// MaxPendingPerIP connections, each for at most ReadHeaderTimeout or
// IdleTimeout, and cannot exhaust the descriptors real clients need.
package httpserve

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options are the limits; zero values mean the defaults below.
type Options struct {
	ReadHeaderTimeout time.Duration // default 10 s
	ReadTimeout       time.Duration // default 30 s
	WriteTimeout      time.Duration // default 5 min (large downloads)
	IdleTimeout       time.Duration // default 60 s
	MaxHeaderBytes    int           // default 64 KiB
	MaxPending        int           // default 512
	MaxPendingPerIP   int           // default 64
}

// The defaults of Options.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 5 * time.Minute
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxPending        = 512
	DefaultMaxPendingPerIP   = 64
)

func (o *Options) setDefaults() {
	dur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	num := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	dur(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	dur(&o.ReadTimeout, DefaultReadTimeout)
	dur(&o.WriteTimeout, DefaultWriteTimeout)
	dur(&o.IdleTimeout, DefaultIdleTimeout)
	num(&o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	num(&o.MaxPending, DefaultMaxPending)
	num(&o.MaxPendingPerIP, DefaultMaxPendingPerIP)
}

// New returns a server of h with o's timeouts and limits. Serve it as
// any http.Server; the limits apply to every listener.
func New(h http.Handler, o Options) *http.Server {
	srv, _ := newServer(h, o)
	return srv
}

// newServer is New, with the limiter (for tests).
func newServer(h http.Handler, o Options) (*http.Server, *limiter) {
	o.setDefaults()
	l := &limiter{o: o, conns: map[net.Conn]string{}, perIP: map[string]int{}}
	return &http.Server{
		Handler:           deadlines(h, o.ReadTimeout, o.WriteTimeout),
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ConnState:         l.connState,
	}, l
}

// pending returns how many pending connections come from ip.
func (l *limiter) pending(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perIP[ip]
}

// deadlines sets the read and write deadlines of every request but
// WebSocket upgrades.
func deadlines(h http.Handler, read, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsUpgrade(r) {
			now := time.Now()
			rc := http.NewResponseController(w)
			rc.SetReadDeadline(now.Add(read))
			rc.SetWriteDeadline(now.Add(write))
		}
		h.ServeHTTP(w, r)
	})
}

// IsUpgrade reports whether r asks for a protocol upgrade (a WebSocket).
func IsUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return r.Header.Get("Upgrade") != ""
			}
		}
	}
	return false
}

// limiter counts pending connections (see the package doc).
type limiter struct {
	o     Options
	mu    sync.Mutex
	conns map[net.Conn]string // pending connection → its IP
	perIP map[string]int
}

func (l *limiter) connState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew, http.StateIdle:
		if _, ok := l.conns[c]; ok {
			return
		}
		ip := remoteIP(c)
		if st == http.StateNew && (len(l.conns) >= l.o.MaxPending || l.perIP[ip] >= l.o.MaxPendingPerIP) {
			c.Close() // the server sees it closed and forgets it
			return
		}
		l.conns[c] = ip
		l.perIP[ip]++
	default: // active, hijacked, closed
		ip, ok := l.conns[c]
		if !ok {
			return
		}
		delete(l.conns, c)
		if l.perIP[ip]--; l.perIP[ip] <= 0 {
			delete(l.perIP, ip)
		}
	}
}

func remoteIP(c net.Conn) string {
	a := c.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return a
}
