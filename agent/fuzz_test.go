package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

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

// FuzzAttach opens an attach socket on a running `cat` with a fuzzed
// query (offsets, mode) and sends fuzzed frames: frames is cut into
// frames of a kind byte (even: binary, odd: text) and a length byte. The
// agent answers (a 101 or a refusal), never panics, and once the client
// goes away the socket's session ends: nothing is left for Shutdown to
// wait for (checked at the end, and by goleak).
func FuzzAttach(f *testing.F) {
	f.Add("", []byte{0, 4, 0, 'l', 's', '\n'}, false)
	f.Add("stdout=0&stderr=end", []byte{1, 37, '{', '"', 'j', 's', 'o', 'n', 'r', 'p', 'c', '"', ':', '"', '2', '.', '0', '"', ',', '"', 'i', 'd', '"', ':', '1', ',', '"', 'm', 'e', 't', 'h', 'o', 'd', '"', ':', '"', 'a', '"', '}'}, false)
	f.Add("mode=raw", []byte{0, 3, 'a', 'b', 'c', 0, 0}, true)
	f.Add("offset=99999999999", []byte{0, 1, 2}, false)
	f.Add("stdout=-1", []byte{}, false)
	f.Add("", []byte{0, 2, 1, 'x'}, false) // a stdout frame from the client
	a, err := New(Options{Token: "fuzz-token", Shell: fuzzNoSuchProgram, MaxProcesses: 16, StallTimeout: 10 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx, 100*time.Millisecond)
		srv.Close()
	})
	p, err := a.procs.start(protocol.StartParams{Argv: []string{"cat"}})
	if err != nil {
		f.Fatal(err)
	}
	base := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/processes/" + p.id + "/attach?"
	f.Fuzz(func(t *testing.T, query string, frames []byte, raw bool) {
		sub := protocol.SubprotocolAttach
		if raw {
			sub = protocol.SubprotocolRaw
		}
		if _, err := url.Parse(base + query); err != nil {
			return // the client cannot send it
		}
		d := websocket.Dialer{Subprotocols: []string{sub}, HandshakeTimeout: 10 * time.Second}
		ws, resp, err := d.Dial(base+query, http.Header{"Authorization": {"Bearer fuzz-token"}})
		if resp != nil {
			resp.Body.Close()
		}
		if err != nil {
			if resp == nil {
				t.Fatalf("query %q: no answer: %v", query, err)
			}
			return // refused, with a status
		}
		defer ws.Close()
		ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for len(frames) >= 2 {
			kind, n := frames[0], int(frames[1])
			frames = frames[2:]
			n = min(n, len(frames))
			typ := websocket.BinaryMessage
			if kind%2 == 1 {
				typ = websocket.TextMessage
			}
			if ws.WriteMessage(typ, frames[:n]) != nil {
				break // the agent closed the socket (a protocol error)
			}
			frames = frames[n:]
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
					t.Fatalf("query %q: the agent kept the socket 10 s after the client's close", query)
				}
				break
			}
		}
	})
}
