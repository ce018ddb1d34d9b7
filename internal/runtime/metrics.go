package runtime

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the runtime's Prometheus metrics.
type Metrics struct {
	calls          *prometheus.CounterVec
	requestLatency prometheus.Histogram
	recordFailures prometheus.Counter
	treeSize       prometheus.Gauge
}

// NewMetrics registers the runtime's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arx_calls_total", Help: "Governed call requests by the status they got.",
		}, []string{"status"}),
		requestLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "arx_call_request_seconds", Help: "Time to decide a call request, record commit included.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}),
		recordFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arx_record_write_failures_total", Help: "Updates refused because the record could not be written.",
		}),
		treeSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arx_log_size", Help: "Entries in the log at the latest checkpoint.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.requestLatency, m.recordFailures, m.treeSize)
	}
	return m
}
