package bench

// porthole-master's benchmarks: ingest throughput into the store, the
// delivery latency of many machines' events to one subscriber, and
// terminals through the master's tunnel. The master runs in this process
// (master.New over a real bbolt store in a fresh temporary directory,
// served on 127.0.0.1) and everything reaches it over real WebSockets.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/tunnel"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol"
	"github.com/porthole-dev/porthole/protocol/che"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// benchMaster is porthole-master served on a loopback port of this
// process, over a bbolt store in its own temporary directory (on the
// same file system as the rest of the benchmarks, so commits really
// fsync). stop removes the directory.
type benchMaster struct {
	*master.Master
	signer *master.Signer
	st     *store.Bolt
	ts     *timedStore // st as the master sees it
	dir    string
	addr   string // 127.0.0.1:PORT
	srv    *http.Server
	served chan struct{}
	once   sync.Once
}

func startMaster(b *testing.B) *benchMaster {
	b.Helper()
	dir, err := os.MkdirTemp("", "porthole-bench-master-")
	if err != nil {
		b.Fatal(err)
	}
	fail := func(err error) {
		os.RemoveAll(dir)
		b.Fatal(err)
	}
	signer, err := master.LoadSigner(dir)
	if err != nil {
		fail(err)
	}
	st, err := store.Open(filepath.Join(dir, "porthole.db"), store.Options{})
	if err != nil {
		fail(err)
	}
	ts := &timedStore{Bolt: st}
	// The per-machine rate limit (1 MiB/s by default) is lifted: the
	// benchmarks measure what the master can take, not its throttle.
	m, err := master.New(master.Options{Store: ts, Signer: signer, Version: "bench", MachineRate: 1 << 40, MachineBurst: 1 << 40})
	if err != nil {
		st.Close()
		fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		fail(err)
	}
	bm := &benchMaster{Master: m, signer: signer, st: st, ts: ts, dir: dir, addr: ln.Addr().String(),
		srv: &http.Server{Handler: m.Handler()}, served: make(chan struct{})}
	go func() { defer close(bm.served); bm.srv.Serve(ln) }()
	b.Cleanup(bm.stop)
	return bm
}

// stop shuts the master down (its connections first), then the HTTP
// server and the store, and removes the directory.
func (bm *benchMaster) stop() {
	bm.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		bm.Shutdown(ctx)
		bm.srv.Shutdown(ctx)
		<-bm.served
		bm.st.Close()
		os.RemoveAll(bm.dir)
	})
}

func (bm *benchMaster) machineToken(b *testing.B, rid, name string) string {
	b.Helper()
	tok, err := bm.signer.MachineToken(rid, name)
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

func (bm *benchMaster) clientToken(b *testing.B) string {
	b.Helper()
	tok, err := bm.signer.ClientToken()
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// machineSeq returns the last journal seq of a machine, read through the
// HTTP API (committed state only).
func (bm *benchMaster) machineSeq(ctx context.Context, clientTok, rid, name string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+bm.addr+"/api/runtimes/"+rid+"/machines/"+name, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+clientTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var m masterapi.Machine
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET machine %s of %s: %s", name, rid, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return 0, err
	}
	return m.Seq, nil
}

// timedStore is the master's store with every Commit timed, to see how
// the master batches its writes (the master's group commit) and what a
// commit costs while it runs.
type timedStore struct {
	*store.Bolt
	mu      sync.Mutex
	commits []commitStat
}

type commitStat struct {
	d                 time.Duration
	entries, machines int
}

func (t *timedStore) Commit(b *store.Batch) error {
	t0 := time.Now()
	err := t.Bolt.Commit(b)
	d := time.Since(t0)
	t.mu.Lock()
	t.commits = append(t.commits, commitStat{d, len(b.Entries), len(b.Machines)})
	t.mu.Unlock()
	return err
}

// reset forgets the commits so far.
func (t *timedStore) reset() {
	t.mu.Lock()
	t.commits = nil
	t.mu.Unlock()
}

// summary describes the commits since the last reset.
func (t *timedStore) summary() string {
	t.mu.Lock()
	cs := slices.Clone(t.commits)
	t.mu.Unlock()
	if len(cs) == 0 {
		return "no commits"
	}
	var ds []float64
	var entries, machines int
	for _, c := range cs {
		ds = append(ds, float64(c.d.Microseconds())/1e3)
		entries += c.entries
		machines += c.machines
	}
	return fmt.Sprintf("%d commits, %.0f entries and %.0f machine documents each on average, commit time p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		len(cs), float64(entries)/float64(len(cs)), float64(machines)/float64(len(cs)), percentile(ds, 50), percentile(ds, 99), percentile(ds, 100))
}

// eventEncoder renders one machine's events as the bootstrapper does:
// the JSON-RPC envelope of jsonrpc2.Request, rendered once per method,
// around the params of package che (Che's fields, porthole's bootId, and
// the spool's seq last).
type eventEncoder struct {
	ev        che.MachineEvent
	boot      string
	installer string
	envelopes map[string][2][]byte
}

func newEventEncoder(rid, name string) (*eventEncoder, error) {
	id, err := che.ParseRuntimeID(rid)
	if err != nil {
		return nil, fmt.Errorf("runtime id: %w", err)
	}
	e := &eventEncoder{
		ev:   che.MachineEvent{MachineName: name, RuntimeID: id},
		boot: fmt.Sprintf("%016x", rand.Uint64()), installer: "org.bench.build",
		envelopes: map[string][2][]byte{},
	}
	for _, method := range []string{che.MethodBootstrapperStatus, che.MethodInstallerStatus, che.MethodInstallerLog} {
		mark := json.RawMessage(`{"porthole":"params"}`)
		b, err := json.Marshal(&jsonrpc2.Request{Method: method, Params: &mark, Notif: true})
		if err != nil {
			return nil, err
		}
		i := bytes.Index(b, mark)
		if i < 0 {
			return nil, fmt.Errorf("render %s envelope: params not found in %s", method, b)
		}
		e.envelopes[method] = [2][]byte{b[:i], b[i+len(mark):]}
	}
	return e, nil
}

// frame renders method's notification with params (which carry the seq).
func (e *eventEncoder) frame(method string, params any) []byte {
	p, err := json.Marshal(params)
	if err != nil {
		panic(fmt.Sprintf("bench: marshal %T: %v", params, err))
	}
	env := e.envelopes[method]
	f := make([]byte, 0, len(env[0])+len(p)+len(env[1]))
	f = append(f, env[0]...)
	f = append(f, p...)
	return append(f, env[1]...)
}

func (e *eventEncoder) at(t time.Time) che.MachineEvent {
	ev := e.ev
	ev.Time = t
	return ev
}

func (e *eventEncoder) bootstrapperStarting(t time.Time, seq uint64) []byte {
	return e.frame(che.MethodBootstrapperStatus, che.BootstrapperStatus{MachineEvent: e.at(t), Status: che.StatusStarting,
		Installers: []che.PlanInstaller{{ID: e.installer}}, BootID: e.boot, Seq: seq})
}

func (e *eventEncoder) installerStatus(t time.Time, status string, seq uint64) []byte {
	return e.frame(che.MethodInstallerStatus, che.InstallerStatus{MachineEvent: e.at(t), Status: status, Installer: e.installer, BootID: e.boot, Seq: seq})
}

func (e *eventEncoder) log(t time.Time, text string, seq uint64) []byte {
	return e.frame(che.MethodInstallerLog, che.InstallerLog{MachineEvent: e.at(t), Text: text, Installer: e.installer, Stream: che.StreamStdout, BootID: e.boot, Seq: seq})
}

// The frames the benchmarks write by hand are events of protocol/che,
// laid out as the bootstrapper lays them out: well formed, no id, seq
// last (bootstraptest's Light receiver reads it from there).
func TestBenchFrames(t *testing.T) {
	enc, err := newEventEncoder("ws:env:owner", "bench")
	if err != nil {
		t.Fatal(err)
	}
	head, mid, tail, err := lineFrame()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, c := range []struct {
		method string
		frame  []byte
		seq    uint64
	}{
		{che.MethodBootstrapperStatus, enc.bootstrapperStarting(now, 1), 1},
		{che.MethodInstallerStatus, enc.installerStatus(now, che.StatusRunning, 2), 2},
		{che.MethodInstallerLog, enc.log(now, logText(3), 3), 3},
		{che.MethodInstallerLog, []byte(head + "42" + mid + "42" + tail), 42},
	} {
		var m struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Method  string          `json:"method"`
			Params  *che.Event      `json:"params"`
		}
		if err := json.Unmarshal(c.frame, &m); err != nil {
			t.Fatalf("%s: %v", c.frame, err)
		}
		if m.JSONRPC != "2.0" || m.ID != nil || m.Method != c.method || m.Params == nil || m.Params.Seq != c.seq {
			t.Fatalf("%s: want a notification %s with seq %d", c.frame, c.method, c.seq)
		}
		if err := che.Validate(m.Method, m.Params); err != nil {
			t.Errorf("%s: %v", c.frame, err)
		}
		if want := fmt.Sprintf(`,"seq":%d}}`, c.seq); !bytes.HasSuffix(c.frame, []byte(want)) {
			t.Errorf("%s: does not end with %s", c.frame, want)
		}
	}
}

// logText is a typical build log line (about 70 characters).
func logText(i int) string {
	return fmt.Sprintf("[%7d] compiling src/pkg%03d/file%02d.go: ok (%d.%03d s)", i, i%997, i%89, i%7, i%1000)
}

// maskedFrame appends payload as one client text frame, masked with a
// zero key (RFC 6455 requires clients to mask; the key's value is the
// client's choice), so the bytes can go out unchanged.
func maskedFrame(dst, payload []byte) []byte {
	dst = append(dst, 0x81) // FIN, text
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	dst = append(dst, 0, 0, 0, 0)
	return append(dst, payload...)
}

const (
	// ingestLines is the number of log lines pushed per repetition, all
	// connections together.
	ingestLines = 100_000
	// storeBatch is the batch size of the store-alone reference.
	storeBatch = 1000
	// ingestTarget is the ingest target, lines stored per second.
	ingestTarget = 100_000
)

// BenchmarkMasterIngest: installer/log lines per second stored durably by
// the master, pushed by 1, 10 and 100 machines at once (one WebSocket
// each, its own machine token), ingestLines per repetition in total. Each
// connection's frames are rendered and masked beforehand and written in
// 64 KiB writes, as porthole's bootstrapper writes a backlog (it corks
// frames into few writes), so the sender costs the master little CPU. The
// time runs from the first write to the last connection's pong: the
// master answers a ping only once everything read before it is
// committed (fsync'd). Every machine's journal is then checked to hold
// all its lines. The reference is the store alone: store.Bolt.Commit of
// batches of storeBatch entries of the same JSON the master stores, over
// as many machines, with a machine document per machine per batch (the
// master rewrites the document of every machine a commit touches). Both
// start from an empty store; three repetitions each, interleaved, fresh
// store each time.
func BenchmarkMasterIngest(b *testing.B) {
	for _, conns := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("machines=%d", conns), func(b *testing.B) {
			ctx := benchCtx(b, 2*time.Minute)
			var via, ref []float64
			for i := range reps {
				settle()
				r, err := storeAlone(conns, ingestLines)
				if err != nil {
					b.Fatalf("store alone: %v", err)
				}
				ref = append(ref, r)
				settle()
				v, err := masterIngest(ctx, b, conns, ingestLines)
				if err != nil {
					b.Fatalf("master ingest: %v", err)
				}
				via = append(via, v)
				b.Logf("rep %d: store alone %.0f lines/s, master %.0f lines/s", i+1, ref[i], via[i])
			}
			v, r := median(via), median(ref)
			report(b, map[string]float64{"lines/s": v, "store_lines/s": r, "ratio": v / r, "of_target": v / ingestTarget})
			verdict(b, fmt.Sprintf("master ingest lines/s, %d machines", conns), v, ">=", ingestTarget)
		})
	}
}

// storeAlone commits lines entries over machines machines in batches of
// storeBatch to a fresh store and returns entries per second.
func storeAlone(machines, lines int) (float64, error) {
	dir, err := os.MkdirTemp("", "porthole-bench-store-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "porthole.db"), store.Options{})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	keys := make([]store.Key, machines)
	docs := make([][]byte, machines)
	seqs := make([]uint64, machines)
	for i := range keys {
		keys[i] = store.Key{Runtime: "bench:ingest:owner", Machine: fmt.Sprintf("m%03d", i)}
		doc, _ := json.Marshal(masterapi.Machine{RuntimeID: keys[i].Runtime, Name: keys[i].Machine, Status: masterapi.MachineStarting,
			BootID: "0123456789abcdef", Installers: []masterapi.Installer{{ID: "org.bench.build", Status: che.StatusRunning}},
			Servers: []masterapi.Server{}, Bootstrapper: masterapi.BootstrapperState{Connected: true, Status: che.StatusStarting, Since: time.Now()},
			Seq: uint64(lines / machines), Updated: time.Now(), Cursors: map[string]uint64{"0123456789abcdef /api/websocket": uint64(lines / machines)}})
		docs[i] = doc
	}
	now := time.Now()
	data := make([][]byte, lines)
	for i := range data {
		data[i], _ = json.Marshal(masterapi.Entry{Seq: uint64(i/machines + 1), Time: now, Type: masterapi.EntryLog,
			Installer: "org.bench.build", Text: logText(i), Stream: che.StreamStdout, BootID: "0123456789abcdef"})
	}
	batches := make([]*store.Batch, 0, lines/storeBatch+1)
	for i := 0; i < lines; i += storeBatch {
		bt := &store.Batch{Machines: map[store.Key][]byte{}}
		for j := i; j < min(i+storeBatch, lines); j++ {
			k := j % machines
			seqs[k]++
			bt.Entries = append(bt.Entries, store.KeyedEntry{Key: keys[k], Entry: store.Entry{Seq: seqs[k], Data: data[j]}})
			bt.Machines[keys[k]] = docs[k]
		}
		batches = append(batches, bt)
	}
	t0 := time.Now()
	for _, bt := range batches {
		if err := st.Commit(bt); err != nil {
			return 0, err
		}
	}
	return float64(lines) / time.Since(t0).Seconds(), nil
}

// masterIngest pushes lines log lines through conns connections to a
// fresh master and returns lines per second, durably stored.
func masterIngest(ctx context.Context, b *testing.B, conns, lines int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	bm := startMaster(b)
	defer bm.stop()
	const rid = "bench:ingest:owner"
	per := lines / conns
	type pusher struct {
		name  string
		ws    *websocket.Conn
		bytes []byte // every frame, masked
		pong  chan struct{}
		read  chan error // what ended reading
	}
	ps := make([]*pusher, conns)
	now := time.Now()
	for i := range ps {
		name := fmt.Sprintf("m%03d", i)
		enc, err := newEventEncoder(rid, name)
		if err != nil {
			return 0, err
		}
		p := &pusher{name: name, pong: make(chan struct{}, 1), read: make(chan error, 1)}
		for j := 1; j <= per; j++ {
			p.bytes = maskedFrame(p.bytes, enc.log(now, logText(j), uint64(j)))
		}
		h := http.Header{"Authorization": {bm.machineToken(b, rid, name)}} // raw, as Che's bootstrapper sends it
		ws, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+bm.addr+"/api/websocket-minor", h)
		if err != nil {
			return 0, fmt.Errorf("dial %s: %v (%v)", name, err, resp)
		}
		defer ws.Close()
		p.ws = ws
		ws.SetPongHandler(func(string) error {
			select {
			case p.pong <- struct{}{}:
			default:
			}
			return nil
		})
		go func() { // reads until the connection closes; pongs go to the handler
			_, msg, err := ws.ReadMessage()
			if err == nil {
				err = fmt.Errorf("the master answered %s", msg) // only errors are answered
			}
			p.read <- err
		}()
		ps[i] = p
	}
	var wg sync.WaitGroup
	errs := make([]error, conns)
	var last atomic.Int64 // unix ns of the last pong
	bm.ts.reset()
	t0 := time.Now()
	for i, p := range ps {
		wg.Go(func() {
			nc := p.ws.UnderlyingConn()
			nc.SetWriteDeadline(time.Now().Add(time.Minute))
			for off := 0; off < len(p.bytes); off += 64 << 10 {
				if _, err := nc.Write(p.bytes[off:min(off+64<<10, len(p.bytes))]); err != nil {
					errs[i] = fmt.Errorf("%s: write: %w", p.name, err)
					return
				}
			}
			if err := p.ws.WriteControl(websocket.PingMessage, []byte("ack"), time.Now().Add(time.Minute)); err != nil {
				errs[i] = fmt.Errorf("%s: ping: %w", p.name, err)
				return
			}
			select {
			case <-p.pong:
				at := time.Now().UnixNano()
				for {
					l := last.Load()
					if at <= l || last.CompareAndSwap(l, at) {
						break
					}
				}
			case err := <-p.read:
				errs[i] = fmt.Errorf("%s: waiting for the pong: %w", p.name, err)
			case <-ctx.Done():
				errs[i] = fmt.Errorf("%s: no pong: %w", p.name, ctx.Err())
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	d := time.Unix(0, last.Load()).Sub(t0)
	b.Logf("master, %d machines: %s", conns, bm.ts.summary())
	// Stored means committed: every machine's journal holds its lines.
	client := bm.clientToken(b)
	for _, p := range ps {
		seq, err := bm.machineSeq(ctx, client, rid, p.name)
		if err != nil {
			return 0, err
		}
		if seq != uint64(per) {
			return 0, fmt.Errorf("machine %s: %d entries stored after the pong, want %d", p.name, seq, per)
		}
	}
	return float64(per*conns) / d.Seconds(), nil
}

const (
	fanMachines    = 1000
	fanPerRuntime  = 10 // machines per runtime: 100 runtimes
	fanInterval    = 125 * time.Millisecond
	fanStatusEvery = 8 // one event in 8 is an installer status, the rest log lines
	fanDuration    = 5 * time.Second
	fanTargetP99   = 100 * time.Millisecond
)

// BenchmarkMasterFanIn: 1,000 machines, each its own WebSocket with its
// own machine token, each sending one event every 125 ms (8 events/s, 8,000
// events/s in all) for 5 s: one in eight an installer/statusChanged,
// the rest installer/log lines, at a random phase per machine. One client
// subscribed to every runtime (runtime.subscribe {runtimeId:"*"}) over
// /api/rpc receives them. The latency of each event is from just before
// its frame is written (the time is in the log line's text, and in the
// status event's time field) to the arrival of the runtime.entries
// notification that holds it, both clocks this process's. Every event
// sent must arrive, exactly once and in order per machine. The senders,
// the subscriber and the master share this process and its 2 cores.
func BenchmarkMasterFanIn(b *testing.B) {
	ctx := benchCtx(b, 2*time.Minute)
	// Each connection is two descriptors here (both ends), plus the
	// subscriber, the store and the listener.
	if err := raiseNOFILE(2*fanMachines + 256); err != nil {
		b.Fatal(err)
	}
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	b.Logf("open-file limit %d (raised to the hard limit if it was lower)", lim.Cur)
	bm := startMaster(b)

	sub, err := newFanSubscriber(ctx, bm, bm.clientToken(b))
	if err != nil {
		b.Fatal(err)
	}
	defer sub.close()

	ms, err := connectMachines(ctx, b, bm)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, m := range ms {
			m.ws.Close()
		}
	}()
	// Steady state: the machines' STARTING events (and their first
	// documents) are delivered before the measured period starts.
	if got, err := sub.wait(ctx, 2*fanMachines, 15*time.Second); err != nil {
		b.Fatalf("%d of %d STARTING events delivered: %v", got, 2*fanMachines, err)
	}

	bm.ts.reset()
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	sub.from.Store(t0.UnixNano())
	end := t0.Add(fanDuration)
	var wg sync.WaitGroup
	errs := make([]error, len(ms))
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.run(end) })
	}
	wg.Wait()
	sendEnd := time.Now()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	var sent, measured int
	for _, m := range ms {
		sent += int(m.seq)
		measured += m.measured
	}
	got, err := sub.wait(ctx, sent, 15*time.Second)
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	// CPU of the whole process (master, senders, subscriber), in cores.
	cores := float64(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / float64(time.Since(t0).Nanoseconds())
	b.Logf("store: %s", bm.ts.summary())
	if err != nil {
		b.Fatalf("%d of %d events delivered: %v", got, sent, err)
	}
	if err := sub.check(ms); err != nil {
		b.Fatal(err)
	}
	samples := sub.samples()
	if len(samples) != measured {
		b.Fatalf("%d latencies for %d events sent in the measured period", len(samples), measured)
	}
	lat := latenciesIn(samples, 0, math.MaxInt64)
	p50, p99, mx := percentile(lat, 50), percentile(lat, 99), percentile(lat, 100)
	for sec := range int(fanDuration / time.Second) {
		from := t0.Add(time.Duration(sec) * time.Second).UnixNano()
		l := latenciesIn(samples, from, from+int64(time.Second))
		b.Logf("second %d: %d events, p50 %.1f ms, p99 %.1f ms, max %.1f ms", sec+1, len(l), percentile(l, 50), percentile(l, 99), percentile(l, 100))
	}
	b.Logf("%d machines sent %d events (%d in the %v measured, %.0f events/s), %d delivered in %d notifications; process CPU %.2f cores over the period",
		len(ms), sent, measured, sendEnd.Sub(t0).Round(time.Millisecond), float64(measured)/sendEnd.Sub(t0).Seconds(), got, sub.notifications.Load(), cores)
	report(b, map[string]float64{
		"p50_ms": p50, "p99_ms": p99, "max_ms": mx,
		"events_sent": float64(sent), "events_delivered": float64(got), "delivered_ratio": float64(got) / float64(sent),
		"events/s": float64(measured) / sendEnd.Sub(t0).Seconds(), "cpu_cores": cores,
		"p99_of_target": p99 / float64(fanTargetP99.Milliseconds()),
	})
	verdict(b, "fan-in delivery p99 ms, 1,000 machines", p99, "<", float64(fanTargetP99.Milliseconds()))
	verdict(b, "fan-in events delivered / sent", float64(got)/float64(sent), ">=", 1)
}

// fanMachine is one simulated machine's bootstrapper connection.
type fanMachine struct {
	rid, name string
	enc       *eventEncoder
	ws        *websocket.Conn
	seq       uint64 // last seq sent
	measured  int    // events sent in the measured period
}

// connectMachines dials fanMachines connections, 50 at a time, each
// sending its bootstrapper's and installer's STARTING.
func connectMachines(ctx context.Context, b *testing.B, bm *benchMaster) ([]*fanMachine, error) {
	ms := make([]*fanMachine, fanMachines)
	toks := make([]string, fanMachines)
	for i := range ms {
		rid := fmt.Sprintf("ws%03d:env:owner", i/fanPerRuntime)
		name := fmt.Sprintf("m%d", i%fanPerRuntime)
		enc, err := newEventEncoder(rid, name)
		if err != nil {
			return nil, err
		}
		ms[i] = &fanMachine{rid: rid, name: name, enc: enc}
		toks[i] = bm.machineToken(b, rid, name)
	}
	sem := make(chan struct{}, 50)
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ws, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+bm.addr+"/api/websocket", http.Header{"Authorization": {toks[i]}})
			if err != nil {
				errs[i] = fmt.Errorf("dial %s/%s: %v (%v)", m.rid, m.name, err, resp)
				return
			}
			m.ws = ws
			now := time.Now()
			m.seq++
			if err := m.write(m.enc.bootstrapperStarting(now, m.seq)); err != nil {
				errs[i] = err
				return
			}
			m.seq++
			errs[i] = m.write(m.enc.installerStatus(now, che.StatusStarting, m.seq))
		})
	}
	wg.Wait()
	return ms, errors.Join(errs...)
}

func (m *fanMachine) write(frame []byte) error {
	m.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := m.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return fmt.Errorf("%s/%s: %w", m.rid, m.name, err)
	}
	return nil
}

// run sends an event every fanInterval, from a random phase, until end.
func (m *fanMachine) run(end time.Time) error {
	time.Sleep(rand.N(fanInterval))
	t := time.NewTicker(fanInterval)
	defer t.Stop()
	for {
		now := time.Now()
		if now.After(end) {
			return nil
		}
		m.seq++
		var f []byte
		if m.seq%fanStatusEvery == 0 {
			f = m.enc.installerStatus(now, che.StatusRunning, m.seq)
		} else {
			f = m.enc.log(now, "build step "+strconv.FormatUint(m.seq, 10)+" done; sent at "+strconv.FormatInt(now.UnixNano(), 10), m.seq)
		}
		if err := m.write(f); err != nil {
			return err
		}
		m.measured++
		<-t.C
	}
}

// fanSubscriber is the one client, subscribed to every runtime. It
// speaks JSON-RPC on the WebSocket itself and decodes each notification
// once, into only the fields it checks: jsonrpc2's client decodes every
// message about four times, CPU that would be taken from the master on
// this 2-core machine and counted as the master's latency.
type fanSubscriber struct {
	ws            *websocket.Conn
	read          chan struct{} // closed when reading ends
	from          atomic.Int64  // unix ns: events sent before are not timed
	notifications atomic.Int64

	mu       sync.Mutex
	got      int
	lat      []fanSample
	last     map[string]uint64 // per machine, the last entry seq
	count    map[string]int    // per machine, entries received
	problems []string
	readErr  error
	changed  chan struct{}
}

// fanSample is one event's send time and delivery latency.
type fanSample struct {
	sent int64   // unix ns
	ms   float64 // latency
}

// fanNotification is what the subscriber reads of a message.
type fanNotification struct {
	ID     *int            `json:"id"`
	Error  json.RawMessage `json:"error"`
	Method string          `json:"method"`
	Params struct {
		RuntimeID   string `json:"runtimeId"`
		MachineName string `json:"machineName"`
		Entries     []struct {
			Seq  uint64    `json:"seq"`
			Type string    `json:"type"`
			Time time.Time `json:"time"`
			Text string    `json:"text"`
		} `json:"entries"`
	} `json:"params"`
}

func newFanSubscriber(ctx context.Context, bm *benchMaster, tok string) (*fanSubscriber, error) {
	d := websocket.Dialer{ReadBufferSize: 64 << 10}
	ws, resp, err := d.DialContext(ctx, "ws://"+bm.addr+"/api/rpc", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		return nil, fmt.Errorf("dial /api/rpc: %v (%v)", err, resp)
	}
	s := &fanSubscriber{ws: ws, read: make(chan struct{}), last: map[string]uint64{}, count: map[string]int{},
		changed: make(chan struct{}), lat: make([]fanSample, 0, 50_000)}
	req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": masterapi.MethodRuntimeSubscribe,
		"params": masterapi.SubscribeParams{RuntimeID: "*"}})
	if err := ws.WriteMessage(websocket.TextMessage, req); err != nil {
		ws.Close()
		return nil, err
	}
	var n fanNotification
	_, msg, err := ws.ReadMessage()
	if err == nil && (json.Unmarshal(msg, &n) != nil || n.ID == nil || n.Error != nil) {
		err = fmt.Errorf("answered %s", msg)
	}
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("%s: %w", masterapi.MethodRuntimeSubscribe, err)
	}
	go s.run()
	return s, nil
}

func (s *fanSubscriber) close() {
	s.ws.Close()
	<-s.read
}

func (s *fanSubscriber) run() {
	defer close(s.read)
	for {
		_, msg, err := s.ws.ReadMessage()
		if err != nil {
			s.mu.Lock()
			s.readErr = err
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
			return
		}
		s.handle(time.Now(), msg)
	}
}

func (s *fanSubscriber) handle(now time.Time, msg []byte) {
	var n fanNotification
	if err := json.Unmarshal(msg, &n); err != nil {
		s.problem(fmt.Sprintf("notification: %v", err))
		return
	}
	if n.Method != masterapi.NotifyEntries {
		return
	}
	s.notifications.Add(1)
	from := s.from.Load()
	k := n.Params.RuntimeID + "/" + n.Params.MachineName
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range n.Params.Entries {
		if e.Seq != s.last[k]+1 {
			s.problems = append(s.problems, fmt.Sprintf("%s: entry %d after %d", k, e.Seq, s.last[k]))
		}
		s.last[k] = e.Seq
		sent := e.Time.UnixNano()
		switch e.Type {
		case masterapi.EntryLog:
			i := strings.LastIndexByte(e.Text, ' ')
			v, err := strconv.ParseInt(e.Text[i+1:], 10, 64)
			if err != nil {
				s.problems = append(s.problems, fmt.Sprintf("%s: log line %q has no time", k, e.Text))
				continue
			}
			sent = v
		case masterapi.EntryInstaller, masterapi.EntryBootstrapper:
		default:
			continue // not an event a machine sent
		}
		s.count[k]++
		s.got++
		if from != 0 && sent >= from {
			s.lat = append(s.lat, fanSample{sent, float64(now.UnixNano()-sent) / 1e6})
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *fanSubscriber) problem(p string) {
	s.mu.Lock()
	s.problems = append(s.problems, p)
	s.mu.Unlock()
}

// wait waits until n events arrived, for at most d.
func (s *fanSubscriber) wait(ctx context.Context, n int, d time.Duration) (int, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		got, ch, rerr := s.got, s.changed, s.readErr
		s.mu.Unlock()
		if got >= n {
			return got, nil
		}
		if rerr != nil {
			return got, fmt.Errorf("the subscription's socket ended: %w", rerr)
		}
		select {
		case <-ch:
		case <-timer.C:
			return got, fmt.Errorf("not all delivered within %v of the end of sending", d)
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

// check compares what arrived per machine with what each sent.
func (s *fanSubscriber) check(ms []*fanMachine) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	probs := s.problems
	for _, m := range ms {
		if c := s.count[m.rid+"/"+m.name]; c != int(m.seq) {
			probs = append(probs, fmt.Sprintf("%s/%s: %d events delivered, %d sent", m.rid, m.name, c, m.seq))
		}
	}
	if len(probs) > 10 {
		probs = append(probs[:10], fmt.Sprintf("and %d more", len(probs)-10))
	}
	if len(probs) > 0 {
		return fmt.Errorf("delivery: %q", probs)
	}
	return nil
}

func (s *fanSubscriber) samples() []fanSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fanSample(nil), s.lat...)
}

// latenciesIn returns the latencies of the samples sent in [from, to).
func latenciesIn(samples []fanSample, from, to int64) []float64 {
	var out []float64
	for _, x := range samples {
		if x.sent >= from && x.sent < to {
			out = append(out, x.ms)
		}
	}
	return out
}

// BenchmarkMasterTerminal: the PTY throughput, pipe throughput and echo
// latency benchmarks' work (BenchmarkPTYThroughput's cat of a 64 MiB
// text file in a TTY, BenchmarkPipeThroughput's cat without a TTY, here
// of the same 64 MiB file, BenchmarkEchoLatency's keystrokes) against
// one agent, by two clients in turn: one dialling the agent directly, the
// other the master's proxy (ws://MASTER/api/runtimes/RID/machines/NAME/agent,
// a client token) which reaches the agent through the tunnel the agent
// keeps to the master (tunnel.Serve with the agent's handler, as
// `porthole agent -master` does). Three repetitions, interleaved; medians.
func BenchmarkMasterTerminal(b *testing.B) {
	const size = 64 * mib
	ctx := benchCtx(b, 3*time.Minute)
	file, n, lines := textFile(b, size)
	want := n + lines // ONLCR
	bm := startMaster(b)
	a, addr := agenttest.Start(b, agent.Options{Token: token})

	const rid, name = "bench:term:owner", "dev"
	tctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- tunnel.Serve(tctx, tunnel.AgentOptions{
			URL: "ws://" + bm.addr + "/api/agent",
			Header: http.Header{
				"Authorization":          {"Bearer " + bm.machineToken(b, rid, name)},
				tunnel.HeaderRuntimeID:   {rid},
				tunnel.HeaderMachineName: {name},
				tunnel.HeaderProtocol:    {protocol.Version},
			},
			Handler:    a.Handler(),
			Trust:      agent.TrustedContext,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		})
	}()
	b.Cleanup(func() { cancel(); <-served }) // before the agent and the master stop

	direct, err := dial(ctx, "ws://"+addr)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	via, err := dialThroughMaster(ctx, client.Options{
		URL:   "ws://" + bm.addr + "/api/runtimes/" + rid + "/machines/" + name + "/agent",
		Token: bm.clientToken(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer via.Close()

	type side struct {
		c                   *client.Client
		tty, pipe, p50, p99 []float64
	}
	sides := []*side{{c: direct}, {c: via}}
	names := []string{"direct", "through the master"}
	for i := range reps {
		for j, s := range sides {
			settle()
			out, _, d, err := agentCat(ctx, s.c, file, true)
			if err != nil {
				b.Fatalf("%s TTY cat: %v", names[j], err)
			}
			if out != want {
				b.Fatalf("%s TTY cat: read %d bytes, want %d (%d file bytes + %d CRs)", names[j], out, want, n, lines)
			}
			s.tty = append(s.tty, mibps(n, d))
		}
		for j, s := range sides {
			settle()
			out, errb, d, err := agentCat(ctx, s.c, file, false)
			if err != nil {
				b.Fatalf("%s pipe cat: %v", names[j], err)
			}
			if out != n || errb != 0 {
				b.Fatalf("%s pipe cat: read %d stdout and %d stderr bytes, want %d and 0", names[j], out, errb, n)
			}
			s.pipe = append(s.pipe, mibps(n, d))
		}
		for j, s := range sides {
			settle()
			us, err := agentEcho(ctx, s.c)
			if err != nil {
				b.Fatalf("%s echo: %v", names[j], err)
			}
			s.p50 = append(s.p50, percentile(us, 50))
			s.p99 = append(s.p99, percentile(us, 99))
		}
		d, m := sides[0], sides[1]
		b.Logf("rep %d: TTY %.1f / %.1f MiB/s, pipe %.0f / %.0f MiB/s, echo p50 %.0f / %.0f µs, p99 %.0f / %.0f µs (direct / through the master)",
			i+1, d.tty[i], m.tty[i], d.pipe[i], m.pipe[i], d.p50[i], m.p50[i], d.p99[i], m.p99[i])
	}
	d, m := sides[0], sides[1]
	ratio := median(m.tty) / median(d.tty)
	report(b, map[string]float64{
		"direct_MiB/s": median(d.tty), "master_MiB/s": median(m.tty), "ratio": ratio,
		"direct_pipe_MiB/s": median(d.pipe), "master_pipe_MiB/s": median(m.pipe), "pipe_ratio": median(m.pipe) / median(d.pipe),
		"direct_p50_µs": median(d.p50), "master_p50_µs": median(m.p50),
		"direct_p99_µs": median(d.p99), "master_p99_µs": median(m.p99),
		"p50_ratio": median(m.p50) / median(d.p50),
	})
	verdict(b, "TTY throughput through the master / direct", ratio, ">=", 0.8)
}

// dialThroughMaster dials the agent through the master, retrying while
// the master answers 502 or 404 (the tunnel is not up yet; a machine
// whose agent never connected is unknown to the master).
func dialThroughMaster(ctx context.Context, o client.Options) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		c, err := client.Dial(ctx, o)
		var he *client.HTTPError
		if err == nil || !errors.As(err, &he) || (he.Status != http.StatusBadGateway && he.Status != http.StatusNotFound) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the agent's tunnel did not come up: %w (last: %v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
