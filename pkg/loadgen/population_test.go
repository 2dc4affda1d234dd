package loadgen

import (
	"math/rand/v2"
	"testing"
)

func TestPickersStayInTheirPopulation(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, dist := range []string{Uniform, Zipf} {
		for _, n := range []int{1, 2, 1000} {
			p, err := newPicker(rng, dist, n, 1.1)
			if err != nil {
				t.Fatal(err)
			}
			counts := make([]int, n)
			const draws = 50_000
			for range draws {
				v := p.pick()
				if v >= uint64(n) {
					t.Fatalf("%s over %d: drew %d", dist, n, v)
				}
				counts[v]++
			}
			if n < 1000 {
				continue
			}
			switch dist {
			case Uniform:
				// Every member about draws/n = 50 times; none absent, none hot.
				for v, c := range counts {
					if c == 0 || c > 150 {
						t.Fatalf("uniform over %d: member %d drawn %d times, want about 50", n, v, c)
					}
				}
			case Zipf:
				// The head dominates: member 0 more than member 1 more than
				// member 10, and the last members are rare.
				if !(counts[0] > counts[1] && counts[1] > counts[10] && counts[0] > 20*counts[n-1]) {
					t.Fatalf("zipf over %d is not skewed: counts[0]=%d [1]=%d [10]=%d [last]=%d",
						n, counts[0], counts[1], counts[10], counts[n-1])
				}
			}
		}
	}
}

func TestPickerErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct {
		dist string
		n    int
		s    float64
	}{{Zipf, 10, 1}, {Zipf, 10, 0.5}, {"normal", 10, 1.1}, {Uniform, 0, 1.1}} {
		if _, err := newPicker(rng, c.dist, c.n, c.s); err == nil {
			t.Errorf("newPicker(%q, %d, %v): want an error", c.dist, c.n, c.s)
		}
	}
}
