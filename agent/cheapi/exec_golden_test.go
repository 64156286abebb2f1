package cheapi_test

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/agenttest"
	"github.com/porthole-dev/porthole/agent/cheapi"
	"github.com/porthole-dev/porthole/internal/clock/clocktest"
	"github.com/porthole-dev/porthole/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

const token = "che-test-token-0123456789"

// cheAgent is a porthole agent with -che on loopback.
type cheAgent struct {
	a    *agent.Agent
	addr string
}

func startChe(t testing.TB, o cheapi.Options, ao agent.Options) *cheAgent {
	t.Helper()
	if ao.Token == "" && !ao.InsecureNoAuth {
		ao.Token = token
	}
	if ao.Clock == nil {
		ao.Clock = clocktest.New() // no pings, no stall demotions under load
	}
	if o.Shell == "" {
		o.Shell = "/bin/bash"
	}
	ao.Extensions = append(ao.Extensions, cheapi.Extension(o))
	a, addr := agenttest.Start(t, ao)
	return &cheAgent{a: a, addr: addr}
}

// url is a Che client's URL: the token in ?token=, as the IDE sends it.
func (c *cheAgent) url(scheme, path string) string {
	return scheme + "://" + c.addr + path + "?token=" + url.QueryEscape(token)
}

func (c *cheAgent) urlQ(scheme, path, query string) string {
	return c.url(scheme, path) + "&" + query
}

func execGolden(t *testing.T, name string) (steps []step, want []record) {
	dir := filepath.Join(goldenDir(t), "exec-agent")
	return readScript(t, filepath.Join(dir, name+".script.json")), received(readRecords(t, filepath.Join(dir, name+".jsonl")))
}

// TestGoldenE1Lifecycle: hello, start (result, then process_started,
// output, process_died exit 3), getLogs (kind an int), getProcess,
// getProcesses all/alive, paged and negative-limit getLogs.
func TestGoldenE1Lifecycle(t *testing.T) {
	steps, want := execGolden(t, "e1-lifecycle")
	c := startChe(t, cheapi.Options{}, agent.Options{})
	p := dial(t, c.url("ws", "/connect"))
	p.play(steps)
	compareFrames(t, want, p.got, func(i int, w, g any) bool {
		if m, _ := w.(map[string]any); m != nil && m["id"] == float64(6) {
			return pagedMiddle(t, p.got, 2)(w, g)
		}
		return false
	})
}

// TestGoldenE2KillAndSubscriptions: eventTypes on start, duplicate
// subscribe (100), updateSubscriber, unsubscribe twice, subscribe with
// after (replay before the answer), kill (-1), kill again (102), unknown
// pid (101), after on a dead process, updateSubscriber on it (102).
func TestGoldenE2KillAndSubscriptions(t *testing.T) {
	steps, want := execGolden(t, "e2-kill-and-subscriptions")
	c := startChe(t, cheapi.Options{}, agent.Options{})
	p := dial(t, c.url("ws", "/connect"))
	sleeps := 0
	p.onSleep = func(int) {
		sleeps++
		if sleeps == 1 {
			// Che's client paused until the stderr line was logged too
			// (the tunnel does not subscribe to stderr): wait for it.
			testutil.WaitFor(t, "both lines in the log", func() bool {
				_, body := httpDo(t, "GET", c.url("http", "/process/1/logs"), "")
				return strings.Contains(body, "to-stderr") && strings.Contains(body, "started")
			})
		}
	}
	p.play(steps)
	compareFrames(t, want, p.got, nil)
}

// TestGoldenE3Errors: Che's framing and validation errors, a notification
// start, a stray response and a binary frame (both ignored).
func TestGoldenE3Errors(t *testing.T) {
	steps, want := execGolden(t, "e3-errors")
	c := startChe(t, cheapi.Options{}, agent.Options{})
	p := dial(t, c.url("ws", "/connect"))
	p.play(steps)
	compareFrames(t, want, p.got, nil)
}

// TestGoldenE4ParamsNull: "params":null killed Che's whole exec-agent
// (the socket ended with 1006 and /liveness stopped answering). porthole
// answers -32602, goes on answering, and stays alive.
func TestGoldenE4ParamsNull(t *testing.T) {
	steps, want := execGolden(t, "e4-params-null")
	if len(want) != 1 || !strings.Contains(readFile(t, filepath.Join(goldenDir(t), "exec-agent", "e4-params-null.jsonl")), "1006") {
		t.Fatalf("the recording no longer shows Che's crash: %+v", want)
	}
	c := startChe(t, cheapi.Options{}, agent.Options{})
	p := dial(t, c.url("ws", "/connect"))
	p.play(steps)
	if len(p.got) != 4 {
		t.Fatalf("got %d frames, want hello, error, answer, close: %s", len(p.got), p.dump())
	}
	if g := normJSON(t, p.got[1].Data); !reflect.DeepEqual(g, normJSON(t, `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"params must be an object, not null"}}`)) {
		t.Errorf("params null: got %s", enc(g))
	}
	if g := normJSON(t, p.got[2].Data); !reflect.DeepEqual(g, normJSON(t, `{"jsonrpc":"2.0","id":2,"result":[]}`)) {
		t.Errorf("after it: got %s", enc(g))
	}
	if p.got[3].Type != "close" || p.got[3].Code != 1005 {
		t.Errorf("end: got %+v, want the answer to the client's close (1005)", p.got[3])
	}
	if resp, _ := httpDo(t, "GET", "http://"+c.addr+"/liveness", ""); resp.StatusCode != 200 {
		t.Errorf("/liveness after params null: %d", resp.StatusCode)
	}
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// restCall is one record of rest-*.jsonl.
type restCall struct {
	Request struct {
		Method string  `json:"method"`
		Path   string  `json:"path"`
		Body   *string `json:"body"`
	} `json:"request"`
	Response struct {
		Status      int     `json:"status"`
		ContentType *string `json:"content_type"`
		Body        string  `json:"body"`
	} `json:"response"`
	Note string `json:"note"`
}

func readREST(t *testing.T, name string) []restCall {
	var out []restCall
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, filepath.Join(goldenDir(t), "exec-agent", name))), "\n") {
		var c restCall
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// replayREST makes the calls and compares status, content type and body
// (JSON normalised, log lines per stream; text logs with times removed).
func replayREST(t *testing.T, c *cheAgent, calls []restCall) {
	t.Helper()
	var fullLog any
	for _, call := range calls {
		rq := call.Request
		name := rq.Method + " " + rq.Path
		want := call.Response
		// Che's client waited for the process to end before reading it.
		if rq.Method == "GET" && strings.Contains(want.Body, `"alive":false`) && !strings.Contains(rq.Path, "?") {
			testutil.WaitFor(t, name+": the process to end", func() bool {
				_, b := httpDo(t, "GET", c.url("http", rq.Path), "")
				return strings.Contains(b, `"alive":false`)
			})
		}
		u := c.url("http", rq.Path)
		if path, q, ok := strings.Cut(rq.Path, "?"); ok {
			u = c.urlQ("http", path, q)
		}
		body := ""
		if rq.Body != nil {
			body = *rq.Body
		}
		resp, got := httpDo(t, rq.Method, u, body)
		if resp.StatusCode != want.Status {
			t.Errorf("%s: status %d, want %d (body %q)", name, resp.StatusCode, want.Status, got)
			continue
		}
		ct := resp.Header.Get("Content-Type")
		if want.ContentType != nil && ct != *want.ContentType || want.ContentType == nil && ct != "" {
			t.Errorf("%s: content type %q, want %v", name, ct, want.ContentType)
		}
		switch {
		case strings.HasPrefix(ct, "application/json"):
			w, g := normJSON(t, want.Body), normJSON(t, got)
			wl, _ := w.([]any)
			gl, _ := g.([]any)
			switch {
			case reflect.DeepEqual(w, g):
			case strings.Contains(rq.Path, "limit=1&skip=1") && len(gl) == 1 && fullLog != nil:
				if !reflect.DeepEqual(gl[0], fullLog.([]any)[1]) {
					t.Errorf("%s: got %s, want the middle of %s", name, enc(g), enc(fullLog))
				}
			case wl != nil && gl != nil && isLog(wl) && sameLog(wl, gl):
			default:
				t.Errorf("%s:\n che:      %s\n porthole: %s", name, want.Body, got)
			}
			if rq.Path == "/process/1/logs" {
				fullLog = g
			}
		case strings.Contains(rq.Path, "format=text"):
			if !sameLines(stripTimes(want.Body), stripTimes(got)) {
				t.Errorf("%s:\n che:      %q\n porthole: %q", name, want.Body, got)
			}
		default:
			if got != want.Body {
				t.Errorf("%s: body %q, want %q", name, got, want.Body)
			}
		}
	}
}

func isLog(l []any) bool {
	for _, e := range l {
		if m, ok := e.(map[string]any); !ok || m["kind"] == nil {
			return false
		}
	}
	return true
}

// stripTimes removes the time of text log lines "[KIND] TIME \t TEXT".
func stripTimes(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		kind, rest, _ := strings.Cut(l, " ")
		_, text, _ := strings.Cut(rest, " \t ")
		out = append(out, kind+" "+text)
	}
	return out
}

// sameLines compares per stream, as sameLog does.
func sameLines(a, b []string) bool {
	split := func(ls []string) map[string][]string {
		m := map[string][]string{}
		for _, l := range ls {
			k, _, _ := strings.Cut(l, " ")
			m[k] = append(m[k], l)
		}
		return m
	}
	return len(a) == len(b) && reflect.DeepEqual(split(a), split(b))
}

// TestGoldenRESTMain replays rest-main.jsonl: liveness, start, get, logs
// (json, text, paging, limit 0, bad values, from/till), lists, kill of a
// dead and a live process, 404s, validation, 405.
func TestGoldenRESTMain(t *testing.T) {
	calls := readREST(t, "rest-main.jsonl")
	c := startChe(t, cheapi.Options{}, agent.Options{})
	replayREST(t, c, calls)
}

// TestGoldenE5RESTChannel: POST /process?channel=tunnel-1&types=... sends
// the process's events to that WebSocket.
func TestGoldenE5RESTChannel(t *testing.T) {
	steps, want := execGolden(t, "e5-rest-channel")
	calls := readREST(t, "rest-channel.jsonl")
	c := startChe(t, cheapi.Options{}, agent.Options{})
	p := dial(t, c.url("ws", "/connect"))
	p.onMark = func(string) { replayREST(t, c, calls) }
	p.play(steps)
	compareFrames(t, want, p.got, nil)
}
