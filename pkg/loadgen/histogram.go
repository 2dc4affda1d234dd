package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram counts durations in log-linear buckets, as HdrHistogram does:
// exact below 128ns, then 64 buckets per power of two, so that every
// reported value is within 1/128 (0.8%) of a recorded one. Recording is a
// few instructions and allocates nothing; the zero value is ready to use.
// It is not safe for concurrent use: each load worker keeps its own and
// they are merged at the end.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	sum      int64
	min, max int64
}

const (
	subBits = 7
	subHalf = 1 << (subBits - 1) // buckets per power of two
	// maxValue is the largest duration kept apart from the others (about
	// 73 minutes); longer ones count as maxValue.
	maxValue   = 1<<42 - 1
	numBuckets = (42-subBits+1)*subHalf + subHalf
)

// bucket returns the index of the bucket that holds v (nanoseconds, >= 0).
func bucket(v int64) int {
	if v < 1<<subBits {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits
	return (shift+1)*subHalf + int(v>>shift) - subHalf
}

// bucketRange returns the smallest and largest values bucket i holds.
func bucketRange(i int) (lo, hi int64) {
	if i < 1<<subBits {
		return int64(i), int64(i)
	}
	shift := i/subHalf - 1
	lo = int64(i%subHalf+subHalf) << shift
	return lo, lo + 1<<shift - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	if v > maxValue {
		v = maxValue
	}
	h.counts[bucket(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest recorded value, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Min is the smallest recorded value, exactly.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Mean is the average of the recorded values, exactly.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / int64(h.n))
}

// Quantile returns the value below or at which a fraction q (0..1) of the
// recorded values lie, by nearest rank: the value of rank ceil(q*n). It is
// the middle of that value's bucket, kept within the recorded min and max.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	rank = min(rank, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// CountAtLeast returns how many recorded values are at least d, to within
// the bucket that holds d.
func (h *Histogram) CountAtLeast(d time.Duration) uint64 {
	v := min(max(int64(d), 0), maxValue)
	var n uint64
	for i := bucket(v); i < numBuckets; i++ {
		n += h.counts[i]
	}
	return n
}
