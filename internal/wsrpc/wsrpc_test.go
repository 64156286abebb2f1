package wsrpc

import (
	"errors"
	"strings"
	"testing"

	"github.com/sourcegraph/jsonrpc2"
	"go.uber.org/goleak"

	"github.com/porthole-dev/porthole/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDecode(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		code    int // 0: decodes
		mention string
		id      string
	}{
		{name: "request", in: `{"jsonrpc":"2.0","id":1,"method":"agent.info"}`},
		{name: "no jsonrpc field (che style)", in: `{"id":1,"method":"agent.info"}`},
		{name: "notification", in: `{"jsonrpc":"2.0","method":"x"}`},
		{name: "truncated", in: `{"jsonrpc":"2.0","id":1`, code: protocol.CodeParseError, mention: "parse error"},
		{name: "batch", in: ` [{"jsonrpc":"2.0","id":1,"method":"a"}]`, code: protocol.CodeInvalidRequest, mention: "batch"},
		{name: "not an object", in: `42`, code: protocol.CodeInvalidRequest, mention: "object"},
		{name: "wrong version keeps id", in: `{"jsonrpc":"3.0","id":"a","method":"x"}`, code: protocol.CodeInvalidRequest, mention: `"3.0"`, id: `"a"`},
		{name: "empty method", in: `{"jsonrpc":"2.0","id":7,"method":""}`, code: protocol.CodeInvalidRequest, mention: "method is empty", id: "7"},
		{name: "neither request nor response", in: `{"jsonrpc":"2.0","id":7}`, code: protocol.CodeInvalidRequest, id: "7"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req jsonrpc2.Request
			err := Decode([]byte(tc.in), &req)
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("Decode = %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tc.code || !strings.Contains(e.Message, tc.mention) {
				t.Fatalf("Decode = %v; want code %d mentioning %q", err, tc.code, tc.mention)
			}
			if tc.id != "" && (e.ID == nil || string(*e.ID) != tc.id) {
				t.Fatalf("error id = %v; want %s", e.ID, tc.id)
			}
		})
	}
}
