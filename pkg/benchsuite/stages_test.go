package benchsuite

import (
	"math"
	"testing"

	"github.com/joingate/joingate/pkg/promtext"
)

// The quantile of the observations between two readings, interpolated
// within the bucket that holds it.
func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	before := []promtext.Bucket{{LE: 0.001, Count: 10}, {LE: 0.01, Count: 10}, {LE: inf, Count: 10}}
	after := []promtext.Bucket{{LE: 0.001, Count: 60}, {LE: 0.01, Count: 110}, {LE: inf, Count: 110}} // 50 in (0, 1ms], 50 in (1ms, 10ms]
	for _, c := range []struct{ q, want float64 }{{0.5, 0.001}, {0.25, 0.0005}, {0.99, 0.001 + 0.009*0.98}} {
		if got := quantile(c.q, before, after); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	past := []promtext.Bucket{{LE: 0.001, Count: 10}, {LE: 0.01, Count: 10}, {LE: inf, Count: 20}} // 10 beyond the last edge
	if got := quantile(0.99, before, past); got != 0.01 {
		t.Errorf("quantile beyond the last edge = %v, want the edge", got)
	}
}
