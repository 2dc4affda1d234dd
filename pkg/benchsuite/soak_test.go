package benchsuite

import (
	"strings"
	"testing"
	"time"
)

func TestSoakVerdicts(t *testing.T) {
	series := func(f func(i int) (rss, goroutines, fds float64)) []soakSample {
		var out []soakSample
		for i := range 30 {
			r, g, d := f(i)
			out = append(out, soakSample{At: time.Duration(i) * 5 * time.Second, RSSMiB: r, Goroutines: g, OpenFDs: d})
		}
		return out
	}
	grew := func(samples []soakSample) []string {
		var names []string
		for _, v := range soakVerdicts(samples) {
			if v.grew {
				names = append(names, strings.Fields(v.text)[0])
			}
		}
		return names
	}
	// Warm-up growth, then flat with noise: stable.
	flat := series(func(i int) (float64, float64, float64) {
		return 30 + float64(min(i, 8))*3 + float64(i%3), 40 + float64(i%5), 30
	})
	if g := grew(flat); len(g) != 0 {
		t.Fatalf("a flat series judged growing: %v", g)
	}
	// A leak of 4 MiB and 10 goroutines a sample: both fail, fds do not.
	leak := series(func(i int) (float64, float64, float64) {
		return 30 + 4*float64(i), 40 + 10*float64(i), 30
	})
	if g := grew(leak); strings.Join(g, ",") != "RSS,goroutines" {
		t.Fatalf("leaking series judged growing in %v, want RSS and goroutines", g)
	}
	if g := grew(leak[:2]); len(g) != 1 {
		t.Fatalf("two samples: %v, want a failure for too few samples", g)
	}
}
