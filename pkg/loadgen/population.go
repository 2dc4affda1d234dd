package loadgen

import (
	"fmt"
	"math/rand/v2"
)

// Distributions of applicants and groups over their populations.
const (
	// Uniform draws every member equally often.
	Uniform = "uniform"
	// Zipf draws member k with a probability proportional to 1/(k+1)^s:
	// a few hot applicants and groups, a long tail of rare ones.
	Zipf = "zipf"
)

// picker draws members 0..n-1 of a population.
type picker interface {
	pick() uint64
}

type uniformPicker struct {
	rng *rand.Rand
	n   uint64
}

func (p uniformPicker) pick() uint64 { return p.rng.Uint64N(p.n) }

type zipfPicker struct{ z *rand.Zipf }

func (p zipfPicker) pick() uint64 { return p.z.Uint64() }

// newPicker draws from a population of n members by dist; s is Zipf's
// exponent (> 1).
func newPicker(rng *rand.Rand, dist string, n int, s float64) (picker, error) {
	if n < 1 {
		return nil, fmt.Errorf("population must have at least 1 member, got %d", n)
	}
	switch dist {
	case Uniform:
		return uniformPicker{rng: rng, n: uint64(n)}, nil
	case Zipf:
		z := rand.NewZipf(rng, s, 1, uint64(n-1))
		if z == nil {
			return nil, fmt.Errorf("zipf exponent must be greater than 1, got %v", s)
		}
		return zipfPicker{z}, nil
	default:
		return nil, fmt.Errorf("unknown distribution %q: want %s or %s", dist, Uniform, Zipf)
	}
}
