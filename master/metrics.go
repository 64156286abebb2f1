package master

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// metrics are the master's Prometheus series (docs/operations.md lists
// them). Each master has its own registry: nothing global.
type metrics struct {
	reg *prometheus.Registry

	ingestEvents   prometheus.Counter
	ingestBytes    prometheus.Counter
	ingestRefused  prometheus.Counter
	commitSeconds  prometheus.Histogram
	subscriptions  prometheus.Gauge
	proxied        prometheus.Gauge
	proxiedTotal   prometheus.Counter
	proxiedVia     *prometheus.CounterVec
	requestRefused *prometheus.CounterVec
}

func newMetrics(m *Master) *metrics {
	mt := &metrics{
		reg: prometheus.NewRegistry(),
		ingestEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "porthole_master_ingest_events_total",
			Help: "Bootstrapper events accepted (duplicates included)."}),
		ingestBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "porthole_master_ingest_bytes_total",
			Help: "Bytes of bootstrapper events accepted."}),
		ingestRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "porthole_master_ingest_refused_total",
			Help: "Bootstrapper events refused for being above -max-message (journaled as lost lines)."}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "porthole_master_commit_seconds",
			Help:    "Time to commit (fsync) one group of journal entries and documents, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "porthole_master_subscriptions",
			Help: "Open runtime.subscribe subscriptions."}),
		proxied: prometheus.NewGauge(prometheus.GaugeOpts{Name: "porthole_master_proxied_sessions",
			Help: "Client requests to agents in progress through the master (an attach socket is one for its whole life)."}),
		proxiedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "porthole_master_proxied_requests_total",
			Help: "Client requests proxied to agents."}),
		proxiedVia: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "porthole_master_agent_connections_total",
			Help: "Connections to agents (proxied protocol switches, the master's own sockets) by what carried them: a data connection the agent dialled back (data) or a stream of its tunnel (stream)."},
			[]string{"via"}),
		requestRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "porthole_master_requests_refused_total",
			Help: "Requests and handshakes refused before their handler, by HTTP status (401 credentials, 403 scope or origin, 400 bad request)."},
			[]string{"status"}),
	}
	mt.reg.MustRegister(mt.ingestEvents, mt.ingestBytes, mt.ingestRefused, mt.commitSeconds, mt.subscriptions,
		mt.proxied, mt.proxiedTotal, mt.proxiedVia, mt.requestRefused, stateCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return mt
}

// MetricsHandler serves the master's metrics in the Prometheus text
// format, unauthenticated: for a separate listen address
// (porthole-master -metrics-listen). On the main address, Handler serves
// them at /metrics to client tokens.
func (m *Master) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{})
}

func (m *Master) serveMetrics(w http.ResponseWriter, r *http.Request, _ *Claims) {
	m.MetricsHandler().ServeHTTP(w, r)
}

// stateCollector reads the machines' state at each scrape.
type stateCollector struct{ m *Master }

var (
	descMachines = prometheus.NewDesc("porthole_master_machines", "Machines known, by status.", []string{"status"}, nil)
	descAgents   = prometheus.NewDesc("porthole_master_agents_connected", "Machines whose agent is connected (tunnel).", nil, nil)
	descBoots    = prometheus.NewDesc("porthole_master_bootstrappers_connected", "Machines with a bootstrapper connection open.", nil, nil)
	descStore    = prometheus.NewDesc("porthole_master_store_bytes", "Size of the embedded store.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMachines
	ch <- descAgents
	ch <- descBoots
	ch <- descStore
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	byStatus := map[string]int{}
	for _, s := range []string{masterapi.MachineStarting, masterapi.MachineRunning, masterapi.MachineFailed, masterapi.MachineStopped} {
		byStatus[s] = 0 // every status has a series, 0 included
	}
	var agents, boots int
	s := c.m.state
	s.mu.Lock()
	for _, m := range s.machines {
		byStatus[m.doc.Status]++
		if m.doc.Agent.Connected {
			agents++
		}
		if m.bsConns > 0 {
			boots++
		}
	}
	s.mu.Unlock()
	for status, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(descMachines, prometheus.GaugeValue, float64(n), status)
	}
	ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(agents))
	ch <- prometheus.MustNewConstMetric(descBoots, prometheus.GaugeValue, float64(boots))
	if sz, ok := s.st.(interface{ Size() (int64, error) }); ok {
		if n, err := sz.Size(); err == nil {
			ch <- prometheus.MustNewConstMetric(descStore, prometheus.GaugeValue, float64(n))
		}
	}
}

func statusLabel(status int) string { return strconv.Itoa(status) }
