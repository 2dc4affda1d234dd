package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/joingate/joingate/pkg/admin"
	"github.com/joingate/joingate/pkg/breaker"
	"github.com/joingate/joingate/pkg/policy"
)

// Outcomes of a request a worker received (label "outcome").
const (
	outcomeDecided  = "decided"
	outcomeExpired  = "expired"
	outcomeInvalid  = "invalid"
	outcomeNoPolicy = "no_policy"
)

type metrics struct {
	requests     *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	ruleRefusals *prometheus.CounterVec
	storeErrors  prometheus.Counter
	decisionTime prometheus.Histogram
	storeTime    prometheus.Histogram
	inFlight     prometheus.Gauge
	concurrency  prometheus.Gauge

	breakerState       prometheus.Gauge
	breakerTransitions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, timeout time.Duration, rules []string) *metrics {
	f := promauto.With(reg)
	buckets := admin.LatencyBuckets(timeout)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_worker_requests_total",
			Help: "Requests received by the worker, by outcome: decided, expired (deadline passed before it was judged; dropped unanswered), invalid (body not a callback), no_policy.",
		}, []string{"outcome"}),
		decisions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_worker_decisions_total",
			Help: "Join-group decisions by decision (allow, refuse) and the step that decided (reason).",
		}, []string{"decision", "reason"}),
		ruleRefusals: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_worker_rule_refusals_total",
			Help: "Requests a rate-limit rule refused (mode=enforce) or would have refused (mode=shadow).",
		}, []string{"rule", "mode"}),
		storeErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "joingate_worker_store_errors_total",
			Help: "Decisions the limiter store failed to make; answered by worker.on_store_error.",
		}),
		decisionTime: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "joingate_worker_decision_duration_seconds",
			Help:    "Time from a request's arrival at the worker to its reply.",
			Buckets: buckets,
		}),
		storeTime: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "joingate_worker_store_duration_seconds",
			Help:    "Time of one limiter store call (one Redis round trip).",
			Buckets: buckets,
		}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "joingate_worker_in_flight",
			Help: "Requests being decided now.",
		}),
		concurrency: f.NewGauge(prometheus.GaugeOpts{
			Name: "joingate_worker_concurrency",
			Help: "Most requests this worker decides at once (worker.concurrency).",
		}),
	}
	m.breakerState = f.NewGauge(prometheus.GaugeOpts{
		Name: "joingate_worker_store_breaker_state",
		Help: "State of the store's circuit breaker: 0 closed (calls go to the store), 1 open (decisions answer worker.on_store_error at once), 2 half-open (one probe call).",
	})
	m.breakerTransitions = f.NewCounterVec(prometheus.CounterOpts{
		Name: "joingate_worker_store_breaker_transitions_total",
		Help: "Changes of the store circuit breaker's state, by the state entered.",
	}, []string{"to"})
	for _, s := range []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen} {
		m.breakerTransitions.WithLabelValues(s.String())
	}
	for _, o := range []string{outcomeDecided, outcomeExpired, outcomeInvalid, outcomeNoPolicy} {
		m.requests.WithLabelValues(o)
	}
	for _, r := range policy.Reasons {
		m.decisions.WithLabelValues("allow", string(r))
		m.decisions.WithLabelValues("refuse", string(r))
	}
	m.addRules(rules)
	return m
}

// addRules pre-creates the series of rules, so that they start at 0.
func (m *metrics) addRules(rules []string) {
	for _, r := range rules {
		m.ruleRefusals.WithLabelValues(r, "enforce")
		m.ruleRefusals.WithLabelValues(r, "shadow")
	}
}
