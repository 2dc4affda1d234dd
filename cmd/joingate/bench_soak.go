package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"slices"
	"syscall"
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

// runSoak is `joingate bench soak`: `joingate all` with Redis under a steady
// open-loop load for a long, bounded time, sampling its memory, goroutines
// and open files; it fails when one of them keeps growing.
func runSoak(args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("joingate bench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := suiteOptions{load: loadgen.DefaultOptions(), setups: []string{setupReference, setupAll}}
	loadFlags(fs, &o.load, false)
	fs.StringVar(&o.redisServer, "redis-server", "redis-server", "redis-server binary")
	fs.Float64Var(&o.openFactor, "factor", 0.5, "without --rate: this fraction of the reference's rate, measured first")
	interval := fs.Duration("interval", 5*time.Second, "how often to sample the process")
	o.load.Duration = 10 * time.Minute
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 || *interval <= 0 || o.load.Duration < 10**interval {
		fmt.Fprintf(stderr, "joingate bench soak: want no arguments and --duration of at least 10 --interval\n")
		return exitUsage
	}
	o.load.Progress = stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := newSuite(o, environ, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "joingate bench soak: %v\n", err)
		return 1
	}
	samples, res, err := s.soak(ctx, *interval)
	s.close(err != nil)
	if err != nil {
		fmt.Fprintf(stderr, "joingate bench soak: %v\n", err)
		return 1
	}
	loadgen.Report(stdout, res)
	fmt.Fprintf(stdout, "\n| time | RSS MiB | goroutines | open fds |\n|---|---|---|---|\n")
	for _, x := range samples {
		fmt.Fprintf(stdout, "| %s | %.1f | %.0f | %.0f |\n", x.At.Round(time.Second), x.RSSMiB, x.Goroutines, x.OpenFDs)
	}
	verdicts := soakVerdicts(samples)
	failed := false
	for _, v := range verdicts {
		fmt.Fprintln(stdout, v.text)
		failed = failed || v.grew
	}
	if failed {
		return 1
	}
	return 0
}

// soak measures the reference (unless --rate is given), starts Redis and
// `joingate all`, loads it in open loop and samples it until the load ends.
func (s *suite) soak(ctx context.Context, interval time.Duration) ([]soakSample, *loadgen.Result, error) {
	rate := s.o.load.Rate
	if rate == 0 {
		probe := *s
		probe.o.load.Duration, probe.o.openFactor = 10*time.Second, 0
		row, err := probe.runReference(ctx, &SuiteReport{})
		if err != nil {
			return nil, nil, err
		}
		rate = row.Result.Throughput * s.o.openFactor
	}
	redisAddr, err := s.startRedis(ctx)
	if err != nil {
		return nil, nil, err
	}
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, nil, err
	}
	listen, admin := addrs[0], addrs[1]
	c, err := s.start("all", s.self, s.joingateArgs("all", "--listen", listen, "--admin-listen", admin, "--redis", "redis://"+redisAddr+"/0")...)
	if err != nil {
		return nil, nil, err
	}
	defer c.stop()
	if err := waitFor(ctx, c, readyz(admin)); err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(s.stderr, "--- soak: `joingate all` with Redis, open loop at %.0f req/s for %s\n", rate, s.o.load.Duration)

	opts := s.o.load
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
	if c.exited() {
		return nil, nil, c.failure(errors.New("exited under load"))
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
