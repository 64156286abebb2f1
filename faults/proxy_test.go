//go:build faults

package faults

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is a TCP proxy in the machines' namespace, in front of the
// master: the machines connect to it on their loopback, and it connects
// across the link. It can delay every byte (delay, each direction) and
// cut each connection once it has carried cut bytes (both directions
// counted): the faults that iptables cannot make.
type proxy struct {
	addr  string // 127.0.0.1:PORT in the machines' namespace
	delay time.Duration
	cut   int64 // 0: never

	conns atomic.Int64 // connections accepted
	cuts  atomic.Int64 // connections cut
	wg    sync.WaitGroup
}

// startProxy starts a proxy to the master for c's machines and makes it
// their endpoint. It stops with the test.
func (c *cluster) startProxy(delay time.Duration, cut int64) *proxy {
	c.t.Helper()
	ln := listen(c.t, c.link.machines, "127.0.0.1:0")
	p := &proxy{addr: ln.Addr().String(), delay: delay, cut: cut}
	upstream := c.endpoint
	dial := dialer(c.link.machines)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(nc net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if add && ctx.Err() != nil {
			return false
		}
		if add {
			open[nc] = true
		} else {
			delete(open, nc)
		}
		return true
	}
	p.wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			p.wg.Go(func() { p.serve(ctx, dial, upstream, down, track) })
		}
	})
	c.t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		for nc := range open {
			nc.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	c.endpoint = p.addr
	return p
}

func (p *proxy) serve(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), upstream string, down net.Conn, track func(net.Conn, bool) bool) {
	defer down.Close()
	if !track(down, true) {
		return
	}
	defer track(down, false)
	up, err := dial(ctx, "tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	if !track(up, true) {
		return
	}
	defer track(up, false)
	var carried atomic.Int64
	var once sync.Once
	stop := func() {
		once.Do(func() {
			down.Close()
			up.Close()
		})
	}
	var wg sync.WaitGroup
	for _, pair := range [][2]net.Conn{{down, up}, {up, down}} {
		wg.Go(func() {
			p.pipe(pair[1], pair[0], &carried, stop)
		})
	}
	wg.Wait()
}

// chunk is bytes read, stamped with when they may be written.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies from src to dst, each chunk delay after it was read, until
// either end fails or the connection has carried p.cut bytes (then the
// last chunk is truncated to the cut and both ends are closed).
func (p *proxy) pipe(dst, src net.Conn, carried *atomic.Int64, stop func()) {
	q := make(chan chunk, 1024) // bytes in flight: the delay line
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now().Add(p.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		stop()        // both ends: the other direction ends too
		for range q { // let the reader end (its source is closed now)
		}
	}()
	for c := range q {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d) // the delay being simulated, not synchronisation
		}
		b := c.b
		if p.cut > 0 {
			total := carried.Add(int64(len(b)))
			if total >= p.cut {
				b = b[:max(0, int64(len(b))-(total-p.cut))]
				dst.Write(b)
				p.cuts.Add(1)
				return
			}
		}
		if _, err := dst.Write(b); err != nil {
			return
		}
	}
}
