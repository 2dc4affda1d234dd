package reload

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Results of a reload (label "result").
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

type metrics struct {
	reloads        *prometheus.CounterVec
	lastSuccessAt  prometheus.Gauge
	lastSuccessful prometheus.Gauge
}

// newMetrics registers the reload metrics with reg. The process starts with
// a loaded configuration, so the last success is now and it was successful.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_config_reloads_total",
			Help: "Configuration reloads by result (success, failure); a failure keeps the previous configuration.",
		}, []string{"result"}),
		lastSuccessAt: f.NewGauge(prometheus.GaugeOpts{
			Name: "joingate_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load (the start of the process until the first reload).",
		}),
		lastSuccessful: f.NewGauge(prometheus.GaugeOpts{
			Name: "joingate_config_last_reload_successful",
			Help: "1 if the last configuration reload succeeded (or none was attempted yet), 0 if it failed.",
		}),
	}
	m.reloads.WithLabelValues(resultSuccess)
	m.reloads.WithLabelValues(resultFailure)
	m.lastSuccessAt.SetToCurrentTime()
	m.lastSuccessful.Set(1)
	return m
}
