package loadgen

import (
	"fmt"
	"net/http"
	"time"

	"github.com/joingate/joingate/pkg/promtext"
)

// FallbacksMetric counts a gateway's fallback answers, by cause.
const FallbacksMetric = "joingate_gateway_fallbacks_total"

// scrapeFallbacks reads FallbacksMetric, summed over its causes, from each
// Prometheus endpoint.
func scrapeFallbacks(urls []string) ([]float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	out := make([]float64, len(urls))
	for i, u := range urls {
		text, err := promtext.Get(client, u)
		if err != nil {
			return nil, err
		}
		n, found, err := promtext.Value(text, FallbacksMetric+"{")
		if err != nil {
			return nil, fmt.Errorf("metrics %s: %w", u, err)
		}
		if !found {
			return nil, fmt.Errorf("metrics %s: no %s series (is it a joingate gateway?)", u, FallbacksMetric)
		}
		out[i] = n
	}
	return out, nil
}
