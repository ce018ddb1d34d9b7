package publish

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics show the publishing lag.
type metrics struct {
	pending         prometheus.Gauge
	published       prometheus.Gauge
	checkpointSize  prometheus.Gauge
	checkpointAge   prometheus.GaugeFunc
	leader          prometheus.Gauge
	errors          *prometheus.CounterVec
	witnessFailures *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, p *Publisher) *metrics {
	start := time.Now()
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arx_publish_pending_entries", Help: "Committed entries not yet in the bucket.",
		}),
		published: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arx_publish_size", Help: "Entries in the bucket, with their tiles.",
		}),
		checkpointSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arx_publish_checkpoint_size", Help: "Entries the bucket's (cosigned) checkpoint commits to.",
		}),
		checkpointAge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "arx_publish_checkpoint_age_seconds", Help: "Seconds since the last checkpoint was published to the bucket (since start when none was).",
		}, func() float64 {
			t := p.Status().CheckpointTime
			if t.IsZero() {
				t = start
			}
			return p.cfg.Now().Sub(t).Seconds()
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arx_publish_leader", Help: "1 while this replica is the one publishing to the bucket (replicas elect one), else 0.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arx_publish_errors_total", Help: "Failed publishing rounds by stage (upload, witness, consistency, checkpoint).",
		}, []string{"stage"}),
		witnessFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arx_publish_witness_failures_total", Help: "Witness requests that brought no cosignature, by witness.",
		}, []string{"witness"}),
	}
	if reg != nil {
		reg.MustRegister(m.pending, m.published, m.checkpointSize, m.checkpointAge, m.leader, m.errors, m.witnessFailures)
	}
	return m
}
