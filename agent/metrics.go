package agent

import (
	"fmt"
	"net/http"
	"runtime"
	"sync/atomic"
)

// stats are the agent's counters, kept by the process machinery at no
// cost beyond an atomic add, and read by MetricsHandler.
type stats struct {
	started  atomic.Int64 // processes started
	bytesOut atomic.Int64 // output bytes handed to viewers (attach sockets, subscriptions)
	direct   atomic.Int64 // of those, sent by the pump itself (the fast path, output.go)
	gaps     atomic.Int64 // gaps reported to viewers (output they lagged too far to get)
	stalls   atomic.Int64 // viewers demoted for not reading within -stall-timeout
}

// MetricsHandler serves the agent's metrics in the Prometheus text format
// (version 0.0.4), unauthenticated: for its own listen address (porthole
// agent -metrics-listen), never the agent's. The exposition is written
// here rather than with client_golang, which would add megabytes to the
// binary injected into every container for a dozen lines of text.
func (a *Agent) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var running, exited, clients int
		for _, p := range a.procs.list() {
			p.mu.Lock()
			done := p.exited
			p.mu.Unlock()
			if done {
				exited++
			} else {
				running++
			}
			clients += int(p.clients.Load())
		}
		st := &a.procs.stats
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		metric := func(name, typ, help string, samples ...string) {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
			for _, s := range samples {
				fmt.Fprintf(w, "%s%s\n", name, s)
			}
		}
		metric("porthole_agent_processes", "gauge", "Processes kept, by state.",
			fmt.Sprintf(`{state="running"} %d`, running), fmt.Sprintf(`{state="exited"} %d`, exited))
		metric("porthole_agent_attached_clients", "gauge", "Viewers following a process (attach sockets and subscriptions).", fmt.Sprintf(" %d", clients))
		metric("porthole_agent_processes_started_total", "counter", "Processes started.", fmt.Sprintf(" %d", st.started.Load()))
		metric("porthole_agent_output_bytes_total", "counter", "Output bytes sent to viewers.", fmt.Sprintf(" %d", st.bytesOut.Load()))
		metric("porthole_agent_output_direct_bytes_total", "counter", "Output bytes sent to viewers that kept up by the reader of the terminal or pipe itself (the fast path).", fmt.Sprintf(" %d", st.direct.Load()))
		metric("porthole_agent_gaps_total", "counter", "Gaps reported to viewers: output they fell too far behind to get.", fmt.Sprintf(" %d", st.gaps.Load()))
		metric("porthole_agent_stalls_total", "counter", "Viewers that stopped reading for -stall-timeout and stopped holding their process back.", fmt.Sprintf(" %d", st.stalls.Load()))
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		metric("go_goroutines", "gauge", "Number of goroutines that currently exist.", fmt.Sprintf(" %d", runtime.NumGoroutine()))
		metric("go_memstats_heap_inuse_bytes", "gauge", "Number of heap bytes that are in use.", fmt.Sprintf(" %d", ms.HeapInuse))
		metric("go_memstats_sys_bytes", "gauge", "Number of bytes obtained from system.", fmt.Sprintf(" %d", ms.Sys))
	})
}
