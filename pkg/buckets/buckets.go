// Package buckets holds the histogram bucket layout that every joingate
// latency histogram shares, so that the stages of one request (gateway,
// NATS round trip, worker, store) can be read against one another and
// against the decision timeout.
package buckets

import (
	"slices"
	"time"
)

// Latency returns buckets from 25µs to 1s with timeout as one of the
// edges, so that "answered within the decision timeout" is exact.
func Latency(timeout time.Duration) []float64 {
	b := []float64{.000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
	if t := timeout.Seconds(); t > 0 && !slices.Contains(b, t) {
		b = append(b, t)
		slices.Sort(b)
	}
	return b
}
