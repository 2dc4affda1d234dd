package worker

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/joingate/joingate/pkg/breaker"
	"github.com/joingate/joingate/pkg/buckets"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/redisconn"
)

// Outcomes of a request a worker received (label "outcome").
const (
	outcomeDecided  = "decided"
	outcomeExpired  = "expired"
	outcomeInvalid  = "invalid"
	outcomeNoPolicy = "no_policy"
)

// Store calls (label "call") and the cause of a failure that is the
// worker's own (label "cause"; the others are redisconn.Causes).
const (
	callDecide       = "decide"
	callProbe        = "probe"
	causeBreakerOpen = "breaker_open"
)

// Queue-group transitions (label "to").
const (
	joinedGroup = "joined"
	leftGroup   = "left"
)

type metrics struct {
	requests     *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	ruleRefusals *prometheus.CounterVec
	probation    prometheus.Counter
	storeErrors  *prometheus.CounterVec
	decisionTime prometheus.Histogram
	storeTime    prometheus.Histogram
	inFlight     prometheus.Gauge
	concurrency  prometheus.Gauge

	breakerState       prometheus.Gauge
	breakerTransitions *prometheus.CounterVec

	member      prometheus.Gauge
	memberships *prometheus.CounterVec

	// The series every decision counts, resolved once rather than by
	// their label values each time (hashing them was 14% of a decision
	// from memory in BenchmarkHandleRedisFlood): decided is
	// requests_total{outcome="decided"}, outcomes the decisions_total
	// series of every outcome a policy has, rules the rule_refusals_total
	// series of the rules of every policy loaded so far.
	decided  prometheus.Counter
	outcomes map[outcomeKey]prometheus.Counter
	rulesMu  sync.Mutex // serialises addRules
	rules    atomic.Pointer[map[ruleKey]prometheus.Counter]
}

type outcomeKey struct {
	command string
	allowed bool
	reason  policy.Reason
}

type ruleKey struct {
	command, rule string
	shadow        bool
}

func newMetrics(reg prometheus.Registerer, timeout time.Duration, rules map[string][]string, nc *nats.Conn) *metrics {
	f := promauto.With(reg)
	latency := buckets.Latency(timeout)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_worker_requests_total",
			Help: "Requests received by the worker, by outcome: decided, expired (deadline passed before it was judged; dropped unanswered), invalid (body not a callback), no_policy.",
		}, []string{"outcome"}),
		decisions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_worker_decisions_total",
			Help: "Decisions by callback command, decision (allow, refuse) and the step that decided (reason).",
		}, []string{"command", "decision", "reason"}),
		ruleRefusals: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_worker_rule_refusals_total",
			Help: "Requests a rate-limit rule of a command's policy refused (mode=enforce) or would have refused (mode=shadow).",
		}, []string{"command", "rule", "mode"}),
		probation: f.NewCounter(prometheus.CounterOpts{
			Name: "joingate_worker_probation_members_total",
			Help: "Members admitted muted by member_join.probation (muteEndTime set).",
		}),
		storeErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_worker_store_errors_total",
			Help: "Failed store calls by call (decide: a decision, answered by worker.on_store_error; probe: the worker's health check) and cause (auth, database, unknown_host, tls: fix the configuration; refused, closed, timeout: an outage; breaker_open; other).",
		}, []string{"call", "cause"}),
		decisionTime: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "joingate_worker_decision_duration_seconds",
			Help:    "Time from a request's arrival at the worker to its reply.",
			Buckets: latency,
		}),
		storeTime: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "joingate_worker_store_duration_seconds",
			Help:    "Time of one limiter store call (one Redis round trip).",
			Buckets: latency,
		}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "joingate_worker_in_flight",
			Help: "Requests being decided now by the goroutines worker.concurrency bounds.",
		}),
		concurrency: f.NewGauge(prometheus.GaugeOpts{
			Name: "joingate_worker_concurrency",
			Help: "Most requests this worker decides at once (worker.concurrency).",
		}),
	}
	m.breakerState = f.NewGauge(prometheus.GaugeOpts{
		Name: "joingate_worker_store_breaker_state",
		Help: "State of the store's circuit breaker: 0 closed (calls go to the store), 1 open (the worker leaves the queue group; what it still holds is answered worker.on_store_error at once), 2 half-open (one probe call).",
	})
	m.breakerTransitions = f.NewCounterVec(prometheus.CounterOpts{
		Name: "joingate_worker_store_breaker_transitions_total",
		Help: "Changes of the store circuit breaker's state, by the state entered.",
	}, []string{"to"})
	m.member = f.NewGauge(prometheus.GaugeOpts{
		Name: "joingate_worker_queue_group_member",
		Help: "1 while the worker is in the NATS queue group and takes requests; 0 while its store fails (or before it first answers) and while draining.",
	})
	m.memberships = f.NewCounterVec(prometheus.CounterOpts{
		Name: "joingate_worker_queue_group_transitions_total",
		Help: "Times the worker joined or left the queue group, by to (joined, left).",
	}, []string{"to"})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "joingate_worker_nats_connected",
		Help: "1 while the worker's NATS connection is up.",
	}, natsconn.Connected(nc))
	m.memberships.WithLabelValues(joinedGroup)
	m.memberships.WithLabelValues(leftGroup)
	for _, call := range []string{callDecide, callProbe} {
		for _, c := range append([]string{causeBreakerOpen}, redisconn.Causes...) {
			if call == callProbe && c == causeBreakerOpen {
				continue // probes do not go through the breaker
			}
			m.storeErrors.WithLabelValues(call, c)
		}
	}
	for _, s := range []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen} {
		m.breakerTransitions.WithLabelValues(s.String())
	}
	for _, o := range []string{outcomeDecided, outcomeExpired, outcomeInvalid, outcomeNoPolicy} {
		m.requests.WithLabelValues(o)
	}
	m.decided = m.requests.WithLabelValues(outcomeDecided)
	m.outcomes = make(map[outcomeKey]prometheus.Counter)
	for _, command := range callback.Commands {
		for _, o := range policy.Outcomes(command) {
			m.outcomes[outcomeKey{command, o.Allowed, o.Reason}] = m.decisions.WithLabelValues(command, decisionLabel(o.Allowed), string(o.Reason))
		}
	}
	m.rules.Store(&map[ruleKey]prometheus.Counter{})
	m.addRules(rules)
	return m
}

// decision is the decisions_total series of command's decision d.
func (m *metrics) decision(command string, d policy.Decision) prometheus.Counter {
	if c, ok := m.outcomes[outcomeKey{command, d.Allowed, d.Reason}]; ok {
		return c
	}
	return m.decisions.WithLabelValues(command, decisionLabel(d.Allowed), string(d.Reason))
}

// ruleRefusal is the rule_refusals_total series of a rule of command's
// policy, enforcing or shadow.
func (m *metrics) ruleRefusal(command, rule string, shadow bool) prometheus.Counter {
	if c, ok := (*m.rules.Load())[ruleKey{command, rule, shadow}]; ok {
		return c
	}
	return m.ruleRefusals.WithLabelValues(command, rule, modeLabel(shadow))
}

func modeLabel(shadow bool) string {
	if shadow {
		return "shadow"
	}
	return "enforce"
}

// decisionLabel is the "decision" label of an allowed or refused request.
func decisionLabel(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "refuse"
}

// addRules pre-creates the series of each command's rules, so that they
// start at 0.
func (m *metrics) addRules(rules map[string][]string) {
	m.rulesMu.Lock()
	defer m.rulesMu.Unlock()
	added := maps.Clone(*m.rules.Load())
	for command, names := range rules {
		for _, r := range names {
			for _, shadow := range []bool{false, true} {
				added[ruleKey{command, r, shadow}] = m.ruleRefusals.WithLabelValues(command, r, modeLabel(shadow))
			}
		}
	}
	m.rules.Store(&added)
}
