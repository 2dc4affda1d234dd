package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	prevIdx := -1
	check := func(v int64) {
		t.Helper()
		i := bucket(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucket(%d) = %d, outside 0..%d", v, i, numBuckets-1)
		}
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("bucket(%d) = %d holds %d..%d", v, i, lo, hi)
		}
		if float64(hi-lo) > float64(lo)/64 {
			t.Fatalf("bucket %d (%d..%d) is wider than 1/64 of its values", i, lo, hi)
		}
		if i < prevIdx {
			t.Fatalf("bucket(%d) = %d < bucket of a smaller value (%d)", v, i, prevIdx)
		}
		prevIdx = i
	}
	for v := int64(0); v < 5000; v++ {
		check(v)
	}
	for v := int64(5000); v < maxValue; v = v*9/8 + 1 {
		check(v)
	}
	check(maxValue)
	if bucket(maxValue) != numBuckets-1 {
		t.Fatalf("bucket(maxValue) = %d, want the last bucket %d", bucket(maxValue), numBuckets-1)
	}
}

// The histogram's percentiles against the exact nearest-rank percentiles of
// a known sample.
func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	sample := make([]int64, 100_000)
	var sum int64
	for i := range sample {
		// Log-normal around 1ms with a long tail, like request latencies.
		v := int64(math.Exp(rng.NormFloat64()*1.2) * 1e6)
		sample[i] = v
		sum += v
		h.Record(time.Duration(v))
	}
	slices.Sort(sample)
	exact := func(q float64) int64 {
		rank := int(math.Ceil(q * float64(len(sample))))
		return sample[max(rank, 1)-1]
	}
	for _, q := range []float64{0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
		got, want := int64(h.Quantile(q)), exact(q)
		if math.Abs(float64(got-want)) > float64(want)/128+1 {
			t.Errorf("Quantile(%v) = %d, exact %d: off by more than 1/128", q, got, want)
		}
	}
	if h.Count() != uint64(len(sample)) {
		t.Errorf("Count = %d, want %d", h.Count(), len(sample))
	}
	if h.Max() != time.Duration(sample[len(sample)-1]) || h.Min() != time.Duration(sample[0]) {
		t.Errorf("Min, Max = %d, %d; want %d, %d exactly", h.Min(), h.Max(), sample[0], sample[len(sample)-1])
	}
	if h.Mean() != time.Duration(sum/int64(len(sample))) {
		t.Errorf("Mean = %d, want %d", h.Mean(), sum/int64(len(sample)))
	}
	threshold := exact(0.95)
	idx, _ := slices.BinarySearch(sample, threshold)
	wantAbove := len(sample) - idx
	if got := h.CountAtLeast(time.Duration(threshold)); math.Abs(float64(int(got)-wantAbove)) > float64(wantAbove)/50 {
		t.Errorf("CountAtLeast(p95) = %d, want about %d", got, wantAbove)
	}

	// Small exact values, nearest rank: 1..10 has p50 = 5, p90 = 9, p91 = 10.
	var small Histogram
	for v := 1; v <= 10; v++ {
		small.Record(time.Duration(v))
	}
	for q, want := range map[float64]time.Duration{0.5: 5, 0.9: 9, 0.91: 10, 0.1: 1, 1: 10} {
		if got := small.Quantile(q); got != want {
			t.Errorf("1..10: Quantile(%v) = %d, want %d", q, got, want)
		}
	}
}

func TestHistogramMergeAndEdges(t *testing.T) {
	var a, b, empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 || empty.Max() != 0 {
		t.Fatal("an empty histogram must report zeros")
	}
	a.Record(-time.Second) // counts as 0
	a.Record(2 * time.Millisecond)
	b.Record(3 * time.Hour) // beyond maxValue: clamped
	b.Record(time.Microsecond)
	a.Merge(&b)
	a.Merge(&empty)
	if a.Count() != 4 {
		t.Fatalf("Count = %d, want 4", a.Count())
	}
	if a.Min() != 0 || a.Max() != maxValue {
		t.Fatalf("Min, Max = %v, %v; want 0, %v", a.Min(), a.Max(), time.Duration(maxValue))
	}
	if got := a.Quantile(0.5); got < time.Microsecond || got > time.Microsecond+time.Microsecond/128 {
		t.Fatalf("median = %v, want 1µs (within 1/128)", got)
	}
}
