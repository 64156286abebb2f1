package tunnel

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const lo, hi = 500 * time.Millisecond, 30 * time.Second
	cases := []struct {
		n    int
		step time.Duration
	}{
		{1, lo}, {2, 2 * lo}, {3, 4 * lo}, {7, hi}, {40, hi}, {1000, hi},
	}
	for _, tc := range cases {
		for range 100 {
			if got := backoff(lo, hi, tc.n); got < tc.step/2 || got > tc.step {
				t.Fatalf("backoff(%s, %s, %d) = %s; want within [%s, %s]", lo, hi, tc.n, got, tc.step/2, tc.step)
			}
		}
	}
}

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
