package cheapi_test

// Replays the conversations recorded from Che's own exec-agent and
// terminal-agent (../shared/che-golden, README there) against the porthole
// agent with -che, and compares what porthole sends with what Che sent,
// after the README's normalisation. Where porthole deliberately differs
// (Che crashes, corrupts, or hangs), the test asserts porthole's behaviour
// and docs/che-compatibility.md lists the difference.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/internal/testutil"
)

// goldenDir holds the recordings (a copy of ../shared/che-golden: data
// only, recorded from Che's agents; its README says how to read them).
func goldenDir(t *testing.T) string {
	t.Helper()
	const dir = "testdata/che-golden"
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Fatalf("the recordings are missing: %v", err)
	}
	return dir
}

// step is one step of a client script.
type step struct {
	Send          *string         `json:"send"`
	SendRawBinary *string         `json:"send_raw_binary"`
	Wait          *string         `json:"wait"`
	WaitJSON      map[string]any  `json:"wait_json"`
	SleepMS       *int            `json:"sleep_ms"`
	Close         *int            `json:"close"`
	Reason        string          `json:"reason"`
	WaitClose     *int            `json:"wait_close"`
	Mark          *string         `json:"mark"`
	TimeoutMS     int             `json:"timeout_ms"`
	Raw           json.RawMessage `json:"-"`
}

// record is one line of a recording.
type record struct {
	TMS       int    `json:"t_ms"`
	Dir       string `json:"dir"`
	Type      string `json:"type"`
	Data      string `json:"data"`
	Code      int    `json:"code"`
	UTF8Valid *bool  `json:"utf8_valid"`
}

func readScript(t *testing.T, path string) []step {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []step
	if err := json.Unmarshal(b, &steps); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return steps
}

func readRecords(t *testing.T, path string) []record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, r)
	}
	return out
}

// received are the data and close frames the agent sent.
func received(rs []record) []record {
	var out []record
	for _, r := range rs {
		if r.Dir == "recv" && (r.Type == "text" || r.Type == "binary" || r.Type == "close") {
			out = append(out, r)
		}
	}
	return out
}

// player drives one WebSocket conversation.
type player struct {
	t     *testing.T
	ws    *websocket.Conn
	in    chan record
	got   []record        // everything received so far, in order
	next  int             // got[next:] not yet consumed by a wait
	tb    strings.Builder // every text frame, concatenated (see text)
	tpos  int             // terminal: text consumed by waits
	ended bool
	// onSleep, when set, replaces a sleep_ms step: the script's pauses
	// let Che's agent catch up; the test waits for the event instead.
	onSleep     func(i int)
	onMark      func(string)
	onWaitClose func()
}

func dial(t *testing.T, url string) *player {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	resp.Body.Close()
	p := &player{t: t, ws: ws, in: make(chan record, 1024)}
	// Record the agent's close frame as the client sees it; answer it as
	// gorilla does.
	go func() {
		defer close(p.in)
		for {
			typ, b, err := ws.ReadMessage()
			if err != nil {
				if ce, ok := err.(*websocket.CloseError); ok {
					p.in <- record{Dir: "recv", Type: "close", Code: ce.Code, Data: ce.Text}
				}
				p.in <- record{Dir: "recv", Type: "read-end", Data: err.Error()}
				return
			}
			r := record{Dir: "recv", Type: "text", Data: string(b)}
			if typ == websocket.BinaryMessage {
				r.Type = "binary"
			}
			p.in <- r
		}
	}()
	t.Cleanup(func() {
		ws.Close()
		for range p.in {
		}
	})
	return p
}

// pull receives one record, failing after the deadline.
func (p *player) pull(what string) record {
	p.t.Helper()
	select {
	case r, ok := <-p.in:
		if !ok {
			p.t.Fatalf("%s: the connection ended; received: %s", what, p.dump())
		}
		if r.Type == "read-end" {
			p.ended = true
		} else {
			p.got = append(p.got, r)
			if r.Type == "text" {
				p.tb.WriteString(r.Data)
			}
		}
		return r
	case <-time.After(testutil.Wait):
		p.t.Fatalf("%s: nothing within %s; received: %s", what, testutil.Wait, p.dump())
	}
	return record{}
}

// text is every text frame received so far, concatenated.
func (p *player) text() string { return p.tb.String() }

func (p *player) dump() string {
	var b strings.Builder
	for _, r := range p.got {
		fmt.Fprintf(&b, "\n  %s %d %q", r.Type, r.Code, r.Data)
	}
	return b.String()
}

// matchJSON reports whether the frame holds every key of want (dotted
// paths) with an equal value.
func matchJSON(data string, want map[string]any) bool {
	var v any
	if json.Unmarshal([]byte(data), &v) != nil {
		return false
	}
	for k, w := range want {
		cur := v
		for _, part := range strings.Split(k, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				return false
			}
			cur = m[part]
		}
		if !reflect.DeepEqual(cur, w) {
			return false
		}
	}
	return true
}

// waitJSON consumes received frames up to one that matches want.
func (p *player) waitJSON(what string, want map[string]any) {
	p.t.Helper()
	for {
		for ; p.next < len(p.got); p.next++ {
			if p.got[p.next].Type == "text" && matchJSON(p.got[p.next].Data, want) {
				p.next++
				return
			}
		}
		p.pull(what)
	}
}

func (p *player) play(steps []step) {
	p.t.Helper()
	for i, s := range steps {
		switch {
		case s.Send != nil:
			if err := p.ws.WriteMessage(websocket.TextMessage, []byte(*s.Send)); err != nil {
				p.t.Fatalf("step %d: send: %v", i, err)
			}
		case s.SendRawBinary != nil:
			if err := p.ws.WriteMessage(websocket.BinaryMessage, []byte(*s.SendRawBinary)); err != nil {
				p.t.Fatalf("step %d: send binary: %v", i, err)
			}
		case s.WaitJSON != nil:
			p.waitJSON(fmt.Sprintf("step %d: wait_json %v", i, s.WaitJSON), s.WaitJSON)
		case s.Wait != nil:
			for {
				if j := strings.Index(p.text()[p.tpos:], *s.Wait); j >= 0 {
					p.tpos += j + len(*s.Wait)
					break
				}
				p.pull(fmt.Sprintf("step %d: wait %q", i, *s.Wait))
			}
		case s.SleepMS != nil:
			if p.onSleep != nil {
				p.onSleep(i)
			}
		case s.Close != nil:
			msg := websocket.FormatCloseMessage(*s.Close, s.Reason)
			if err := p.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
				p.t.Fatalf("step %d: close: %v", i, err)
			}
		case s.WaitClose != nil:
			if p.onWaitClose != nil {
				p.onWaitClose()
			}
			for !p.ended {
				p.pull(fmt.Sprintf("step %d: wait_close", i))
			}
		case s.Mark != nil:
			if p.onMark != nil {
				p.onMark(*s.Mark)
			}
		}
	}
	// The rest, up to the end of the connection.
	for !p.ended {
		p.pull("the end of the connection")
	}
}

// normJSON replaces the fields the README says to normalise (every
// "time", "nativePid") and re-encodes canonically.
func normJSON(t *testing.T, data string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("not JSON: %q: %v", data, err)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				switch k {
				case "time":
					x[k] = "<time>"
				case "nativePid":
					x[k] = "<pid>"
				default:
					x[k] = walk(e)
				}
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
		}
		return v
	}
	return walk(v)
}

func enc(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// outputEvent reports whether v is a process_stdout/stderr notification.
func outputEvent(v any) bool {
	m, ok := v.(map[string]any)
	return ok && (m["method"] == "process_stdout" || m["method"] == "process_stderr")
}

// byStream splits output events or log lines into per-stream sequences:
// stdout and stderr are separate pipes, so only each stream's own order
// is defined (Che's recordings show stderr first where the command
// wrote stdout first).
func byStream(vs []any) map[string][]string {
	out := map[string][]string{}
	for _, v := range vs {
		m := v.(map[string]any)
		key := fmt.Sprint(m["method"], m["kind"])
		if p, ok := m["params"]; ok {
			out[key] = append(out[key], enc(p))
		} else {
			out[key] = append(out[key], enc(m))
		}
	}
	return out
}

// logLines returns a result that is a list of LogMessages, or nil.
func logLines(v any) []any {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	r, ok := m["result"].([]any)
	if !ok || len(r) == 0 {
		return nil
	}
	for _, e := range r {
		if l, ok := e.(map[string]any); !ok || l["kind"] == nil {
			return nil
		}
	}
	return r
}

// sameLog reports whether two lists of log lines (or output events) are
// equal up to the interleaving of stdout and stderr.
func sameLog(a, b []any) bool {
	return len(a) == len(b) && reflect.DeepEqual(byStream(a), byStream(b))
}

// compareFrames compares Che's frames with porthole's: JSON frames after
// normalisation, exactly, except that runs of output events and lists of
// log lines are compared per stream. override, when it returns true for
// an expected frame's index, has checked the actual frame itself.
func compareFrames(t *testing.T, want, got []record, override func(i int, want, got any) bool) {
	t.Helper()
	var wv, gv []any
	conv := func(rs []record) []any {
		var out []any
		for _, r := range rs {
			switch r.Type {
			case "text":
				out = append(out, normJSON(t, r.Data))
			case "close":
				out = append(out, map[string]any{"close": r.Code})
			default:
				out = append(out, map[string]any{r.Type: r.Data})
			}
		}
		return out
	}
	wv, gv = conv(want), conv(got)
	i, j := 0, 0
	for i < len(wv) && j < len(gv) {
		if outputEvent(wv[i]) {
			i2, j2 := i, j
			for i2 < len(wv) && outputEvent(wv[i2]) {
				i2++
			}
			for j2 < len(gv) && outputEvent(gv[j2]) {
				j2++
			}
			if !sameLog(wv[i:i2], gv[j:j2]) {
				t.Errorf("output events %d..%d differ:\n che:      %s\n porthole: %s", i, i2, enc(wv[i:i2]), enc(gv[j:j2]))
			}
			i, j = i2, j2
			continue
		}
		switch {
		case override != nil && override(i, wv[i], gv[j]):
		case reflect.DeepEqual(wv[i], gv[j]):
		case logLines(wv[i]) != nil && logLines(gv[j]) != nil && sameLog(logLines(wv[i]), logLines(gv[j])):
		default:
			t.Errorf("frame %d differs:\n che:      %s\n porthole: %s", i, enc(wv[i]), enc(gv[j]))
		}
		i++
		j++
	}
	if i < len(wv) || j < len(gv) {
		t.Errorf("frame counts differ: che %d, porthole %d\n che rest:      %s\n porthole rest: %s", len(wv), len(gv), enc(wv[i:]), enc(gv[j:]))
	}
}

// rpcResult finds the answer with the given id among the frames.
func rpcResult(t *testing.T, got []record, id float64) any {
	t.Helper()
	for _, r := range got {
		if r.Type != "text" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(r.Data), &m) == nil && m["id"] == id {
			return normJSON(t, r.Data)
		}
	}
	t.Fatalf("no answer with id %v", id)
	return nil
}

// pagedMiddle is the override for getLogs with limit 1 and skip 1: the
// middle line of porthole's own full log, whose order between stdout and
// stderr is the order the lines arrived in, not Che's.
func pagedMiddle(t *testing.T, got []record, fullID float64) func(want, gotv any) bool {
	return func(want, gotv any) bool {
		full := rpcResult(t, got, fullID).(map[string]any)["result"].([]any)
		r := gotv.(map[string]any)["result"].([]any)
		if len(r) != 1 || !reflect.DeepEqual(r[0], full[1]) {
			t.Errorf("limit 1 skip 1: got %s, want the middle of %s", enc(r), enc(full))
		}
		return true
	}
}

func httpDo(t *testing.T, method, url, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
