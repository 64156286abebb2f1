package bootstrapper

import "testing"

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ws://m:8080/api/websocket?token=s3cret", "ws://m:8080/api/websocket?token=xxxxx"},
		{"wss://m/api?a=1&access_token=s3cret&Token=s4", "wss://m/api?Token=xxxxx&a=1&access_token=xxxxx"},
		{"ws://user:s3cret@m/api", "ws://user:xxxxx@m/api"},
		{"ws://m/api?machine=dev", "ws://m/api?machine=dev"},
		{"ws://m/api", "ws://m/api"},
		{"ws://m/%zz?token=s3cret", "(unparsable URL)"},
	}
	for _, tc := range tests {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
