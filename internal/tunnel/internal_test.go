package tunnel

import "testing"

func TestTrimPrefix(t *testing.T) {
	cases := []struct {
		path, prefix, want string
		ok                 bool
	}{
		{"/m/agent", "/m/agent", "/", true},
		{"/m/agent/", "/m/agent", "/", true},
		{"/m/agent/v1/rpc", "/m/agent", "/v1/rpc", true},
		{"/m/agentx/v1", "/m/agent", "", false},
		{"/other", "/m/agent", "", false},
		{"/v1/rpc", "", "/v1/rpc", true},
	}
	for _, tc := range cases {
		got, ok := trimPrefix(tc.path, tc.prefix)
		if got != tc.want || ok != tc.ok {
			t.Errorf("trimPrefix(%q, %q) = %q, %v; want %q, %v", tc.path, tc.prefix, got, ok, tc.want, tc.ok)
		}
	}
}
