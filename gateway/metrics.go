package gateway

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/joingate/joingate/pkg/buckets"
	"github.com/joingate/joingate/pkg/natsconn"
)

// Label values. Commands are callback.Commands by name, any other is
// "other" (a closed set no matter what IMServer is configured to send),
// and requests that name no command at all are "none".
const (
	commandOther = "other"
	commandNone  = "none"

	// decided: a worker's reply was written. fallback: no decision in time,
	// gateway.fallback was answered. no_policy: allowed at the edge.
	// invalid: malformed callback body (actionCode 1). rejected: not a
	// callback at all (method, path, HTTP-level errors).
	outcomeDecided  = "decided"
	outcomeFallback = "fallback"
	outcomeNoPolicy = "no_policy"
	outcomeInvalid  = "invalid"
	outcomeRejected = "rejected"

	causeTimeout         = "timeout"
	causeNoResponders    = "no_responders"
	causeNATSUnavailable = "nats_unavailable"
	causeError           = "error"
)

type metrics struct {
	requests  *prometheus.CounterVec
	answers   *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	duration  prometheus.Histogram
	natsTime  prometheus.Histogram
	inFlight  prometheus.Gauge
	// connsRefused counts connections beyond gateway.max_conns.
	connsRefused prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, timeout time.Duration, nc *nats.Conn) *metrics {
	f := promauto.With(reg)
	latency := buckets.Latency(timeout)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_gateway_requests_total",
			Help: "Callback requests by command (callbackBeforeJoinGroupCommand, callbackBeforeInviteJoinGroupCommand, callbackBeforeMembersJoinGroupCommand, other, none) and outcome (decided, fallback, no_policy, invalid, rejected).",
		}, []string{"command", "outcome"}),
		answers: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_gateway_answers_total",
			Help: "Answers to the callbacks joingate decides, by command, as IMServer reads them: allow or refuse, decided and fallback alike.",
		}, []string{"command", "answer"}),
		fallbacks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "joingate_gateway_fallbacks_total",
			Help: "Decided callbacks answered with gateway.fallback, by cause: timeout, no_responders (no worker subscribed), nats_unavailable, error. requests_total{outcome=\"fallback\"} has them by command.",
		}, []string{"cause"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "joingate_gateway_request_duration_seconds",
			Help:    "Time to answer a decided callback (every command), from the request being read to the answer being ready.",
			Buckets: latency,
		}),
		natsTime: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "joingate_gateway_nats_request_duration_seconds",
			Help:    "Round trip of a decision request through NATS to a worker and back, for requests that got a reply.",
			Buckets: latency,
		}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "joingate_gateway_in_flight",
			Help: "Decided callbacks (every command) waiting for a decision now.",
		}),
		connsRefused: f.NewCounter(prometheus.CounterOpts{
			Name: "joingate_gateway_connections_refused_total",
			Help: "Connections refused because gateway.max_conns were open: each was answered 503 (a JSON failure) and closed.",
		}),
	}
	// Not readiness (see Gateway.Ready): a metric and an alert.
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "joingate_gateway_nats_connected",
		Help: "1 while the gateway is connected to NATS and can get decisions; 0 while it answers every decided callback with gateway.fallback.",
	}, natsconn.Connected(nc))
	m.requests.WithLabelValues(commandOther, outcomeNoPolicy)
	m.requests.WithLabelValues(commandNone, outcomeRejected)
	for _, c := range []string{causeTimeout, causeNoResponders, causeNATSUnavailable, causeError} {
		m.fallbacks.WithLabelValues(c)
	}
	return m
}

// commandMetrics are the series of one decided command, resolved once so
// that a callback does not hash its labels.
type commandMetrics struct {
	decided, fallback, invalid prometheus.Counter
	allow, refuse              prometheus.Counter
}

func (m *metrics) command(c string) *commandMetrics {
	return &commandMetrics{
		decided:  m.requests.WithLabelValues(c, outcomeDecided),
		fallback: m.requests.WithLabelValues(c, outcomeFallback),
		invalid:  m.requests.WithLabelValues(c, outcomeInvalid),
		allow:    m.answers.WithLabelValues(c, "allow"),
		refuse:   m.answers.WithLabelValues(c, "refuse"),
	}
}

// answered counts an answer as IMServer reads it.
func (c *commandMetrics) answered(refused bool) {
	if refused {
		c.refuse.Inc()
	} else {
		c.allow.Inc()
	}
}
