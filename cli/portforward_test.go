package cli_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/master"
	"github.com/porthole-dev/porthole/master/store"
)

// bigBytes is the size of the large download: 32 MiB, through processes
// built with the race detector.
const bigBytes = 32 << 20

// machineServer is a server "in the agent's machine" (the agent runs on
// this host): /n/{i} answers i once concurrent requests are in flight at
// the same time (so only concurrent connections can pass), /big sends
// bigBytes of pseudo-random data.
type machineServer struct {
	port    int
	bigSum  string
	arrived chan struct{} // one per /n request
	release chan struct{} // closed once all concurrent requests arrived
}

func startMachineServer(t *testing.T, concurrent int) *machineServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms := &machineServer{port: ln.Addr().(*net.TCPAddr).Port, arrived: make(chan struct{}, concurrent), release: make(chan struct{})}
	h := sha256.New()
	io.Copy(h, bigReader())
	ms.bigSum = hex.EncodeToString(h.Sum(nil))
	var once sync.Once
	var mu sync.Mutex
	n := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /n/{i}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		if n == concurrent {
			once.Do(func() { close(ms.release) })
		}
		mu.Unlock()
		select {
		case <-ms.release:
		case <-time.After(waitTimeout):
			http.Error(w, "not all requests arrived together", http.StatusGatewayTimeout)
			return
		}
		fmt.Fprintf(w, "answer %s", r.PathValue("i"))
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(bigBytes))
		io.Copy(w, bigReader())
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ms
}

func bigReader() io.Reader {
	return io.LimitReader(&prngReader{newChaCha(7)}, bigBytes)
}

func newChaCha(seed byte) *mrand.ChaCha8 { return mrand.NewChaCha8([32]byte{seed}) }

type prngReader struct{ r *mrand.ChaCha8 }

func (p *prngReader) Read(b []byte) (int, error) { return p.r.Read(b) }

// halfCloseServer reads everything a connection sends until its end
// (FIN), then answers with its length and sha256 and closes: only a
// forward that passes the client's end on gets an answer.
func halfCloseServer(t *testing.T) int {
	return testutil.ServeTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(waitTimeout))
		h := sha256.New()
		n, _ := io.Copy(h, c)
		fmt.Fprintf(c, "%d %x", n, h.Sum(nil))
	})
}

// portForward is a running `porthole port-forward`.
type portForward struct {
	cmd    *exec.Cmd
	local  []string // the local addresses, in the order of the specs
	stderr *testutil.SyncBuffer
	exited chan struct{}
}

func startPortForward(t *testing.T, env []string, args ...string) *portForward {
	t.Helper()
	pf := &portForward{stderr: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	pf.cmd = exec.Command(bin, append([]string{"port-forward"}, args...)...)
	pf.cmd.Env = append(baseEnv(), env...)
	pf.cmd.Stderr = pf.stderr
	pf.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := pf.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(pf.exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		pf.cmd.Wait()
	}()
	t.Cleanup(func() {
		pf.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-pf.exited:
		case <-time.After(waitTimeout):
			pf.cmd.Process.Kill()
			<-pf.exited
			t.Errorf("port-forward did not stop within %s of SIGINT", waitTimeout)
		}
		if t.Failed() {
			t.Logf("port-forward stderr:\n%s", pf.stderr.String())
		}
	})
	for range countSpecs(args) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("port-forward exited: %s", pf.stderr.String())
			}
			// "Forwarding from 127.0.0.1:PORT -> REMOTE"
			f := strings.Fields(l)
			if len(f) != 5 || f[0] != "Forwarding" {
				t.Fatalf("port-forward printed %q", l)
			}
			pf.local = append(pf.local, f[2])
		case <-time.After(waitTimeout):
			t.Fatalf("port-forward printed no address within %s: %s", waitTimeout, pf.stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return pf
}

func countSpecs(args []string) int {
	n := 0
	for _, a := range args {
		if a != "" && (a[0] >= '0' && a[0] <= '9' || a[0] == ':') {
			n++
		}
	}
	return n
}

// checkForwarding runs the port-forward checks against pf, whose specs
// were (0) the machine server, (1) the half-close server and (2) a port
// nobody listens on.
func checkForwarding(t *testing.T, pf *portForward, ms *machineServer) {
	t.Helper()
	const n = 50
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}, Timeout: waitTimeout}
	defer hc.CloseIdleConnections()

	// 50 concurrent requests, each answered only once all 50 arrived.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			resp, err := hc.Get(fmt.Sprintf("http://%s/n/%d", pf.local[0], i))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("answer %d", i); resp.StatusCode != 200 || string(b) != want {
				errs <- fmt.Errorf("request %d: %d %q, want %q", i, resp.StatusCode, b, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A large download, byte-exact.
	start := time.Now()
	resp, err := hc.Get("http://" + pf.local[0] + "/big")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if sum := hex.EncodeToString(h.Sum(nil)); err != nil || got != bigBytes || sum != ms.bigSum {
		t.Errorf("download: %d bytes (%v), sha256 %s; want %d bytes, %s", got, err, sum, bigBytes, ms.bigSum)
	}
	t.Logf("%d MiB in %v", bigBytes>>20, time.Since(start))

	// Half-close: the client's end reaches the server, whose answer still
	// comes back; then the server's end reaches the client.
	c, err := net.Dial("tcp", pf.local[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	payload := strings.Repeat("half-close ", 100_000)
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	answer, err := io.ReadAll(c)
	if want := fmt.Sprintf("%d %x", len(payload), sha256.Sum256([]byte(payload))); err != nil || string(answer) != want {
		t.Errorf("half-close: answer %q (%v), want %q", answer, err, want)
	}

	// A port nobody listens on: that connection fails alone, named on
	// stderr; the forward of the others goes on.
	// (The reset may come before the dial has returned.)
	if c2, err := net.Dial("tcp", pf.local[2]); err == nil {
		c2.SetDeadline(time.Now().Add(waitTimeout))
		if b, err := io.ReadAll(c2); len(b) != 0 {
			t.Errorf("connection to a closed port read %q, %v", b, err)
		}
		c2.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the failed connection reported", func() bool {
		return strings.Contains(pf.stderr.String(), "connection refused")
	})
	resp, err = hc.Get("http://" + pf.local[0] + "/n/after")
	if err != nil {
		t.Fatalf("request after a failed connection: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "answer after" {
		t.Errorf("request after a failed connection: %q", b)
	}
}

// closedPort is a port nobody listens on.
func closedPort(t *testing.T) int { return testutil.FreePort(t) }

// `porthole port-forward` straight to an agent.
func TestPortForwardDirect(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	ms := startMachineServer(t, 50)
	hp := halfCloseServer(t)
	pf := startPortForward(t, []string{"PORTHOLE_TOKEN=" + a.token}, "-url", a.url,
		":"+strconv.Itoa(ms.port), ":"+strconv.Itoa(hp), ":"+strconv.Itoa(closedPort(t)))
	checkForwarding(t, pf, ms)
}

// `porthole port-forward` through porthole-master's proxy to an agent
// that serves only through its tunnel.
func TestPortForwardThroughMaster(t *testing.T) {
	t.Parallel()
	url, token := startMasterAgent(t)
	ms := startMachineServer(t, 50)
	hp := halfCloseServer(t)
	pf := startPortForward(t, []string{"PORTHOLE_TOKEN=" + token}, "-url", url,
		":"+strconv.Itoa(ms.port), ":"+strconv.Itoa(hp), ":"+strconv.Itoa(closedPort(t)))
	checkForwarding(t, pf, ms)
}

// Bad specs and a wrong token are errors before anything listens.
func TestPortForwardErrors(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "needs at least one port"},
		{[]string{"0"}, 2, `remote port "0"`},
		{[]string{"x:80"}, 2, `local port "x"`},
		{[]string{"80:70000"}, 2, `remote port "70000"`},
	}
	for _, c := range cases {
		r := porthole(t, a, nil, "", append([]string{"port-forward", "-url", a.url}, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("port-forward %q: exit %d, stderr %q; want %d and %q", c.args, r.code, r.stderr, c.code, c.want)
		}
	}
	r := porthole(t, nil, []string{"PORTHOLE_TOKEN=wrong"}, "", "port-forward", "-url", a.url, "8080")
	if r.code != 1 || !strings.Contains(r.stderr, "invalid token") {
		t.Errorf("port-forward with a wrong token: exit %d, stderr %q", r.code, r.stderr)
	}
}

// startMasterAgent starts an in-process porthole-master and an agent
// that serves only through it; it returns the agent's URL on the master
// and a client token.
func startMasterAgent(t *testing.T) (url, clientToken string) {
	t.Helper()
	ma := startMasterAgentFull(t)
	return ma.agentURL, ma.clientToken
}

// masterAgent is a master with one machine, w:e:o/dev, whose agent
// serves only through it.
type masterAgent struct {
	masterWS, agentURL, clientToken string
}

func startMasterAgentFull(t *testing.T) masterAgent {
	t.Helper()
	var clientToken string
	dir := t.TempDir()
	signer, err := master.LoadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "porthole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := master.New(master.Options{Store: st, Signer: signer, Version: "test", BinariesDir: filepath.Dir(bin)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.Handler()}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		m.Shutdown(ctx)
		srv.Shutdown(ctx)
		<-served
		st.Close()
	})
	const rid = "w:e:o"
	mt, err := signer.MachineToken(rid, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if clientToken, err = signer.ClientToken(); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "machine.token")
	os.WriteFile(tokFile, []byte(mt), 0o600)
	masterWS := "ws://" + ln.Addr().String()
	ag := exec.Command(bin, "agent", "-listen", "none", "-master", masterWS, "-machine-token-file", tokFile,
		"-runtime-id", rid, "-machine-name", "dev", "-grace", "1s")
	ag.Env = baseEnv()
	var agentOut testutil.SyncBuffer
	ag.Stdout, ag.Stderr = &agentOut, &agentOut
	ag.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { ag.Wait(); close(exited) }()
	t.Cleanup(func() {
		ag.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitTimeout):
			ag.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", agentOut.String())
		}
	})
	url := masterWS + "/api/runtimes/" + rid + "/machines/dev/agent"
	hc := &http.Client{Timeout: time.Second}
	testutil.WaitFor(t, "the agent connected to the master", func() bool {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/api/runtimes/"+rid+"/machines/dev/agent/healthz", nil)
		req.Header.Set("Authorization", "Bearer "+clientToken)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return masterAgent{masterWS: masterWS, agentURL: url, clientToken: clientToken}
}
