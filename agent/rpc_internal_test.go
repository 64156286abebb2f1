package agent

import (
	"errors"
	"fmt"
	"testing"

	"github.com/porthole-dev/porthole/protocol"
)

// The process model's errors reach the wire with their code; anything
// else is an internal error.
func TestToRPCError(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code int64
		msg  string
	}{
		{"protocol error", notFound("7"), protocol.CodeNotFound, `no process with id "7"`},
		{"wrapped protocol error", fmt.Errorf("start: %w", exitedError("3")), protocol.CodeNotRunning, "process 3 has exited"},
		{"plain error", errors.New("disk on fire"), protocol.CodeInternalError, "disk on fire"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := toRPCError(tc.err)
			if e.Code != tc.code || e.Message != tc.msg {
				t.Fatalf("toRPCError(%v) = %d %q; want %d %q", tc.err, e.Code, e.Message, tc.code, tc.msg)
			}
		})
	}
}
