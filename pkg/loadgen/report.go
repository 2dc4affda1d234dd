package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Report writes r for a person to read.
func Report(w io.Writer, r *Result) {
	conn := "keep-alive"
	if !r.KeepAlive {
		conn = "new connection per request"
	}
	if r.Mode == "open" {
		fmt.Fprintf(w, "open loop at %.0f req/s, up to %d connections (%s), %.3gs after %.3gs warm-up\n",
			r.TargetRate, r.Connections, conn, r.Seconds, r.Warmup)
	} else {
		fmt.Fprintf(w, "closed loop, %d connections (%s), %.3gs after %.3gs warm-up\n",
			r.Connections, conn, r.Seconds, r.Warmup)
	}
	fmt.Fprintf(w, "  target      POST %s\n", r.URL)
	fmt.Fprintf(w, "  population  %d applicants, %d groups, %s\n", r.Applicants, r.Groups, r.Distribution)
	fmt.Fprintf(w, "  requests    %d sent, %d answered: %.0f req/s\n", r.Sent, r.Responses, r.Throughput)
	from := "from the send time"
	if r.Mode == "open" {
		from = "from the time each request was due"
	}
	fmt.Fprintf(w, "  latency     %s  (%s)\n", fmtLatency(r.Latency), from)
	if r.ServiceTime != nil {
		fmt.Fprintf(w, "  service     %s  (from the actual send time)\n", fmtLatency(*r.ServiceTime))
		fmt.Fprintf(w, "  send lag    %s\n", fmtLatency(*r.SendLag))
	}
	fmt.Fprintf(w, "  answers     allow %d (%.2f%%)", r.Allowed, pct(r.Allowed, r.Responses))
	for _, code := range slices.Sorted(maps.Keys(r.Refused)) {
		fmt.Fprintf(w, "  refuse %s: %d", code, r.Refused[code])
	}
	fmt.Fprintf(w, "  failed (actionCode != 0): %d\n", r.Failed)
	switch {
	case r.Fallbacks != nil:
		fmt.Fprintf(w, "  fallbacks   %.0f (growth of %s; included in the answers above)\n", *r.Fallbacks, FallbacksMetric)
	case r.FallbacksNote != "":
		fmt.Fprintf(w, "  fallbacks   unknown: %s\n", r.FallbacksNote)
	default:
		fmt.Fprintf(w, "  fallbacks   unknown: a fallback allow reads like a decided one; pass --metrics-url\n")
	}
	var status []string
	for _, code := range slices.Sorted(maps.Keys(r.Status)) {
		status = append(status, fmt.Sprintf("%s: %d", code, r.Status[code]))
	}
	statusText := "0"
	if len(status) > 0 {
		statusText = strings.Join(status, ", ")
	}
	fmt.Fprintf(w, "  errors      timeouts %d  transport %d  HTTP status not 200: %s  non-JSON bodies %d\n",
		r.Timeouts, r.Errors, statusText, r.NonJSON)
	for _, msg := range slices.Sorted(maps.Keys(r.ErrorSamples)) {
		fmt.Fprintf(w, "              %dx %s\n", r.ErrorSamples[msg], msg)
	}
	if r.ConnectFailures > 0 {
		fmt.Fprintf(w, "              %d failed connects in the run, each followed by a back-off of up to %s\n", r.ConnectFailures, connectBackoffMax)
	}
	fmt.Fprintf(w, "  generator   %.2f cores, %.1fµs CPU per request\n", r.GeneratorCPU, r.GeneratorCPUPerRequest)
	if r.Behind {
		fmt.Fprintf(w, "  WARNING: the schedule was not kept (send lag p99 %s, max %s; %d requests due in the window never sent).\n"+
			"  Latencies above count from the due time, so they include the delay; either the server is saturated\n"+
			"  (every connection busy: raise --connections or lower --rate) or the generator lacks CPU.\n",
			fmtMillis(r.SendLag.P99), fmtMillis(r.SendLag.Max), r.Unsent)
	}
}

func fmtLatency(l Latency) string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s",
		fmtMillis(l.P50), fmtMillis(l.P90), fmtMillis(l.P99), fmtMillis(l.P999), fmtMillis(l.Max))
}

func pct(n, of uint64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}
