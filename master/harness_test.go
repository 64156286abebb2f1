package master_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sourcegraph/jsonrpc2"
	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/cli"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/internal/wsrpc"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/mastercli"
	"github.com/porthole-dev/porthole/master/store"
	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// The programs the tests run as processes: porthole (bootstrapper,
// agent) and porthole-master, both the test binary re-executed
// (testutil.Programs), so they run under the race detector when the
// tests do.
var programs = testutil.Programs{
	"porthole":        func(argv []string) int { return cli.Main(argv[1:], os.Environ()) },
	"porthole-master": func(argv []string) int { return mastercli.Main(argv[1:], os.Stdout, os.Stderr) },
}

// porthole and masterBin run the programs: links to the test binary in
// a directory that is also the master's BinariesDir.
var porthole, masterBin string

const wait = testutil.Wait // how long anything awaited may take

func TestMain(m *testing.M) {
	dir := programs.Setup()
	porthole, masterBin = filepath.Join(dir, "porthole"), filepath.Join(dir, "porthole-master")
	goleak.VerifyTestMain(m, goleak.Cleanup(testutil.Exit))
}

// testMaster is an in-process master on loopback over a store in dir.
type testMaster struct {
	*master.Master
	URL    string // http://127.0.0.1:PORT
	WS     string // ws://127.0.0.1:PORT
	dir    string
	signer *master.Signer
	st     *store.Bolt
	srv    *http.Server
	served chan struct{}
	once   sync.Once
}

// startMaster serves a master over dir on addr ("" for any port) until
// the test ends or stop.
func startMaster(t *testing.T, dir, addr string, opts ...func(*master.Options)) *testMaster {
	t.Helper()
	return startMasterTLS(t, dir, addr, nil, opts...)
}

// startMasterTLS is startMaster serving TLS with tlsConf (https, wss) when
// it is not nil.
func startMasterTLS(t *testing.T, dir, addr string, tlsConf *tls.Config, opts ...func(*master.Options)) *testMaster {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	signer, err := master.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "porthole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := master.Options{Store: st, Signer: signer, Version: "test", BinariesDir: filepath.Dir(porthole), TokensDir: dir, AuditDir: dir}
	for _, f := range opts {
		f(&o)
	}
	m, err := master.New(o)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	deadline := time.Now().Add(wait)
	for { // a restarted master reuses its port; the old one may linger in TIME_WAIT
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	scheme := ""
	if tlsConf != nil {
		ln, scheme = tls.NewListener(ln, tlsConf), "s"
	}
	tm := &testMaster{Master: m, dir: dir, signer: signer, st: st, served: make(chan struct{}),
		URL: "http" + scheme + "://" + ln.Addr().String(), WS: "ws" + scheme + "://" + ln.Addr().String(),
		srv: &http.Server{Handler: m.Handler(), ConnContext: master.ConnContext}}
	go func() { defer close(tm.served); tm.srv.Serve(ln) }()
	t.Cleanup(tm.stop)
	return tm
}

func (tm *testMaster) stop() {
	tm.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		tm.Shutdown(ctx)
		tm.srv.Shutdown(ctx)
		<-tm.served
		tm.st.Close()
	})
}

func (tm *testMaster) addr() string { return tm.URL[strings.Index(tm.URL, "://")+3:] }

func (tm *testMaster) machineToken(t *testing.T, rid, name string) string {
	t.Helper()
	tok, err := tm.signer.MachineToken(rid, name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (tm *testMaster) clientToken(t *testing.T) string {
	t.Helper()
	tok, err := tm.signer.ClientToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// get GETs path with token as bearer and decodes JSON into v (when the
// status is 200); it returns the status and body.
func get(t *testing.T, url, token string, v any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// logs reads a machine's whole journal through the HTTP API, page by
// page.
func logs(t *testing.T, tm *testMaster, token, rid, name string) []masterapi.Entry {
	t.Helper()
	var all []masterapi.Entry
	after := uint64(0)
	for {
		var page struct {
			Entries []masterapi.Entry `json:"entries"`
			Next    uint64            `json:"next"`
		}
		url := fmt.Sprintf("%s/api/runtimes/%s/machines/%s/logs?after=%d", tm.URL, rid, name, after)
		if st, body := get(t, url, token, &page); st != 200 {
			t.Fatalf("GET %s: %d %s", url, st, body)
		}
		all = append(all, page.Entries...)
		if len(page.Entries) == 0 || page.Next == after {
			return all
		}
		after = page.Next
	}
}

// subscriber is a client's JSON-RPC socket recording notifications.
type subscriber struct {
	conn *jsonrpc2.Conn
	mu   sync.Mutex
	// machines: the last state per machine; entries: per machine, in
	// the order received.
	machines map[string]*masterapi.Machine
	entries  map[string][]masterapi.Entry
	notes    int // runtime.machine notifications received
	changed  chan struct{}
}

func subscribe(t *testing.T, tm *testMaster, token string, p masterapi.SubscribeParams) *subscriber {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token}}
	ws, resp, err := websocket.DefaultDialer.Dial(tm.WS+"/api/rpc", h)
	if err != nil {
		t.Fatalf("dial /api/rpc: %v (%v)", err, resp)
	}
	s := &subscriber{machines: map[string]*masterapi.Machine{}, entries: map[string][]masterapi.Entry{}, changed: make(chan struct{})}
	stream := wsrpc.New(ws, wsrpc.Options{})
	s.conn = jsonrpc2.NewConn(context.Background(), stream, jsonrpc2.HandlerWithError(s.handle))
	t.Cleanup(func() { s.conn.Close(); <-s.conn.DisconnectNotify() })
	var res struct {
		Subscription string `json:"subscription"`
	}
	if err := s.conn.Call(context.Background(), masterapi.MethodRuntimeSubscribe, p, &res); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return s
}

func (s *subscriber) handle(ctx context.Context, c *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Method {
	case masterapi.NotifyMachine:
		var n masterapi.MachineNotification
		json.Unmarshal(*req.Params, &n)
		s.machines[n.Machine.RuntimeID+"/"+n.Machine.Name] = n.Machine
		s.notes++
	case masterapi.NotifyEntries:
		var n masterapi.EntriesNotification
		json.Unmarshal(*req.Params, &n)
		for _, raw := range n.Entries {
			var e masterapi.Entry
			json.Unmarshal(raw, &e)
			k := n.RuntimeID + "/" + n.MachineName
			s.entries[k] = append(s.entries[k], e)
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil, nil
}

// until waits for cond (called under the subscriber's lock) to hold.
func (s *subscriber) until(t *testing.T, what string, cond func(machines map[string]*masterapi.Machine, entries map[string][]masterapi.Entry) bool) {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ok := cond(s.machines, s.entries)
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			ms, _ := json.Marshal(s.machines)
			t.Fatalf("timed out waiting for %s; machines: %s", what, ms)
		}
	}
}

// bootstrapper runs `porthole bootstrap` for machine name of rid with
// config, pushing to tm with token; it returns a channel closed with the
// exit status.
type bootProc struct {
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{}
	code int
}

func bootstrap(t *testing.T, masterWS, token, rid, name, config string, extra ...string) *bootProc {
	t.Helper()
	args := append([]string{"bootstrap", "-file", config,
		"-push-endpoint", masterWS + "/api/websocket", "-push-logs-endpoint", masterWS + "/api/websocket-minor",
		"-runtime-id", rid, "-machine-name", name, "-enable-auth", "-spool-dir", t.TempDir(),
		"-stop-grace", "500ms", "-logs-endpoint-reconnect-period", "1"}, extra...)
	cmd := exec.Command(porthole, args...)
	cmd.Env = testutil.CleanEnv("CHE_MACHINE_TOKEN=" + token)
	p := &bootProc{cmd: cmd, out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("bootstrapper %s output:\n%s", name, p.out)
		}
	})
	return p
}

var (
	config   = testutil.Config
	freePort = testutil.FreePort
)

// serverConfig: an installer that starts a TCP server on port (porthole's
// own agent, the bootstrapper's binary) with a public and an internal
// server declared.
func serverConfig(t *testing.T, port int) string {
	p := strconv.Itoa(port)
	return config(t, `[{"id":"org.demo.server","script":"echo starting on `+p+`\nexec /proc/$PPID/exe agent -insecure-no-auth -listen 127.0.0.1:`+p+`",
  "servers":{"web":{"port":"`+p+`/tcp","protocol":"http","path":"/healthz","attributes":{}},
             "admin":{"port":"`+p+`/tcp","protocol":"ws","attributes":{"internal":"true"}}}}]`)
}

const failingConfig = `[{"id":"org.demo.failing","script":"echo 1\necho error >&2\nexit 1"}]`

var httpClient = &http.Client{Timeout: wait}

func newGet(url, token string) (*http.Request, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err == nil && token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, err
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

func jsonRaw(s string) *json.RawMessage {
	r := json.RawMessage(s)
	return &r
}

// tunnelAgent runs `porthole agent -listen none -master tm.WS` for machine
// name of rid (and the flags extra), killed at cleanup; exited is closed
// when it has exited.
func tunnelAgent(t *testing.T, tm *testMaster, rid, name string, extra ...string) (ag *exec.Cmd, exited chan struct{}, out *testutil.SyncBuffer) {
	t.Helper()
	tokFile := filepath.Join(t.TempDir(), "machine.token")
	os.WriteFile(tokFile, []byte(tm.machineToken(t, rid, name)), 0o600)
	ag = exec.Command(porthole, append([]string{"agent", "-listen", "none", "-master", tm.WS, "-machine-token-file", tokFile,
		"-runtime-id", rid, "-machine-name", name}, extra...)...)
	out = &testutil.SyncBuffer{}
	ag.Stderr = out
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan struct{})
	go func() { ag.Wait(); close(exited) }()
	t.Cleanup(func() {
		ag.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})
	return ag, exited, out
}
