package benchsuite

import (
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/joingate/joingate/pkg/loadgen"
)

// Row is one setup under load.
type Row struct {
	Setup  string          `json:"setup"`
	Result *loadgen.Result `json:"result"`
	// Ratio is the throughput over the reference's.
	Ratio float64 `json:"ratio_to_reference"`
	// Processes are the server processes measured (Redis excluded: every
	// setup but the reference uses the same one).
	Processes []string `json:"processes"`
	// RSSMiB is their resident memory at the end of the measured window,
	// PeakRSSMiB their high-water mark since they started (VmHWM), summed.
	RSSMiB     float64 `json:"rss_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// ServerCPU is their CPU time over the window, in cores; RedisCPU
	// that of Redis.
	ServerCPU float64 `json:"server_cpu_cores"`
	RedisCPU  float64 `json:"redis_cpu_cores,omitempty"`
	// OtherCPU is what the rest of the machine used over the window, in
	// cores: other programs competing with the bench (it should be ~0).
	OtherCPU float64 `json:"other_cpu_cores"`
	// CPUPerRequest is the CPU time of the server processes and Redis per
	// answered request, RedisCPUPerRequest Redis's alone, in µs.
	CPUPerRequest      float64 `json:"cpu_us_per_request"`
	RedisCPUPerRequest float64 `json:"redis_cpu_us_per_request"`
	// Refused is the share of answers that refused.
	Refused float64 `json:"refused_share"`
	// StoreCalls is the share of decisions that made a store call (the
	// flood's rows only).
	StoreCalls float64 `json:"store_calls_per_decision,omitempty"`
}

// perRequest fills the figures per answered request.
func (r *Row) perRequest() {
	res := r.Result
	if res.Throughput <= 0 || res.Responses == 0 {
		return
	}
	r.CPUPerRequest = (r.ServerCPU + r.RedisCPU) / res.Throughput * 1e6
	r.RedisCPUPerRequest = r.RedisCPU / res.Throughput * 1e6
	var refused uint64
	for _, n := range res.Refused {
		refused += n
	}
	r.Refused = float64(refused) / float64(res.Responses)
}

// Target is one of the suite's goals (a ratio to the reference, memory) and
// whether this run met it.
type Target struct {
	Name string `json:"name"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Report is what the suite prints and writes as JSON.
type Report struct {
	// WorkDir held the configuration and the servers' logs.
	WorkDir string            `json:"work_dir"`
	Machine map[string]string `json:"machine"`
	Load    string            `json:"load"`
	Rows    []Row             `json:"rows"`
	// OpenLoops are the open loops at fixed rates, against the reference
	// and `all`.
	OpenLoops []OpenLoop `json:"open_loops,omitempty"`
	Profile   string     `json:"profile,omitempty"`
	Targets   []Target   `json:"targets"`
}

// OpenLoop is one fixed rate sent to the reference (the floor that the
// generator and the machine allow) and to `all`, with where `all`'s time
// went.
type OpenLoop struct {
	Rate      float64 `json:"rate"`
	Reference *Row    `json:"reference"`
	All       *Row    `json:"all,omitempty"`
	Floor     *Row    `json:"floor,omitempty"`
	Stages    []Stage `json:"all_stages,omitempty"`
}

// Added is the p99 latency `all` adds to the reference's at this rate, in
// ms.
func (o *OpenLoop) Added() float64 { return o.added(o.All) }

func (o *OpenLoop) added(r *Row) float64 {
	return r.Result.Latency.P99 - o.Reference.Result.Latency.P99
}

// openLoopTarget is the most p99 latency `all` may add at a rate, in ms.
func openLoopTarget(rate float64) float64 {
	if rate <= 5000 {
		return 0.5
	}
	return 1
}

// finish computes the ratios to the reference (the first row) and checks
// the targets.
func (rep *Report) finish() {
	ref := rep.Rows[0]
	for i := range rep.Rows {
		rep.Rows[i].perRequest()
		if ref.Result.Throughput > 0 {
			rep.Rows[i].Ratio = rep.Rows[i].Result.Throughput / ref.Result.Throughput
		}
	}
	rep.Targets = targets(rep)
}

func targets(rep *Report) []Target {
	var ts []Target
	for _, r := range rep.Rows {
		switch r.Setup {
		case SetupAll:
			ts = append(ts,
				Target{Name: "all >= 0.5 of the reference (closed loop)", Got: fmt.Sprintf("%.2f", r.Ratio), Met: r.Ratio >= 0.5},
				Target{Name: "all RSS < 100 MiB", Got: fmt.Sprintf("%.0f MiB peak", r.PeakRSSMiB), Met: r.PeakRSSMiB < 100})
			ts = append(ts, Target{Name: "all: CPU per decision <= 30µs (all processes)", Got: fmt.Sprintf("%.1fµs", r.CPUPerRequest), Met: r.CPUPerRequest <= 30})
		case SetupDistributed:
			ts = append(ts,
				Target{Name: "distributed >= 0.3 of the reference", Got: fmt.Sprintf("%.2f", r.Ratio), Met: r.Ratio >= 0.3},
				Target{Name: "distributed: CPU per decision <= 45µs (all processes)", Got: fmt.Sprintf("%.1fµs", r.CPUPerRequest), Met: r.CPUPerRequest <= 45})
		case SetupFlood:
			got := fmt.Sprintf("%.2f of the reference, %.0f%% refused, %.2fµs of Redis CPU per callback (%.1f%% of decisions called Redis)",
				r.Ratio, 100*r.Refused, r.RedisCPUPerRequest, 100*r.StoreCalls)
			ts = append(ts, Target{Name: "flood: >= 0.6 of the reference, <= 1µs Redis CPU per callback, >= 95% refused", Got: got,
				Met: r.Ratio >= 0.6 && r.RedisCPUPerRequest <= 1 && r.Refused >= 0.95})
		}
	}
	for _, o := range rep.OpenLoops {
		if o.All == nil {
			continue
		}
		res := o.All.Result
		fb := "unknown"
		if res.Fallbacks != nil {
			fb = fmt.Sprintf("%.0f", *res.Fallbacks)
		}
		limit := openLoopTarget(o.Rate)
		ts = append(ts, Target{
			Name: fmt.Sprintf("open loop at %.0f/s: all adds <= %s to the reference's p99, no fallback", o.Rate, fmtMs(limit)),
			Got: fmt.Sprintf("p99 %s against %s (+%s), %s fallbacks, %d errors",
				fmtMs(res.Latency.P99), fmtMs(o.Reference.Result.Latency.P99), fmtMs(o.Added()), fb, res.HTTPErrors()),
			Met: o.Added() <= limit && res.Fallbacks != nil && *res.Fallbacks == 0 && res.HTTPErrors() == 0 && !res.Behind,
		})
	}
	return ts
}

func fmtMs(ms float64) string {
	switch {
	case ms < 1:
		return fmt.Sprintf("%.0fµs", ms*1000)
	case ms < 1000:
		return fmt.Sprintf("%.3gms", ms)
	default:
		return fmt.Sprintf("%.3gs", ms/1000)
	}
}

// Print writes the report as a table, with the open loops and the targets.
func (rep *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "joingate bench suite: %s\n", rep.Load)
	keys := make([]string, 0, len(rep.Machine))
	for k := range rep.Machine {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v := rep.Machine[k]; v != "" {
			fmt.Fprintf(w, "  %-34s %s\n", k, v)
		}
	}
	fmt.Fprintln(w)
	const format = "%-17s %8s %5s %7s %7s %7s %8s %6s %7s %7s %5s %5s %6s %8s %5s %5s\n"
	fmt.Fprintf(w, format, "setup", "req/s", "×ref", "p50", "p99", "p99.9", "fallback", "errors", "refused", "RSS MiB", "srv", "redis", "µs/req", "redis µs", "gen", "other")
	row := func(name string, r Row) {
		res := r.Result
		fb, redisCPU := "-", "-"
		if res.Fallbacks != nil {
			fb = fmt.Sprintf("%.0f", *res.Fallbacks)
		}
		if r.RedisCPU > 0 {
			redisCPU = fmt.Sprintf("%.2f", r.RedisCPU)
		}
		perReq, redisPerReq := "-", "-"
		if r.CPUPerRequest > 0 {
			perReq = fmt.Sprintf("%.1f", r.CPUPerRequest)
		}
		if r.RedisCPU > 0 {
			redisPerReq = fmt.Sprintf("%.2f", r.RedisCPUPerRequest)
		}
		fmt.Fprintf(w, format, name, fmt.Sprintf("%.0f", res.Throughput), fmt.Sprintf("%.2f", r.Ratio),
			fmtMs(res.Latency.P50), fmtMs(res.Latency.P99), fmtMs(res.Latency.P999), fb,
			strconv.FormatUint(res.HTTPErrors(), 10), fmt.Sprintf("%.0f%%", 100*r.Refused), fmt.Sprintf("%.0f", r.PeakRSSMiB),
			fmt.Sprintf("%.2f", r.ServerCPU), redisCPU, perReq, redisPerReq, fmt.Sprintf("%.2f", res.GeneratorCPU), fmt.Sprintf("%.2f", r.OtherCPU))
	}
	for _, r := range rep.Rows {
		row(r.Setup, r)
	}
	for _, ol := range rep.OpenLoops {
		for _, o := range []*Row{ol.Reference, ol.Floor, ol.All} {
			if o == nil {
				continue
			}
			res := o.Result
			fmt.Fprintf(w, "\n%s: %d of %d requests due in the window answered; latency from the due time p50 %s p99 %s p99.9 %s max %s;\n",
				o.Setup, res.Responses, res.Sent+res.Unsent, fmtMs(res.Latency.P50), fmtMs(res.Latency.P99), fmtMs(res.Latency.P999), fmtMs(res.Latency.Max))
			fb := "-"
			if res.Fallbacks != nil {
				fb = fmt.Sprintf("%.0f", *res.Fallbacks)
			}
			fmt.Fprintf(w, "  service time p99 %s, send lag p99 %s; fallbacks %s, errors %d; RSS %.0f MiB (peak %.0f); CPU srv %.2f redis %.2f gen %.2f other %.2f",
				fmtMs(res.ServiceTime.P99), fmtMs(res.SendLag.P99), fb, res.HTTPErrors(), o.RSSMiB, o.PeakRSSMiB, o.ServerCPU, o.RedisCPU, res.GeneratorCPU, o.OtherCPU)
			if res.Behind {
				fmt.Fprintf(w, "; BEHIND SCHEDULE (%d unsent)", res.Unsent)
			}
			fmt.Fprintln(w)
		}
		if len(ol.Stages) > 0 {
			fmt.Fprintf(w, "  where all's time went at %.0f/s (its own histograms; each stage contains the next):\n", ol.Rate)
			for _, st := range ol.Stages {
				fmt.Fprintf(w, "    %-30s mean %7s  p99 %7s  (%.0f)\n", st.Name, fmtMs(st.Mean), fmtMs(st.P99), st.Count)
			}
		}
	}
	fmt.Fprintln(w, "\nRSS: peak (VmHWM) of the server processes, summed; Redis excluded. CPU in cores over the window:")
	fmt.Fprintln(w, "srv the server processes, redis the redis-server, gen this load generator, other the rest of")
	fmt.Fprintln(w, "the machine (other programs: the figures are only fair when it is near 0); µs/req the CPU time of")
	fmt.Fprintln(w, "srv and redis per answer, redis µs Redis's alone. refused: the share of answers that refuse.")
	fmt.Fprintln(w, "flood: 1,000 applicants, 100 groups, Zipf, at 5 and 60 a minute, with the worker's memory of")
	fmt.Fprintln(w, "refusals and without it. Closed-loop latency runs from the send time, open-loop latency from")
	fmt.Fprintln(w, "each request's due time.")
	for _, r := range rep.Rows {
		if r.Setup == SetupFloor {
			fmt.Fprintln(w, "floor: all with no limits (HTTP, the NATS request and reply, the worker's decoding; no store call):")
			fmt.Fprintf(w, "%.1fµs per request, %.2f of the reference. No change behind the NATS hop (policy, store, memory of\n", r.CPUPerRequest, r.Ratio)
			fmt.Fprintln(w, "refusals) takes all or the flood below it: a target beyond it asks for a cheaper edge or hop.")
			for _, o := range rep.OpenLoops {
				if o.Floor != nil {
					fmt.Fprintf(w, "Open loop at %.0f/s: the floor adds %s to the reference's p99.\n", o.Rate, fmtMs(o.added(o.Floor)))
				}
			}
		}
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets:")
		for _, t := range rep.Targets {
			met := "MET    "
			if !t.Met {
				met = "NOT MET"
			}
			fmt.Fprintf(w, "  %s %-60s %s\n", met, t.Name, t.Got)
		}
	}
}
