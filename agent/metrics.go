package agent

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// stats are the agent's counters, kept by the process machinery at no
// cost beyond an atomic add, and read by the metrics collector.
type stats struct {
	started  atomic.Int64 // processes started
	bytesOut atomic.Int64 // output bytes handed to viewers (attach sockets, subscriptions)
	gaps     atomic.Int64 // gaps reported to viewers (output they lagged too far to get)
	stalls   atomic.Int64 // viewers demoted for not reading within -stall-timeout
}

var (
	descProcesses = prometheus.NewDesc("porthole_agent_processes", "Processes kept, by state.", []string{"state"}, nil)
	descClients   = prometheus.NewDesc("porthole_agent_attached_clients", "Viewers following a process (attach sockets and subscriptions).", nil, nil)
	descStarted   = prometheus.NewDesc("porthole_agent_processes_started_total", "Processes started.", nil, nil)
	descBytesOut  = prometheus.NewDesc("porthole_agent_output_bytes_total", "Output bytes sent to viewers.", nil, nil)
	descGaps      = prometheus.NewDesc("porthole_agent_gaps_total", "Gaps reported to viewers: output they fell too far behind to get.", nil, nil)
	descStalls    = prometheus.NewDesc("porthole_agent_stalls_total", "Viewers that stopped reading for -stall-timeout and stopped holding their process back.", nil, nil)
)

// agentCollector reads the agent's state at each scrape.
type agentCollector struct{ m *manager }

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descProcesses, descClients, descStarted, descBytesOut, descGaps, descStalls} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	var running, exited, clients int
	for _, p := range c.m.list() {
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
	st := &c.m.stats
	ch <- prometheus.MustNewConstMetric(descProcesses, prometheus.GaugeValue, float64(running), "running")
	ch <- prometheus.MustNewConstMetric(descProcesses, prometheus.GaugeValue, float64(exited), "exited")
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(clients))
	ch <- prometheus.MustNewConstMetric(descStarted, prometheus.CounterValue, float64(st.started.Load()))
	ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(st.bytesOut.Load()))
	ch <- prometheus.MustNewConstMetric(descGaps, prometheus.CounterValue, float64(st.gaps.Load()))
	ch <- prometheus.MustNewConstMetric(descStalls, prometheus.CounterValue, float64(st.stalls.Load()))
}

// MetricsHandler serves the agent's metrics in the Prometheus text format,
// unauthenticated: for its own listen address (porthole agent
// -metrics-listen), never the agent's.
func (a *Agent) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(agentCollector{a.procs},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
