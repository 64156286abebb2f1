package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/protocol"
)

// fuzzNoSuchProgram is what process.start runs under FuzzRPC: nothing.
// The fuzzer writes argv too, and must not run what it writes.
const fuzzNoSuchProgram = "/nonexistent/porthole-fuzz"

// FuzzRPC sends each input as the body of POST /v1/rpc, with the agent's
// token, to an agent that holds one running process (id in the seeds):
// every method's params are decoded from untrusted bytes. It checks that
// nothing panics, that every answer is a JSON-RPC response (or 204 for a
// notification), and that no call outlives its request. process.start
// runs a program that does not exist whatever argv says: the fuzzer must
// not run what it writes.
func FuzzRPC(f *testing.F) {
	seeds := []string{
		`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`,
		`{"jsonrpc":"2.0","id":1,"method":"process.list"}`,
		`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"argv":["sh","-c","echo hi"],"env":["A=1"],"cwd":"/tmp","tty":true,"size":{"rows":24,"cols":80}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"argv":[""],"env":["=x"],"user":"nobody"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.get","params":{"id":"1"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.signal","params":{"id":"1","signal":"CONT"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.signal","params":{"id":"1","signal":"99"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.resize","params":{"id":"1","rows":0,"cols":65536}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.write","params":{"id":"1","text":"x"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.write","params":{"id":"1","data":"eA=="}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.closeStdin","params":{"id":"9"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.wait","params":{"id":"1"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.subscribe","params":{"id":"1"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.unsubscribe","params":{"id":"1"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"process.remove","params":{"id":""}}`,
		`{"jsonrpc":"2.0","method":"process.kill","params":{"id":"2"}}`,
		`{"jsonrpc":"2.0","id":{},"method":1}`,
		`[{"jsonrpc":"2.0","id":1,"method":"agent.info"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"process.get","params":{"id":"1","extra":true}}`,
		`{"jsonrpc":"2.0","id":1,"METHOD":"agent.info","method":"process.list"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	a, err := New(Options{Token: "fuzz-token", Shell: fuzzNoSuchProgram, MaxProcesses: 16, Retention: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx, 100*time.Millisecond)
	})
	real := methods[protocol.MethodStart]
	methods[protocol.MethodStart] = func(s *session, ctx context.Context, c *call) (any, error) {
		var sp protocol.StartParams
		if err := decodeParams(protocol.MethodStart, c.params, &sp); err != nil {
			return nil, err
		}
		if len(sp.Argv) > 0 && sp.Argv[0] != "" {
			sp.Argv[0] = fuzzNoSuchProgram
		}
		params, _ := json.Marshal(sp)
		return real(s, ctx, &call{method: c.method, params: params, conn: c.conn, replied: c.replied})
	}
	f.Cleanup(func() { methods[protocol.MethodStart] = real })
	h := a.Handler()
	// A process for the methods that take an id: `cat`, started here,
	// not by the fuzzer.
	if _, err := a.procs.start(protocol.StartParams{Argv: []string{"cat"}}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, "POST", "/v1/rpc", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer fuzz-token")
		rec := httptest.NewRecorder()
		served := make(chan struct{})
		go func() {
			defer close(served)
			h.ServeHTTP(rec, req)
		}()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatalf("%q: the call outlived its request (20 ms) by 10 s", body)
		}
		if rec.Code == http.StatusNoContent {
			return
		}
		var resp struct {
			JSONRPC string           `json:"jsonrpc"`
			Result  *json.RawMessage `json:"result"`
			Error   *json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.JSONRPC != "2.0" || (resp.Result == nil) == (resp.Error == nil) {
			t.Fatalf("%d %q for %q: not one JSON-RPC response (%v)", rec.Code, rec.Body.Bytes(), body, err)
		}
	})
}
