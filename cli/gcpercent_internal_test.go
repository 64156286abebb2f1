package cli

import (
	"os"
	"runtime/debug"
	"testing"

	"github.com/porthole-dev/porthole/agent"
)

// The agent runs the Go GC at -gc-percent, at agent.DefaultGCPercent
// without it, and leaves the runtime's reading of $GOGC alone when that is
// set and the flag is not.
func TestAgentGCPercent(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	for _, tc := range []struct {
		name string
		args []string
		env  env
		want int
	}{
		{"default", nil, env{}, agent.DefaultGCPercent},
		{"flag", []string{"-gc-percent", "30"}, env{}, 30},
		{"GOGC set", nil, env{"GOGC": "200"}, 77}, // the value set before: untouched
		{"flag beats GOGC", []string{"-gc-percent", "40"}, env{"GOGC": "200"}, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(77)
			fs := newFlagSet("agent", os.Stderr)
			var f agentFlags
			f.register(fs)
			if err := parseFlags(fs, append([]string{"-listen", "127.0.0.1:0", "-insecure-no-auth"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			o, err := f.runOptions(tc.env, os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			o.Listener.Close()
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Errorf("GC percent %d, want %d", got, tc.want)
			}
		})
	}
}
