// Package bootstraptest stands in for a Che master in tests and benchmarks
// of the bootstrapper: a WebSocket server on loopback that records the
// JSON-RPC 2.0 notifications it receives as protocol/che events, checks
// that each is one (a notification, its params well formed), and on
// request refuses handshakes, cuts connections and sends what a master
// should not.
package bootstraptest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/protocol/che"
)

// Params are the params of every bootstrapper event, Che's fields and
// porthole's, as a master reads them: che.Event.
type Params = che.Event

// Event is one notification received.
type Event struct {
	Method string
	Params Params
	Path   string // the endpoint it came to
	// Conn is the connection it came on, numbered from 1 per path in the
	// order their handshakes were accepted (before the client could see
	// them accepted, so that a client's first connection to a path is 1).
	Conn  int
	Frame []byte    // the frame as received
	At    time.Time // when it was read
}

func (e Event) String() string {
	p := e.Params
	switch {
	case e.Method == che.MethodInstallerLog:
		return fmt.Sprintf("%s %s %s %q", e.Method, p.Installer, p.Stream, p.Text)
	case p.Installer != "":
		return fmt.Sprintf("%s %s %s %s", e.Method, p.Installer, p.Status, p.Error)
	}
	return fmt.Sprintf("%s %s %s", e.Method, p.Status, p.Error)
}

// Frame is a message the receiver sends to each new connection.
type Frame struct {
	Binary bool
	Data   string
}

// Options shape a Receiver.
type Options struct {
	// Token, when set, must be the handshake's Authorization header;
	// others get 401.
	Token string
	// Refuse, when it returns true for the n-th handshake (from 1) on
	// path, answers it with 503.
	Refuse func(path string, n int) bool
	// Cut, when it returns true after a connection's frames-th frame,
	// closes the connection abruptly (no close frame). conn is as in
	// Event.Conn.
	Cut func(path string, conn, frames int) bool
	// Greet is sent to every connection after the handshake.
	Greet []Frame
	// OnEvent, when set, gets every event (on the connection's goroutine)
	// instead of the receiver keeping it.
	OnEvent func(Event)
	// Light skips the JSON decoding of each frame (about 5 µs, which would
	// make the receiver the bottleneck of a throughput benchmark): events
	// then carry only Method and, of their params, Status, Text and Seq,
	// picked out of the frame as the bootstrapper lays it out (seq last).
	// Frames are not checked.
	Light bool
	// TLS serves wss:// with a fresh self-signed certificate (CertPEM).
	TLS bool
	// Header is sent on every handshake's response: porthole-master's
	// che.HeaderMaxMessage and che.HeaderCapabilities, say. Without it the
	// receiver answers as Che's master, which sends neither.
	Header http.Header
}

// Receiver is a loopback WebSocket server recording bootstrapper events.
type Receiver struct {
	// URL is "ws://127.0.0.1:PORT" ("wss://" with TLS); endpoints are URL
	// + a path.
	URL string
	// CertPEM is the server's certificate, with TLS.
	CertPEM []byte

	o      Options
	srv    *http.Server
	served chan struct{}
	wg     sync.WaitGroup

	mu         sync.Mutex
	events     []Event
	replies    []string       // responses received (to the Greet requests)
	violations []string       // frames that are not JSON-RPC notifications or che events
	auth       []string       // Authorization headers seen
	handshakes map[string]int // attempted, by path
	numbered   map[string]int // accepted, by path: the last Event.Conn given
	conns      int            // upgraded, on every path
	open       map[*websocket.Conn]bool
	closed     bool
	changed    chan struct{} // closed and replaced on every change
}

// Start serves a receiver on 127.0.0.1 until tb ends.
func Start(tb testing.TB, o Options) *Receiver {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &Receiver{
		URL: "ws://" + ln.Addr().String(), o: o, served: make(chan struct{}),
		handshakes: map[string]int{}, numbered: map[string]int{}, open: map[*websocket.Conn]bool{}, changed: make(chan struct{}),
	}
	if o.TLS {
		cert, err := selfSigned()
		if err != nil {
			tb.Fatal(err)
		}
		r.URL = "wss://" + ln.Addr().String()
		r.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // refused TLS handshakes are expected
	go func() {
		defer close(r.served)
		r.srv.Serve(ln)
	}()
	tb.Cleanup(r.close)
	return r
}

// selfSigned makes a certificate for 127.0.0.1.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bootstraptest"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func (r *Receiver) close() {
	r.srv.Close()
	<-r.served
	r.mu.Lock()
	r.closed = true
	for ws := range r.open {
		ws.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// notify wakes waiters; r.mu is held.
func (r *Receiver) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	path := req.URL.Path
	r.mu.Lock()
	r.handshakes[path]++
	n := r.handshakes[path]
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	r.notify()
	r.mu.Unlock()
	if r.o.Token != "" && req.Header.Get("Authorization") != r.o.Token {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	if r.o.Refuse != nil && r.o.Refuse(path, n) {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	// The connection is numbered before the handshake's answer is
	// written: once the client has it, its number is taken.
	r.mu.Lock()
	r.numbered[path]++
	conn := r.numbered[path]
	r.mu.Unlock()
	ws, err := upgrader.Upgrade(w, req, r.o.Header)
	if err != nil {
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		ws.Close()
		return
	}
	r.conns++
	r.open[ws] = true
	r.wg.Add(1)
	r.notify()
	r.mu.Unlock()
	defer func() {
		ws.Close()
		r.mu.Lock()
		delete(r.open, ws)
		r.notify()
		r.mu.Unlock()
		r.wg.Done()
	}()
	for _, g := range r.o.Greet {
		typ := websocket.TextMessage
		if g.Binary {
			typ = websocket.BinaryMessage
		}
		if ws.WriteMessage(typ, []byte(g.Data)) != nil {
			return
		}
	}
	for frames := 1; ; frames++ {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		r.frame(path, conn, typ, data)
		if r.o.Cut != nil && r.o.Cut(path, conn, frames) {
			ws.UnderlyingConn().Close()
			return
		}
	}
}

// message is any JSON-RPC 2.0 message.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  *che.Event      `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

func (r *Receiver) frame(path string, conn, typ int, data []byte) {
	at := time.Now()
	if r.o.Light {
		ev := Event{Method: field(data, "method"), Path: path, Conn: conn, Frame: data, At: at}
		ev.Params.Status, ev.Params.Text = field(data, "status"), field(data, "text")
		if i := bytes.LastIndex(data, []byte(`"seq":`)); i >= 0 {
			digits := bytes.TrimRight(data[i+6:], "}")
			ev.Params.Seq, _ = strconv.ParseUint(string(digits), 10, 64)
		}
		r.deliver(ev)
		return
	}
	var m message
	var bad string
	switch err := json.Unmarshal(data, &m); {
	case typ != websocket.TextMessage:
		bad = "not a text frame"
	case err != nil:
		bad = "not JSON: " + err.Error()
	case m.JSONRPC != "2.0":
		bad = fmt.Sprintf("jsonrpc is %q", m.JSONRPC)
	case m.Method == "" && (m.Result != nil || m.Error != nil):
		r.mu.Lock()
		r.replies = append(r.replies, string(data))
		r.notify()
		r.mu.Unlock()
		return
	case m.Method == "":
		bad = "no method"
	case m.ID != nil:
		bad = "a request (it has an id), not a notification"
	case m.Params == nil:
		bad = "no params"
	}
	if bad != "" {
		r.violate(path, bad, data)
		return
	}
	if err := che.Validate(m.Method, m.Params); err != nil {
		r.violate(path, "not a well-formed event of protocol/che: "+err.Error(), data) // and delivered all the same
	}
	r.deliver(Event{Method: m.Method, Params: *m.Params, Path: path, Conn: conn, Frame: data, At: at})
}

func (r *Receiver) violate(path, what string, data []byte) {
	r.mu.Lock()
	r.violations = append(r.violations, fmt.Sprintf("%s: %s: %.200s", path, what, data))
	r.notify()
	r.mu.Unlock()
}

func (r *Receiver) deliver(ev Event) {
	if r.o.OnEvent != nil {
		r.o.OnEvent(ev)
		return
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.notify()
	r.mu.Unlock()
}

// field returns the string value of the first "key" in a frame (Light).
func field(data []byte, key string) string {
	i := bytes.Index(data, []byte(`"`+key+`":"`))
	if i < 0 {
		return ""
	}
	v := data[i+len(key)+4:]
	end := 0
	for end < len(v) && v[end] != '"' {
		if v[end] == '\\' {
			end++
		}
		end++
	}
	if end > len(v) {
		return ""
	}
	if bytes.IndexByte(v[:end], '\\') < 0 {
		return string(v[:end])
	}
	var s string
	json.Unmarshal(data[i+len(key)+3:i+len(key)+4+end+1], &s)
	return s
}

// Events returns the events received so far, in order of arrival.
func (r *Receiver) Events() []Event { return snapshot(r, &r.events) }

// Violations returns the frames received that were not JSON-RPC
// notifications, or whose params che.Validate refuses (those are
// delivered as events all the same).
func (r *Receiver) Violations() []string { return snapshot(r, &r.violations) }

// Replies returns the JSON-RPC responses received.
func (r *Receiver) Replies() []string { return snapshot(r, &r.replies) }

// Auth returns the Authorization header of every handshake.
func (r *Receiver) Auth() []string { return snapshot(r, &r.auth) }

// snapshot copies one of r's lists under its lock.
func snapshot[T any](r *Receiver, list *[]T) []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*list)
}

// Handshakes returns how many handshakes were attempted on every path.
func (r *Receiver) Handshakes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.handshakes {
		n += k
	}
	return n
}

// Connections returns how many connections were accepted, and how many
// are open.
func (r *Receiver) Connections() (accepted, open int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns, len(r.open)
}

// Wait waits until an event that match accepts has arrived (since the
// receiver started) and returns the events received so far; it fails tb
// when timeout passes first. Each event is looked at once.
func (r *Receiver) Wait(tb testing.TB, timeout time.Duration, what string, match func(Event) bool) []Event {
	tb.Helper()
	var evs []Event
	next := 0 // the first event not looked at
	r.waitUntil(tb, timeout, func() bool {
		for ; next < len(r.events); next++ {
			if match(r.events[next]) {
				evs = slices.Clone(r.events)
				return true
			}
		}
		return false
	}, func() string {
		return fmt.Sprintf("%s; %d events:\n%s", what, len(r.events), Summary(r.events, 40))
	})
	return evs
}

// WaitClosed waits until no connection is open and at least one was made.
func (r *Receiver) WaitClosed(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	r.waitUntil(tb, timeout, func() bool { return r.conns > 0 && len(r.open) == 0 },
		func() string { return "the connections to close" })
}

// waitUntil waits until done, called under r.mu, holds; it fails tb when
// timeout passes first, with what() in the message.
func (r *Receiver) waitUntil(tb testing.TB, timeout time.Duration, done func() bool, what func() string) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := done(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.mu.Lock()
			msg := what()
			r.mu.Unlock()
			tb.Fatalf("timed out after %s waiting for %s", timeout, msg)
		}
	}
}

// Has returns a condition for Wait (or slices.ContainsFunc): an event of
// method whose params pass match (nil: any).
func Has(method string, match func(Params) bool) func(Event) bool {
	return func(e Event) bool {
		return e.Method == method && (match == nil || match(e.Params))
	}
}

// Summary lists the last n events, one a line.
func Summary(evs []Event, n int) string {
	var b strings.Builder
	if len(evs) > n {
		fmt.Fprintf(&b, "  … %d more\n", len(evs)-n)
		evs = evs[len(evs)-n:]
	}
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s seq=%d conn=%d\n", e, e.Params.Seq, e.Conn)
	}
	return b.String()
}

// Dedup keeps the first copy of every event, by boot, endpoint and
// sequence number, as a porthole-aware master does, and checks that what
// is kept has no gap: each event follows the last one kept on its endpoint
// (seq+1), or is a lost-lines event standing for exactly the gap. It returns the
// events kept and how many duplicates were dropped.
func Dedup(evs []Event) (kept []Event, dups int, err error) {
	type key struct{ boot, path string }
	last := map[key]uint64{}
	for _, e := range evs {
		k := key{e.Params.BootID, e.Path}
		l := last[k]
		switch s := e.Params.Seq; {
		case s == 0:
			return kept, dups, fmt.Errorf("event without seq: %s", e)
		case s <= l:
			dups++
			continue
		case s != l+1 && (e.Params.Lost == 0 || s-l != e.Params.Lost):
			return kept, dups, fmt.Errorf("%s: seq %d follows %d: %d event(s) missing, unaccounted for", e.Path, s, l, s-l-1)
		}
		last[k] = e.Params.Seq
		kept = append(kept, e)
	}
	return kept, dups, nil
}
