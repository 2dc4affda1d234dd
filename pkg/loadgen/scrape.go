package loadgen

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FallbacksMetric counts a gateway's fallback answers, by cause.
const FallbacksMetric = "joingate_gateway_fallbacks_total"

// scrapeFallbacks reads FallbacksMetric, summed over its causes, from each
// Prometheus endpoint.
func scrapeFallbacks(urls []string) ([]float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	out := make([]float64, len(urls))
	for i, u := range urls {
		n, err := scrapeCounter(client, u, FallbacksMetric)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// scrapeCounter returns the sum of every series of metric at url, in the
// Prometheus text format.
func scrapeCounter(client *http.Client, url, metric string) (float64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("metrics %s: HTTP %s", url, resp.Status)
	}
	var (
		sum   float64
		found bool
	)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		n, ok, err := parseSample(sc.Text(), metric)
		if err != nil {
			return 0, fmt.Errorf("metrics %s: %w", url, err)
		}
		if ok {
			sum += n
			found = true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("metrics %s: %w", url, err)
	}
	if !found {
		return 0, fmt.Errorf("metrics %s: no %s series (is it a joingate gateway?)", url, metric)
	}
	return sum, nil
}

// parseSample reads the value of a text-format sample line of metric; ok
// is false for other lines.
func parseSample(line, metric string) (v float64, ok bool, err error) {
	rest, found := strings.CutPrefix(line, metric)
	if !found || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
		return 0, false, nil
	}
	if rest[0] == '{' {
		i := strings.LastIndexByte(rest, '}')
		if i < 0 {
			return 0, false, fmt.Errorf("bad sample %q", line)
		}
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return 0, false, fmt.Errorf("bad sample %q", line)
	}
	v, err = strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 0, false, fmt.Errorf("bad sample %q: %w", line, err)
	}
	return v, true, nil
}
