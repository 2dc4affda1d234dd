package benchsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/joingate/joingate/pkg/loadgen"
	"github.com/joingate/joingate/pkg/promtext"
)

// soakSample is one reading of the process under load.
type soakSample struct {
	At         time.Duration
	RSSMiB     float64
	Goroutines float64
	OpenFDs    float64
}

// SoakReport is what a soak measured: the load, the samples of the
// process and the verdict on each resource.
type SoakReport struct {
	Result   *loadgen.Result
	Samples  []soakSample
	Verdicts []verdict
}

// Soak is `joingate bench soak`: `joingate all` with Redis under a steady
// open-loop load (o.Load.Rate, or o.OpenFactor of the reference's rate,
// measured first) for o.Load.Duration, sampling its memory, goroutines and
// open files every interval.
func Soak(ctx context.Context, o Options, interval time.Duration) (*SoakReport, error) {
	o.Setups = []string{SetupReference, SetupAll}
	s, err := newSuite(o)
	if err != nil {
		return nil, err
	}
	samples, res, err := s.soak(ctx, interval)
	s.close(err != nil)
	if err != nil {
		return nil, err
	}
	return &SoakReport{Result: res, Samples: samples, Verdicts: soakVerdicts(samples)}, nil
}

// Grew reports whether a resource kept growing.
func (r *SoakReport) Grew() bool {
	for _, v := range r.Verdicts {
		if v.grew {
			return true
		}
	}
	return false
}

// Print writes the load's report, the samples as a table and the verdicts.
func (r *SoakReport) Print(w io.Writer) {
	loadgen.Report(w, r.Result)
	fmt.Fprintf(w, "\n| time | RSS MiB | goroutines | open fds |\n|---|---|---|---|\n")
	for _, x := range r.Samples {
		fmt.Fprintf(w, "| %s | %.1f | %.0f | %.0f |\n", x.At.Round(time.Second), x.RSSMiB, x.Goroutines, x.OpenFDs)
	}
	for _, v := range r.Verdicts {
		fmt.Fprintln(w, v.text)
	}
}

// soak measures the reference (unless --rate is given), starts Redis and
// `joingate all`, loads it in open loop and samples it until the load ends.
func (s *suite) soak(ctx context.Context, interval time.Duration) ([]soakSample, *loadgen.Result, error) {
	rate := s.o.Load.Rate
	if rate == 0 {
		probe := *s
		probe.o.Load.Duration, probe.o.OpenFactor = 10*time.Second, 0
		row, err := probe.runReference(ctx, &Report{})
		if err != nil {
			return nil, nil, err
		}
		rate = row.Result.Throughput * s.o.OpenFactor
	}
	redisURL, err := s.startRedis(ctx)
	if err != nil {
		return nil, nil, err
	}
	c, listen, admin, err := s.startAll(ctx, redisURL, "bench.yaml")
	if err != nil {
		return nil, nil, err
	}
	defer c.Stop(stopGrace)
	fmt.Fprintf(s.o.Stderr, "--- soak: `joingate all` with Redis, open loop at %.0f req/s for %s\n", rate, s.o.Load.Duration)

	opts := s.o.Load
	opts.Base, opts.Rate = "http://"+listen+"/callbackExample", rate
	opts.MetricsURLs = []string{"http://" + admin + "/metrics"}
	done := make(chan struct{})
	var samples []soakSample
	var sampleErr error
	go func() {
		defer close(done)
		start := time.Now()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			x, err := sampleProcess("http://" + admin + "/metrics")
			if err != nil {
				sampleErr = err
				return
			}
			x.At = time.Since(start)
			samples = append(samples, x)
			if x.At >= opts.Duration+opts.Warmup {
				return
			}
		}
	}()
	res, err := loadgen.Run(ctx, opts)
	<-done
	if err != nil {
		return nil, nil, err
	}
	if sampleErr != nil {
		return nil, nil, fmt.Errorf("sampling: %w", sampleErr)
	}
	if c.Exited() {
		return nil, nil, c.Failed(errors.New("exited under load"))
	}
	return samples, res, nil
}

// sampleProcess reads the process collector's figures from /metrics.
func sampleProcess(url string) (soakSample, error) {
	var x soakSample
	text, err := promtext.Get(sampleClient, url)
	if err != nil {
		return x, err
	}
	for _, m := range []struct {
		name string
		dst  *float64
	}{
		{"process_resident_memory_bytes", &x.RSSMiB},
		{"go_goroutines", &x.Goroutines},
		{"process_open_fds", &x.OpenFDs},
	} {
		v, found, err := promtext.Value(text, m.name)
		if err != nil {
			return x, fmt.Errorf("%s: %w", url, err)
		}
		if !found {
			return x, fmt.Errorf("%s lacks the process metric %s", url, m.name)
		}
		*m.dst = v
	}
	x.RSSMiB /= 1 << 20
	return x, nil
}

var sampleClient = &http.Client{Timeout: 5 * time.Second}

type verdict struct {
	text string
	grew bool
}

// soakVerdicts compares the median of the last third of the samples with
// the median of the second third (the first is warm-up: pools fill, the
// heap finds its size). A resource that kept growing, by more than a fifth
// and by more than a fixed slack, fails: a steady leak does both, a GC's
// sawtooth neither.
func soakVerdicts(samples []soakSample) []verdict {
	n := len(samples) / 3
	if n == 0 {
		return []verdict{{text: "too few samples to judge growth", grew: true}}
	}
	median := func(xs []soakSample, f func(soakSample) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var out []verdict
	for _, m := range []struct {
		name  string
		f     func(soakSample) float64
		slack float64
	}{
		{"RSS (MiB)", func(x soakSample) float64 { return x.RSSMiB }, 20},
		{"goroutines", func(x soakSample) float64 { return x.Goroutines }, 50},
		{"open fds", func(x soakSample) float64 { return x.OpenFDs }, 20},
	} {
		mid, last := median(samples[n:2*n], m.f), median(samples[len(samples)-n:], m.f)
		grew := last > mid*1.2 && last-mid > m.slack
		word := "stable"
		if grew {
			word = "GREW"
		}
		out = append(out, verdict{
			text: fmt.Sprintf("%-10s %s: median %.1f in the middle third, %.1f in the last", m.name, word, mid, last),
			grew: grew,
		})
	}
	return out
}
