package benchsuite

import (
	"fmt"
	"math"

	"github.com/joingate/joingate/pkg/promtext"
)

// Stage is where a part of an answer's time goes, from joingate's own
// histograms over one run: the mean (exact: sum over count) and the p99
// (interpolated within a bucket, as histogram_quantile does), in ms.
type Stage struct {
	Name  string  `json:"name"`
	Count float64 `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P99   float64 `json:"p99_ms"`
}

// stageMetrics are the stages of a join callback, outermost first: each
// contains the next.
var stageMetrics = []struct{ name, metric string }{
	{"gateway: body read to answer", "joingate_gateway_request_duration_seconds"},
	{"NATS request to reply", "joingate_gateway_nats_request_duration_seconds"},
	{"worker: arrival to reply", "joingate_worker_decision_duration_seconds"},
	{"store call (Redis)", "joingate_worker_store_duration_seconds"},
}

// stages reads the stages from two scrapes, before and after a run.
func stages(before, after string) ([]Stage, error) {
	var out []Stage
	for _, m := range stageMetrics {
		b0, sum0, n0, err := promtext.Histogram(before, m.metric)
		if err != nil {
			return nil, err
		}
		b1, sum1, n1, err := promtext.Histogram(after, m.metric)
		if err != nil {
			return nil, err
		}
		if len(b1) == 0 || len(b0) != len(b1) {
			return nil, fmt.Errorf("%s: %d buckets before, %d after", m.metric, len(b0), len(b1))
		}
		st := Stage{Name: m.name, Count: n1 - n0}
		if st.Count > 0 {
			st.Mean = (sum1 - sum0) / st.Count * 1000
			st.P99 = quantile(0.99, b0, b1) * 1000
		}
		out = append(out, st)
	}
	return out, nil
}

// quantile is the q-quantile of the observations between two readings of
// one histogram's buckets, interpolated linearly within its bucket.
func quantile(q float64, before, after []promtext.Bucket) float64 {
	total := after[len(after)-1].Count - before[len(before)-1].Count
	rank := q * total
	lower, below := 0.0, 0.0
	for i := range after {
		n := after[i].Count - before[i].Count
		if n >= rank {
			if math.IsInf(after[i].LE, 1) {
				return lower // beyond the last edge: its lower bound
			}
			in := n - below
			if in <= 0 {
				return after[i].LE
			}
			return lower + (after[i].LE-lower)*(rank-below)/in
		}
		lower, below = after[i].LE, n
	}
	return lower
}

// storeCallsPerDecision is the share of a worker's decisions between two
// scrapes that made a store call: with the memory of refusals, the share a
// flood still costs Redis.
func storeCallsPerDecision(before, after string) (float64, error) {
	var v [2][2]float64
	for i, text := range []string{before, after} {
		for j, series := range []string{"joingate_worker_store_duration_seconds_count", `joingate_worker_requests_total{outcome="decided"}`} {
			var err error
			if v[i][j], _, err = promtext.Value(text, series); err != nil {
				return 0, err
			}
		}
	}
	decided := v[1][1] - v[0][1]
	if decided <= 0 {
		return 0, nil
	}
	return (v[1][0] - v[0][0]) / decided, nil
}
