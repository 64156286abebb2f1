package cheapi_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/agent/cheapi"
)

// BenchmarkExecEvents measures the exec-agent's event path: a process
// writes 100000 lines, each becomes a process_stdout event on the
// client's socket; the figure is lines per second from process.start to
// process_died.
func BenchmarkExecEvents(b *testing.B) {
	const lines = 100000
	c := startChe(b, cheapi.Options{Shell: "/bin/sh"}, agent.Options{})
	for b.Loop() {
		ws, resp, err := websocket.DefaultDialer.Dial(c.url("ws", "/connect"), nil)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		start := time.Now()
		req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "process.start",
			"params": map[string]any{"name": "b", "commandLine": fmt.Sprintf("seq 1 %d", lines)}})
		ws.WriteMessage(websocket.TextMessage, req)
		n := 0
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			s := string(m)
			if strings.Contains(s, `"process_stdout"`) {
				n++
			}
			if strings.Contains(s, `"process_died"`) {
				break
			}
		}
		if n != lines {
			b.Fatalf("%d events, want %d", n, lines)
		}
		b.ReportMetric(float64(lines)/time.Since(start).Seconds(), "lines/s")
		ws.Close()
	}
}
