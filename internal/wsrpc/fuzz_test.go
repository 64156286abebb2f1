package wsrpc

import (
	"errors"
	"testing"

	"github.com/sourcegraph/jsonrpc2"
)

// FuzzDecode: every JSON-RPC message from a client goes through Decode
// first. It never panics; a failure is always an *Error with a JSON-RPC
// code, and what it accepts as a request has a method.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"agent.info"}`,
		`{"jsonrpc":"2.0","method":"process.kill","params":{"id":"1"}}`,
		`{"jsonrpc":"1.0","id":"x","method":"m"}`,
		`{"jsonrpc":"2.0","id":1,"method":""}`,
		`[{"jsonrpc":"2.0","id":1,"method":"m"}]`,
		`{"id":1,"result":{}}`,
		`"string"`, `{`, ` `, `{"jsonrpc":"2.0","id":{"a":1},"method":"m","params":[1,2]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req jsonrpc2.Request
		err := Decode(data, &req)
		var e *Error
		switch {
		case err == nil:
		case !errors.As(err, &e) || e.Code >= 0 || e.Message == "":
			t.Fatalf("Decode(%q) = %v; want an *Error with a negative code", data, err)
		}
		var msg jsonrpc2.Request
		Decode(data, &msg)
	})
}
