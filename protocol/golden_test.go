package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The golden fixtures in fixtures/protocol are the wire contract in
// examples. Each JSON file is one JSON-RPC message; its params, result or
// error is decoded strictly into the matching type, re-encoded and compared
// with the original, so that renaming, dropping or adding a field, or
// changing whether it is omitted when empty, fails here and forces the
// fixture (and docs/protocol.md) to be updated with it.

const fixtureDir = "../fixtures/protocol"

// Message kinds, by which part of the envelope carries the payload.
const (
	kindRequest      = "request"      // method, id, params
	kindNotification = "notification" // method, params, no id
	kindResult       = "result"       // id, result
	kindError        = "error"        // id (possibly null), error
)

// rpcError is the error object of a JSON-RPC response. The protocol
// package has no type of its own for it; the agent uses jsonrpc2.Error.
type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

type golden struct {
	file   string
	kind   string
	method string     // request and notification kinds
	newV   func() any // nil: the message must carry no params
}

func ptr[T any]() func() any { return func() any { return new(T) } }

var goldens = []golden{
	{"hello-notification.json", kindNotification, EventHello, ptr[AgentInfo]()},
	{"agent-info-request.json", kindRequest, MethodAgentInfo, nil},
	{"agent-info-result.json", kindResult, "", ptr[AgentInfo]()},
	{"start-request.json", kindRequest, MethodStart, ptr[StartParams]()},
	{"start-pipe-request.json", kindRequest, MethodStart, ptr[StartParams]()},
	{"start-result.json", kindResult, "", ptr[ProcessInfo]()},
	{"list-request.json", kindRequest, MethodList, nil},
	{"list-result.json", kindResult, "", ptr[ListResult]()},
	{"get-request.json", kindRequest, MethodGet, ptr[IDParams]()},
	{"get-result.json", kindResult, "", ptr[ProcessInfo]()},
	{"signal-request.json", kindRequest, MethodSignal, ptr[SignalParams]()},
	{"empty-result.json", kindResult, "", ptr[Empty]()},
	{"kill-request.json", kindRequest, MethodKill, ptr[IDParams]()},
	{"resize-request.json", kindRequest, MethodResize, ptr[ResizeParams]()},
	{"close-stdin-request.json", kindRequest, MethodCloseStdin, ptr[IDParams]()},
	{"write-request.json", kindRequest, MethodWrite, ptr[WriteParams]()},
	{"write-data-request.json", kindRequest, MethodWrite, ptr[WriteParams]()},
	{"wait-request.json", kindRequest, MethodWait, ptr[IDParams]()},
	{"wait-result.json", kindResult, "", ptr[ProcessInfo]()},
	{"subscribe-request.json", kindRequest, MethodSubscribe, ptr[SubscribeParams]()},
	{"unsubscribe-request.json", kindRequest, MethodUnsubscribe, ptr[IDParams]()},
	{"remove-request.json", kindRequest, MethodRemove, ptr[IDParams]()},
	{"error-response.json", kindError, "", ptr[rpcError]()},
	{"too-large-error-response.json", kindError, "", ptr[rpcError]()},
	{"started-notification.json", kindNotification, EventStarted, ptr[ProcessInfo]()},
	{"output-notification.json", kindNotification, EventOutput, ptr[OutputEvent]()},
	{"output-data-notification.json", kindNotification, EventOutput, ptr[OutputEvent]()},
	{"gap-notification.json", kindNotification, EventGap, ptr[GapEvent]()},
	{"eof-notification.json", kindNotification, EventEOF, ptr[EOFEvent]()},
	{"exited-notification.json", kindNotification, EventExited, ptr[ProcessInfo]()},
}

// envelope is a JSON-RPC 2.0 message; decoding it strictly rejects any
// member JSON-RPC does not define.
type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown
// fields and trailing data.
func decodeStrict(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// sameJSON compares two JSON texts as values: member order and spacing do
// not matter, names, values and presence do.
func sameJSON(t *testing.T, want, got []byte) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("re-encoded: %v", err)
	}
	if !reflect.DeepEqual(w, g) {
		t.Errorf("re-encoding differs from the fixture\nfixture:    %s\nre-encoded: %s", compact(want), got)
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

func TestGoldenMessages(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(fixtureDir, g.file))
			if err != nil {
				t.Fatal(err)
			}
			var env envelope
			if err := decodeStrict(raw, &env); err != nil {
				t.Fatalf("envelope: %v", err)
			}
			var members map[string]json.RawMessage
			if err := json.Unmarshal(raw, &members); err != nil {
				t.Fatal(err)
			}
			_, hasID := members["id"]
			if env.JSONRPC != "2.0" {
				t.Errorf("jsonrpc = %q, want \"2.0\"", env.JSONRPC)
			}
			var payload json.RawMessage
			switch g.kind {
			case kindRequest, kindNotification:
				if env.Method != g.method {
					t.Errorf("method = %q, want %q", env.Method, g.method)
				}
				if hasID != (g.kind == kindRequest) {
					t.Errorf("a %s must %shave an id", g.kind, map[bool]string{true: "", false: "not "}[g.kind == kindRequest])
				}
				if env.Result != nil || env.Error != nil {
					t.Errorf("a %s has no result or error", g.kind)
				}
				payload = env.Params
			case kindResult, kindError:
				if !hasID {
					t.Errorf("a response must have an id (null when unknown)")
				}
				if env.Method != "" || env.Params != nil {
					t.Errorf("a response has no method or params")
				}
				if (env.Result != nil) == (env.Error != nil) {
					t.Fatalf("a response has exactly one of result and error")
				}
				payload = env.Result
				if g.kind == kindError {
					payload = env.Error
				}
			default:
				t.Fatalf("bad kind %q", g.kind)
			}
			if g.newV == nil {
				if payload != nil {
					t.Fatalf("%s takes no params, fixture has %s", g.method, payload)
				}
				return
			}
			if payload == nil {
				t.Fatalf("fixture has no payload")
			}
			v := g.newV()
			if err := decodeStrict(payload, v); err != nil {
				t.Fatalf("decoding into %T: %v", v, err)
			}
			got, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, payload, got)
			checkSemantics(t, v)
		})
	}
}

// checkSemantics checks the rules a fixture must follow beyond its shape,
// so that the examples stay valid examples.
func checkSemantics(t *testing.T, v any) {
	t.Helper()
	switch v := v.(type) {
	case *OutputEvent:
		if _, err := ParseStream(v.Stream); err != nil {
			t.Error(err)
		}
		if (v.Text == "") == (len(v.Data) == 0) {
			t.Errorf("output event: exactly one of text and data must be set")
		}
		if n := len(v.Text) + len(v.Data); v.Len != n {
			t.Errorf("output event: len = %d, but the payload has %d bytes", v.Len, n)
		}
	case *GapEvent:
		if _, err := ParseStream(v.Stream); err != nil {
			t.Error(err)
		}
		if v.From >= v.To {
			t.Errorf("gap [%d, %d) is empty", v.From, v.To)
		}
	case *EOFEvent:
		if _, err := ParseStream(v.Stream); err != nil {
			t.Error(err)
		}
	case *WriteParams:
		if (v.Text == "") == (len(v.Data) == 0) {
			t.Errorf("write: exactly one of text and data must be set")
		}
	case *SignalParams:
		if _, err := ParseSignal(v.Signal); err != nil {
			t.Error(err)
		}
	case *ListResult:
		for i := range v.Processes {
			checkSemantics(t, &v.Processes[i])
		}
	case *ProcessInfo:
		switch v.State {
		case StateRunning:
			if v.ExitedAt != nil || v.ExitCode != nil || v.Signal != "" {
				t.Errorf("process %s: a running process has no exit status", v.ID)
			}
		case StateExited:
			if v.ExitedAt == nil || (v.ExitCode == nil) == (v.Signal == "") {
				t.Errorf("process %s: an exited process has exitedAt and exactly one of exitCode and signal", v.ID)
			}
		default:
			t.Errorf("process %s: state %q", v.ID, v.State)
		}
		if v.TTY != (v.Size != nil) || v.TTY != (v.Stderr == nil) {
			t.Errorf("process %s: a TTY process has a size and no stderr; a pipe process the reverse", v.ID)
		}
	case *rpcError:
		if !slices.Contains(allErrorCodes, v.Code) {
			t.Errorf("error code %d is not one of protocol/errors.go", v.Code)
		}
	}
}

var allErrorCodes = []int{
	CodeParseError, CodeInvalidRequest, CodeMethodNotFound, CodeInvalidParams, CodeInternalError,
	CodeNotFound, CodeNotRunning, CodeLimit, CodeStartFailed, CodeNotTTY, CodeStillRunning, CodeTooLarge,
}

var allCloseCodes = []int{
	CloseNormal, CloseGoingAway, CloseProtocolError, CloseTooBig, CloseProcessRemoved, CloseIdle,
}

var allMethods = []string{
	MethodAgentInfo, MethodStart, MethodList, MethodGet, MethodSignal, MethodKill, MethodResize,
	MethodCloseStdin, MethodWrite, MethodWait, MethodSubscribe, MethodUnsubscribe, MethodRemove,
}

var allEvents = []string{EventHello, EventStarted, EventOutput, EventGap, EventEOF, EventExited}

// TestGoldenCoverage: every method has a request fixture, every event a
// notification fixture, and every fixture file is checked.
func TestGoldenCoverage(t *testing.T) {
	have := map[string]bool{}
	listed := map[string]bool{}
	for _, g := range goldens {
		listed[g.file] = true
		if g.method != "" {
			have[g.method] = true
		}
	}
	for _, m := range slices.Concat(allMethods, allEvents) {
		if !have[m] {
			t.Errorf("no fixture for %s", m)
		}
	}
	for _, h := range hexGoldens {
		listed[h.file] = true
	}
	entries, err := os.ReadDir(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !listed[e.Name()] {
			t.Errorf("fixture %s is not checked by any test: add it to goldens or hexGoldens", e.Name())
		}
	}
}

// readHex reads a hex fixture: hex digit pairs separated by white space;
// "#" starts a comment that runs to the end of the line.
func readHex(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(raw)) {
		line, _, _ = strings.Cut(line, "#")
		for _, f := range strings.Fields(line) {
			digits.WriteString(f)
		}
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

type hexGolden struct {
	file    string
	input   bool // a client-to-agent stdin frame
	stream  Stream
	offset  int64
	payload string
}

var hexGoldens = []hexGolden{
	{file: "output-frame.hex", stream: Stdout, offset: 18734, payload: "✓ build passed\n"},
	{file: "stderr-frame.hex", stream: Stderr, offset: 512, payload: "warn: slow test\n"},
	{file: "input-frame.hex", input: true, stream: Stdin, payload: "ls -l\r"},
}

func TestGoldenFrames(t *testing.T) {
	for _, h := range hexGoldens {
		t.Run(h.file, func(t *testing.T) {
			frame := readHex(t, h.file)
			var again []byte
			if h.input {
				data, err := ParseInputFrame(frame)
				if err != nil {
					t.Fatal(err)
				}
				if string(data) != h.payload {
					t.Errorf("stdin = %q, want %q", data, h.payload)
				}
				again = AppendInputFrame(nil, data)
			} else {
				s, off, payload, err := ParseOutputFrame(frame)
				if err != nil {
					t.Fatal(err)
				}
				if s != h.stream || off != h.offset || string(payload) != h.payload {
					t.Errorf("got %v@%d %q, want %v@%d %q", s, off, payload, h.stream, h.offset, h.payload)
				}
				again = AppendOutputFrame(nil, s, off, payload)
			}
			if !bytes.Equal(again, frame) {
				t.Errorf("re-encoded frame differs\nfixture:    % x\nre-encoded: % x", frame, again)
			}
		})
	}
}

// TestDocCoversContract keeps docs/protocol.md in step with the code: every
// method, event, error code, close code, subprotocol and the version must
// appear in it.
func TestDocCoversContract(t *testing.T) {
	raw, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	want := slices.Concat(allMethods, allEvents, []string{
		SubprotocolRPC, SubprotocolAttach, SubprotocolRaw, TokenSubprotocolPrefix,
		HeaderProtocol, HeaderAgentVersion, `"` + Version + `"`,
	})
	for _, c := range slices.Concat(allErrorCodes, allCloseCodes) {
		want = append(want, strconv.Itoa(c))
	}
	for _, w := range want {
		if !strings.Contains(doc, w) {
			t.Errorf("docs/protocol.md does not mention %s", w)
		}
	}
}
