package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// A proxied WebSocket (proxyUpgrade) is copied both ways with buffers
// taken from a pool only while bytes flow: an idle session holds
// probeSize bytes (agent → client) and, on a connection that cannot be
// polled for readability (TLS), readSize bytes (client → agent); never a
// copy buffer. httputil.ReverseProxy held two 32 KiB buffers per socket
// for its whole life.
const (
	// copySize is a pooled copy buffer: what one write to the client
	// (or one stream write to the agent) carries at most, so a burst to
	// many sessions at once takes 64 KiB each.
	copySize = 64 << 10
	// bulkSize is the buffer of a copy whose last read filled a copySize
	// one (a download, a port forward): the agent's largest frame
	// (wsconn's 256 KiB) and its header fit, a frame is one write.
	bulkSize = 256<<10 + 64
	// probeSize is what a read of the agent's stream waits with, held
	// by every proxied session for its life: a keystroke's echo (a
	// WebSocket frame of a few bytes) fits, larger output takes a pooled
	// buffer.
	probeSize = 256
	// readSize is the client-side read buffer when the connection cannot
	// be polled (TLS: crypto/tls may hold decrypted bytes the socket no
	// longer shows).
	readSize = 4 << 10
)

// shrinkAfter is how long the agent side of a proxied session must be
// quiet before yamux's receive buffer, grown by a burst, is let go (a
// variable for tests).
var shrinkAfter = time.Second

// shrinks counts the shrinks done (for tests).
var shrinks atomic.Int64

var (
	copyPool = sync.Pool{New: func() any { b := make([]byte, copySize); return &b }}
	bulkPool = sync.Pool{New: func() any { b := make([]byte, bulkSize); return &b }}
)

// copyBuffersOut counts the copy buffers taken and not given back (for
// tests: an idle session holds none).
var copyBuffersOut atomic.Int64

// getCopyBuffer takes a copy buffer, a bulk one when bulk is set.
func getCopyBuffer(bulk bool) *[]byte {
	copyBuffersOut.Add(1)
	if bulk {
		return bulkPool.Get().(*[]byte)
	}
	return copyPool.Get().(*[]byte)
}

func putCopyBuffer(bp *[]byte) {
	if len(*bp) == bulkSize {
		bulkPool.Put(bp)
	} else {
		copyPool.Put(bp)
	}
	copyBuffersOut.Add(-1)
}

// Small pooled buffers for the handshake through the stream.
var (
	handshakeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	handshakeWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// upgradeType returns the protocol h asks to switch to ("websocket"), or
// "" when it does not ask (no Upgrade token in Connection).
func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

// hopHeaders are the hop-by-hop headers a proxy removes (RFC 9110 §7.6.1),
// as httputil.ReverseProxy does.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// proxyUpgrade forwards r, a protocol switch (a WebSocket), through a new
// stream: the request as rewrite makes it, the agent's answer, then the
// bytes both ways until either side ends. It returns once both copies
// have ended and both connections are closed. A refusal by the agent
// (any status but 101) is passed on as an ordinary response.
func (s *Session) proxyUpgrade(w http.ResponseWriter, r *http.Request, prefix string) {
	typ := upgradeType(r.Header)
	out := r.Clone(r.Context())
	out.Body, out.ContentLength, out.Close = nil, 0, false
	removeHopHeaders(out.Header)
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		out.Header.Del(k) // as ReverseProxy with Rewrite
	}
	rewrite(&httputil.ProxyRequest{In: r, Out: out}, prefix)
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", typ)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // not Go's default
	}

	st, resp, br, err := s.exchange(r, out)
	if br != nil {
		defer func() {
			br.Reset(nil)
			handshakeReaders.Put(br)
		}()
	}
	if err != nil {
		if r.Context().Err() == nil {
			http.Error(w, s.closedError(err).Error(), http.StatusBadGateway)
		}
		return
	}
	conn, err := s.switchProtocols(w, st, resp, br, typ)
	if err != nil {
		st.Close()
		return
	}
	if detach := DetachFrom(r.Context()); detach != nil {
		ended := detach()
		go func() {
			defer ended()
			copyBoth(conn, st)
		}()
		return
	}
	copyBoth(conn, st)
}

// exchange sends req to the agent and reads its answer: over a data
// connection the agent dials back (data.go), or else over a stream of
// the tunnel. A data connection that fails before the agent answers, or
// does not answer within the dial-back timeout (a spare a middlebox
// dropped without a word), is closed and the request sent again over a
// stream, once: a client is not refused for a connection it never saw.
// On success st carries the switched protocol; br holds what the agent
// sent behind its answer (the caller returns it to handshakeReaders).
func (s *Session) exchange(r *http.Request, req *http.Request) (st net.Conn, resp *http.Response, br *bufio.Reader, err error) {
	dc, err := s.dialBack(r.Context())
	if err == nil {
		if resp, br, err = s.roundTrip(r, dc, req, s.dial.timeout); err == nil {
			s.noteDial(true, nil)
			return dc, resp, br, nil
		}
		dc.Close()
		if br != nil {
			br.Reset(nil)
			handshakeReaders.Put(br)
			br = nil
		}
		if r.Context().Err() != nil {
			return nil, nil, nil, err
		}
		err = fmt.Errorf("data connection failed before the agent answered: %w", err)
		s.dataRetries.Add(1)
	}
	s.noteDial(false, err)
	ys, err := s.ys.OpenStream()
	if err != nil {
		return nil, nil, nil, err
	}
	if resp, br, err = s.roundTrip(r, ys, req, 0); err != nil {
		ys.Close()
		return nil, nil, br, err
	}
	return ys, resp, br, nil
}

// roundTrip writes req to st and reads the agent's answer, within limit
// when it is not 0; the client going away ends it.
func (s *Session) roundTrip(r *http.Request, st net.Conn, req *http.Request, limit time.Duration) (*http.Response, *bufio.Reader, error) {
	stop := context.AfterFunc(r.Context(), func() { st.Close() })
	if limit > 0 {
		st.SetDeadline(time.Now().Add(limit))
	}
	resp, br, err := handshake(st, req)
	if limit > 0 {
		st.SetDeadline(time.Time{})
	}
	if !stop() || err != nil {
		return resp, br, fmt.Errorf("tunnel: handshake: %w", errors.Join(err, r.Context().Err()))
	}
	return resp, br, nil
}

// switchProtocols passes the agent's answer resp (read from st, with br
// holding what followed it) on and, when it is a 101, hijacks the
// client's connection and returns it, with the bytes either side sent
// behind its headers passed on. Otherwise it has answered the client and
// returns an error.
func (s *Session) switchProtocols(w http.ResponseWriter, st net.Conn, resp *http.Response, br *bufio.Reader, typ string) (net.Conn, error) {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if got := upgradeType(resp.Header); !strings.EqualFold(got, typ) {
			err := fmt.Errorf("the agent switched to protocol %q when %q was asked", got, typ)
			http.Error(w, err.Error(), http.StatusBadGateway)
			return nil, err
		}
	}
	removeHopHeaders(resp.Header)
	resp.Header.Del("Set-Cookie") // the agent sets no cookie on the master's origin
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// A refusal, or a path that does not switch (its body, whole).
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return nil, fmt.Errorf("tunnel: the agent answered %d", resp.StatusCode)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot switch protocols on this connection: "+err.Error(), http.StatusInternalServerError)
		return nil, err
	}
	h := w.Header().Clone()
	copyHeader(h, resp.Header)
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", typ)
	resp.Header, resp.Body = h, nil
	// What either side sent after its headers waits in a buffer: the
	// client's goes to the agent, the agent's to the client.
	err = resp.Write(brw)
	if err == nil {
		err = brw.Flush()
	}
	if err == nil && brw.Reader.Buffered() > 0 {
		err = writeBuffered(st, brw.Reader)
	}
	if err == nil && br.Buffered() > 0 {
		err = writeBuffered(conn, br)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// copyBoth copies between the client and the agent (a stream, or a data
// connection) until either side ends or fails, then closes both and
// returns once both copies have.
func copyBoth(conn, st net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if ys, ok := st.(*yamux.Stream); ok {
			fromStream(conn, ys)
		} else {
			copyTo(conn, st)
		}
		conn.Close()
		st.Close()
	}()
	copyTo(st, conn)
	conn.Close()
	st.Close()
	<-done
}

type detachKey struct{}

// WithDetach returns a copy of ctx with which Proxy serves a protocol
// switch on goroutines of its own once the client's connection is
// hijacked: it calls detach (on the handler's goroutine) and returns at
// once, so the server frees the
// handler's goroutine and its buffers, and it calls the function detach
// returned once both connections are closed. A handler whose cleanup
// (metrics, connection tracking) must wait for the end of the session
// runs it there. Without it, Proxy returns when the session ends.
func WithDetach(ctx context.Context, detach func() (ended func())) context.Context {
	return context.WithValue(ctx, detachKey{}, detach)
}

// DetachFrom returns the detach function ctx carries (WithDetach), or
// nil: for a handler that adds its own cleanup to an outer one's.
func DetachFrom(ctx context.Context) func() (ended func()) {
	d, _ := ctx.Value(detachKey{}).(func() func())
	return d
}

// handshake writes req to st and reads the agent's answer.
func handshake(st net.Conn, req *http.Request) (*http.Response, *bufio.Reader, error) {
	bw := handshakeWriters.Get().(*bufio.Writer)
	bw.Reset(st)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	handshakeWriters.Put(bw)
	if err != nil {
		return nil, nil, err
	}
	br := handshakeReaders.Get().(*bufio.Reader)
	br.Reset(st)
	resp, err := http.ReadResponse(br, req)
	return resp, br, err
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// writeBuffered writes what br holds to w.
func writeBuffered(w io.Writer, br *bufio.Reader) error {
	b, _ := br.Peek(br.Buffered())
	_, err := w.Write(b)
	return err
}

// copyTo copies conn's bytes to st until either fails: the client's to
// the agent, and a data connection's to the client. On a connection the
// poller can watch (plain TCP), it waits for bytes holding no buffer and
// reads them into a pooled one; otherwise it reads into a readSize buffer
// of its own.
func copyTo(st io.Writer, conn net.Conn) error {
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return pollCopy(st, conn, rc)
		}
	}
	buf := make([]byte, readSize)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// pollCopy is copyTo on a connection whose readability can be awaited:
// a buffer is taken only for a read that finds bytes (readPolled), one
// read system call per chunk.
func pollCopy(st io.Writer, conn net.Conn, rc syscall.RawConn) error {
	bulk := false // the last read filled its buffer
	write := writerFor(st)
	for {
		bp, n, err := readPolled(conn, rc, bulk)
		if bp == nil {
			return err
		}
		bulk = n == len(*bp)
		if n > 0 {
			if werr := write((*bp)[:n]); werr != nil {
				err = werr
			}
		}
		putCopyBuffer(bp)
		if err != nil {
			return err
		}
	}
}

// fromStream copies the agent's bytes to the client until either fails.
// It waits on the stream with a probeSize buffer; a read that fills it
// means more is queued, which is taken at once (a read with an expired
// deadline, so it never waits) into a pooled buffer and written in one
// piece. yamux keeps a stream's receive buffer at the largest burst it
// held: once a burst has come, the stream is shrunk (Stream.Shrink) when
// it has been quiet for shrinkAfter. A read that filled its buffer makes
// the next one take a bulk buffer.
func fromStream(conn net.Conn, st *yamux.Stream) error {
	probe := make([]byte, probeSize)
	past := time.Unix(1, 0)
	bulk := false          // the last read filled its copy buffer
	var shrink *time.Timer // armed by the first burst
	defer func() {
		if shrink != nil {
			shrink.Stop()
		}
	}()
	for {
		n, err := st.Read(probe)
		if shrink != nil && n > 0 {
			shrink.Reset(shrinkAfter)
		}
		if n < len(probe) || err != nil {
			if n > 0 {
				if _, werr := conn.Write(probe[:n]); werr != nil {
					return werr
				}
			}
			if err != nil {
				return err
			}
			continue
		}
		bp := getCopyBuffer(bulk)
		buf := *bp
		copy(buf, probe)
		st.SetReadDeadline(past)
		m, err := st.Read(buf[n:])
		st.SetReadDeadline(time.Time{})
		bulk = n+m == len(buf)
		if errors.Is(err, yamux.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) {
			err = nil
		}
		if shrink == nil {
			shrink = time.AfterFunc(shrinkAfter, func() { st.Shrink(); shrinks.Add(1) })
		}
		_, werr := conn.Write(buf[:n+m])
		putCopyBuffer(bp)
		if werr != nil {
			return werr
		}
		if err != nil {
			return err
		}
	}
}
