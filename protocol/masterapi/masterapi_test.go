package masterapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The golden fixtures in fixtures/masterapi are the client API in
// examples: JSON-RPC messages of /api/rpc and bodies of the HTTP API. Each
// payload is decoded strictly into its type, re-encoded and compared byte
// for byte with the original, so that renaming, dropping or adding a
// field, or changing whether it is omitted, fails here and forces the
// fixture (and docs/master.md) to change with it.

const fixtureDir = "../../fixtures/masterapi"

// Where a fixture's payload is.
const (
	kindBody         = "body"         // the whole file (HTTP API)
	kindRequest      = "request"      // params of a request
	kindNotification = "notification" // params of a notification
	kindResult       = "result"       // result of a response
	kindError        = "error"        // error of a response
)

func ptr[T any]() func() any { return func() any { return new(T) } }

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

var goldens = []struct {
	file   string
	kind   string
	method string     // requests and notifications
	newV   func() any // nil: no params
}{
	{"runtime-list-request.json", kindRequest, MethodRuntimeList, nil},
	{"runtime-list-result.json", kindResult, "", ptr[[]*Runtime]()},
	{"subscribe-request.json", kindRequest, MethodRuntimeSubscribe, ptr[SubscribeParams]()},
	{"subscribe-all-request.json", kindRequest, MethodRuntimeSubscribe, ptr[SubscribeParams]()},
	{"subscribe-result.json", kindResult, "", ptr[SubscribeResult]()},
	{"unsubscribe-request.json", kindRequest, MethodRuntimeUnsubscribe, ptr[UnsubscribeParams]()},
	{"machine-notification.json", kindNotification, NotifyMachine, ptr[MachineNotification]()},
	{"entries-notification.json", kindNotification, NotifyEntries, ptr[EntriesNotification]()},
	{"error-forbidden.json", kindError, "", ptr[rpcError]()},
	{"error-event-forbidden.json", kindError, "", ptr[rpcError]()},
	{"runtime.json", kindBody, "", ptr[Runtime]()},
	{"machine.json", kindBody, "", ptr[Machine]()},
	{"entry-bootstrapper.json", kindBody, "", ptr[Entry]()},
	{"entry-installer.json", kindBody, "", ptr[Entry]()},
	{"entry-log.json", kindBody, "", ptr[Entry]()},
	{"entry-log-raw-partial.json", kindBody, "", ptr[Entry]()},
	{"entry-log-lost.json", kindBody, "", ptr[Entry]()},
	{"entry-server.json", kindBody, "", ptr[Entry]()},
	{"entry-agent-connected.json", kindBody, "", ptr[Entry]()},
	{"entry-agent-disconnected.json", kindBody, "", ptr[Entry]()},
	{"logs-page.json", kindBody, "", ptr[LogsPage]()},
	{"info.json", kindBody, "", ptr[Info]()},
	{"ticket.json", kindBody, "", ptr[Ticket]()},
	{"http-error.json", kindBody, "", ptr[Error]()},
}

type envelope struct {
	JSONRPC string           `json:"jsonrpc"`
	ID      *json.RawMessage `json:"id"`
	Method  string           `json:"method"`
	Params  json.RawMessage  `json:"params"`
	Result  json.RawMessage  `json:"result"`
	Error   json.RawMessage  `json:"error"`
}

// strict decodes exactly one JSON value into v, rejecting unknown fields
// and trailing data.
func strict(data []byte, v any) error {
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

// roundTrip decodes data strictly into v and checks that v re-encodes to
// exactly data.
func roundTrip(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := strict(data, v); err != nil {
		t.Fatalf("decoding into %T: %v", v, err)
	}
	got, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("re-encoded %T differs:\n got %s\nwant %s", v, got, data)
	}
}

func TestGoldens(t *testing.T) {
	seen := map[string]bool{}
	for _, g := range goldens {
		seen[g.file] = true
		t.Run(g.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(fixtureDir, g.file))
			if err != nil {
				t.Fatal(err)
			}
			data = bytes.TrimSuffix(data, []byte("\n"))
			payload := data
			if g.kind != kindBody {
				var env envelope
				if err := strict(data, &env); err != nil {
					t.Fatalf("envelope: %v", err)
				}
				if env.JSONRPC != "2.0" || env.Method != g.method {
					t.Fatalf("envelope = %q %q; want 2.0 %q", env.JSONRPC, env.Method, g.method)
				}
				if hasID := env.ID != nil || bytes.Contains(data, []byte(`"id":null`)); hasID == (g.kind == kindNotification) {
					t.Errorf("a %s with id %v", g.kind, hasID)
				}
				payload = map[string]json.RawMessage{
					kindRequest: env.Params, kindNotification: env.Params, kindResult: env.Result, kindError: env.Error,
				}[g.kind]
			}
			if g.newV == nil {
				if payload != nil {
					t.Fatalf("%s takes no params; the fixture has %s", g.method, payload)
				}
				return
			}
			v := g.newV()
			roundTrip(t, payload, v)
			switch v := v.(type) {
			case *EntriesNotification:
				for _, raw := range v.Entries {
					roundTrip(t, raw, new(Entry))
				}
			case *LogsPage:
				for _, raw := range v.Entries {
					roundTrip(t, raw, new(Entry))
				}
			case *rpcError:
				if v.Code != CodeForbidden {
					t.Errorf("code %d; want CodeForbidden", v.Code)
				}
			}
		})
	}
	files, _ := filepath.Glob(filepath.Join(fixtureDir, "*.json"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("fixture %s is not checked by TestGoldens", f)
		}
	}
}

// A Go program reads the master's API importing this package only: it
// pulls in the standard library and protocol packages, never the master's
// store, tokens or WebSocket libraries.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	const allowed = "github.com/porthole-dev/porthole/protocol"
	for _, pkg := range strings.Fields(string(out)) {
		if pkg != allowed && !strings.HasPrefix(pkg, allowed+"/") {
			t.Errorf("protocol/masterapi depends on %s: only the standard library and protocol packages are allowed", pkg)
		}
	}
}
