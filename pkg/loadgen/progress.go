package loadgen

import (
	"fmt"
	"io"
	"time"
)

// progress writes a line a second while a run goes on: what the last
// second looked like, so that a stall or a wall of errors shows at once.
type progress struct {
	w       io.Writer
	r       *run
	workers []*worker
	last    time.Time
}

func newProgress(w io.Writer, r *run, workers []*worker) *progress {
	return &progress{w: w, r: r, workers: workers, last: r.start}
}

func (p *progress) line() {
	if p.w == nil {
		return
	}
	now := time.Now()
	var count, errs, latSum, latMax, lagMax int64
	for _, w := range p.workers {
		count += w.live.count.Swap(0)
		errs += w.live.errors.Swap(0)
		latSum += w.live.latSum.Swap(0)
		latMax = max(latMax, w.live.latMax.Swap(0))
		lagMax = max(lagMax, w.live.lagMax.Swap(0))
	}
	phase := "measuring"
	if p.last.Before(p.r.measureStart) {
		phase = "warm-up" // most of the interval was
		if now.Sub(p.r.measureStart) > p.r.measureStart.Sub(p.last) {
			phase = "measuring"
		}
	}
	rate := float64(count) / now.Sub(p.last).Seconds()
	p.last = now
	var mean time.Duration
	if count > 0 {
		mean = time.Duration(latSum / count)
	}
	line := fmt.Sprintf("bench %5.1fs %-9s %8.0f req/s  mean %s  max %s  errors %d",
		now.Sub(p.r.start).Seconds(), phase, rate, fmtDuration(mean), fmtDuration(time.Duration(latMax)), errs)
	if p.r.open {
		line += fmt.Sprintf("  send lag max %s", fmtDuration(time.Duration(lagMax)))
		if time.Duration(lagMax) > behindLag {
			line += " (behind schedule)"
		}
	}
	fmt.Fprintln(p.w, line)
}

// fmtDuration prints a latency with three significant digits in a unit
// that suits it.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}

// fmtMillis prints milliseconds as fmtDuration does.
func fmtMillis(ms float64) string { return fmtDuration(time.Duration(ms * 1e6)) }
