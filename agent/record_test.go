package agent_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/client"
	"github.com/porthole-dev/porthole/internal/testutil"
	"github.com/porthole-dev/porthole/protocol"
)

// asciicast is a parsed asciicast v2 file.
type asciicast struct {
	header map[string]any
	events [][3]any // time, code, data
}

func parseCast(t *testing.T, r io.Reader) asciicast {
	t.Helper()
	var c asciicast
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for i := 0; sc.Scan(); i++ {
		if i == 0 {
			if err := json.Unmarshal(sc.Bytes(), &c.header); err != nil {
				t.Fatalf("header %q: %v", sc.Text(), err)
			}
			continue
		}
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		if _, ok := ev[0].(float64); !ok {
			t.Fatalf("event time %v", ev[0])
		}
		c.events = append(c.events, [3]any{ev[0], ev[1], ev[2]})
	}
	return c
}

// recording GETs process id's recording from ta.
func (ta *testAgent) recording(t *testing.T, id string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+ta.addr+"/v1/processes/"+id+"/recording", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// -record DIR: a TTY session's recording has the asciicast v2 header with
// the terminal's size, its resizes and typed input (-record-input), and
// its output events, which concatenated are the ring's content byte for
// byte, UTF-8 split across reads included; it downloads with the agent's
// token only; a process without a terminal is not recorded.
func TestRecording(t *testing.T) {
	dir := t.TempDir()
	ta := startAgent(t, agent.Options{RecordDir: dir, RecordInput: true})
	c := ta.dial(t)
	ctx := ctxT(t)
	script := `i=0; while [ $i -lt 300 ]; do printf 'héllo wörld ✓ %d\n' $i; i=$((i+1)); done; read x; printf 'got %s\n' "$x"`
	var info protocol.ProcessInfo
	if err := c.Call(ctx, protocol.MethodStart, protocol.StartParams{Argv: []string{"sh", "-c", script}, TTY: true,
		Size: protocol.WindowSize{Rows: 30, Cols: 100}}, &info); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(ctx, protocol.MethodResize, protocol.ResizeParams{ID: info.ID, WindowSize: protocol.WindowSize{Rows: 40, Cols: 120}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(ctx, protocol.MethodWrite, protocol.WriteParams{ID: info.ID, Text: "typed\n"}, nil); err != nil {
		t.Fatal(err)
	}
	p, err := c.Attach(ctx, info.ID, client.Offsets{})
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := io.ReadAll(p.Stdout)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if !bytes.Contains(ring, []byte("got typed")) {
		t.Fatalf("the session's output: %q", ring)
	}
	// The recorder ends with the stream; the file is complete once its
	// last event is the output's end.
	var cast asciicast
	testutil.WaitFor(t, "the recording to hold the whole output", func() bool {
		st, body := ta.recording(t, info.ID)
		if st != 200 {
			t.Fatalf("GET recording: %d %s", st, body)
		}
		cast = parseCast(t, bytes.NewReader(body))
		var out strings.Builder
		for _, e := range cast.events {
			if e[1] == "o" {
				out.WriteString(e[2].(string))
			}
		}
		return out.String() == string(ring)
	})
	if cast.header["version"] != 2.0 || cast.header["width"] != 100.0 || cast.header["height"] != 30.0 {
		t.Errorf("header %v; want version 2, 100x30", cast.header)
	}
	var resized, typed bool
	for _, e := range cast.events {
		resized = resized || (e[1] == "r" && e[2] == "120x40")
		typed = typed || (e[1] == "i" && e[2] == "typed\n")
		if e[1] == "m" {
			t.Errorf("a marker: %v", e)
		}
	}
	if !resized || !typed {
		t.Errorf("resize recorded %v, input recorded %v; want both", resized, typed)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 || !strings.HasSuffix(files[0].Name(), "-"+info.ID+".cast") {
		t.Errorf("files in -record: %v", files)
	}

	// Without the token: refused. A pipe process: no recording.
	req, _ := http.NewRequest("GET", "http://"+ta.addr+"/v1/processes/"+info.ID+"/recording", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("without a token: %v %v; want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	pipe := startWait(t, c, protocol.StartParams{Argv: []string{"true"}})
	if st, body := ta.recording(t, pipe.ID); st != 404 || !strings.Contains(string(body), "no recording") {
		t.Errorf("a pipe process: %d %s; want 404, no recording", st, body)
	}
}

// A recording stops at -record-max with a marker saying so; the session
// goes on, its output whole.
func TestRecordingBound(t *testing.T) {
	dir := t.TempDir()
	ta := startAgent(t, agent.Options{RecordDir: dir, RecordMax: 4096})
	c := ta.dial(t)
	info := startWait(t, c, protocol.StartParams{Argv: []string{"seq", "1", "5000"}, TTY: true})
	if info.ExitCode == nil || *info.ExitCode != 0 {
		t.Fatalf("seq: %+v", info)
	}
	var cast asciicast
	var body []byte
	testutil.WaitFor(t, "the recording's bound marker", func() bool {
		_, body = ta.recording(t, info.ID)
		cast = parseCast(t, bytes.NewReader(body))
		n := len(cast.events)
		return n > 0 && cast.events[n-1][1] == "m"
	})
	if last := cast.events[len(cast.events)-1][2].(string); !strings.Contains(last, "bound of 4096 bytes (-record-max)") {
		t.Errorf("last event %q", last)
	}
	if len(body) > 4096+200 {
		t.Errorf("recording of %d bytes; bound 4096 (and its marker)", len(body))
	}
}

// startWait starts spec, reads its output to the end and returns its
// final information.
func startWait(t *testing.T, c *client.Client, spec protocol.StartParams) protocol.ProcessInfo {
	t.Helper()
	p, err := c.Start(ctxT(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go io.Copy(io.Discard, p.Stderr)
	io.Copy(io.Discard, p.Stdout)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	return p.Info()
}

// On its own listener the agent audits as "agent token" whatever
// principal a request claims: only the master's tunnel may name one.
func TestAuditPrincipalDirect(t *testing.T) {
	var logs testutil.SyncBuffer
	ta := startAgent(t, agent.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	req, _ := http.NewRequest("POST", "http://"+ta.addr+"/v1/rpc", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"process.start","params":{"argv":["true"]}}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(protocol.HeaderPrincipal, "mallory")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("start: %v %v", resp, err)
	}
	resp.Body.Close()
	testutil.WaitFor(t, "the audit line", func() bool { return strings.Contains(logs.String(), "msg=audit") })
	if l := logs.String(); !strings.Contains(l, `principal="agent token"`) || strings.Contains(l, "mallory") || !strings.Contains(l, "action=process.start") {
		t.Errorf("audit line:\n%s", l)
	}
}
