package master_test

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/porthole-dev/porthole/protocol/masterapi"
)

// scrape GETs url with token and parses the Prometheus text exposition.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := newGet(url, token)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the exposition: %v", err)
	}
	return fams
}

// value returns the value of family name's series whose labels include
// labels (name=value pairs); ok false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// /metrics serves the Prometheus exposition to client tokens only, and
// counts what happened: events ingested, commits, machines by status,
// connections, subscriptions, refusals.
func TestMetrics(t *testing.T) {
	tm := startMaster(t, t.TempDir(), "")
	const rid = "w:e:o"
	client := tm.clientToken(t)
	if st, _ := get(t, tm.URL+"/metrics", "", nil); st != 401 {
		t.Errorf("/metrics without a token: %d; want 401", st)
	}
	if st, _ := get(t, tm.URL+"/metrics", tm.machineToken(t, rid, "m"), nil); st != 403 {
		t.Errorf("/metrics with a machine token: %d; want 403", st)
	}
	p := push(t, tm, tm.machineToken(t, rid, "m"))
	for i := 1; i <= 3; i++ {
		p.send(logEvent("m", rid, "b", i, "line"))
	}
	p.ack()
	subscribe(t, tm, client, masterapi.SubscribeParams{RuntimeID: "*"})

	fams := scrape(t, tm.URL+"/metrics", client)
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"porthole_master_ingest_events_total", nil, 3},
		{"porthole_master_ingest_bytes_total", nil, 300},
		{"porthole_master_commit_seconds", nil, 1},
		{"porthole_master_machines", []string{"status", "STARTING"}, 1},
		{"porthole_master_bootstrappers_connected", nil, 1},
		{"porthole_master_subscriptions", nil, 1},
		{"porthole_master_requests_refused_total", []string{"status", "401"}, 1},
		{"porthole_master_requests_refused_total", []string{"status", "403"}, 1},
		{"porthole_master_store_bytes", nil, 1},
		{"go_goroutines", nil, 1},
	} {
		if v, ok := value(fams, c.name, c.labels...); !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v); want at least %v", c.name, c.labels, v, ok, c.min)
		}
	}
	if v, ok := value(fams, "porthole_master_machines", "status", "FAILED"); !ok || v != 0 {
		t.Errorf("porthole_master_machines{status=FAILED} = %v (present %v); want a 0 series", v, ok)
	}
}
