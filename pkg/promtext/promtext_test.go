package promtext

import (
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
)

const text = `# HELP joingate_gateway_fallbacks_total answers
# TYPE joingate_gateway_fallbacks_total counter
joingate_gateway_fallbacks_total{cause="no_responders"} 2
joingate_gateway_fallbacks_total{cause="timeout"} 12
joingate_gateway_fallbacks_totally 1
joingate_gateway_requests_total{command="x",outcome="decided"} 7
joingate_gateway_requests_total{command="x",outcome="fallback"} 9
joingate_gateway_requests_total{command="y",outcome="decided"} 1
go_goroutines 3.5e+06 1700000000000
joingate_build_info{revision="abc",version="dev"} 1
`

func TestValue(t *testing.T) {
	for _, c := range []struct {
		series string
		v      float64
		found  bool
	}{
		{`joingate_gateway_fallbacks_total{cause="timeout"}`, 12, true},
		{`joingate_gateway_fallbacks_total{`, 14, true},
		{`joingate_gateway_fallbacks_total{cause="nats_unavailable"}`, 0, false},
		{`joingate_gateway_requests_total{command="x",`, 16, true},
		{`joingate_gateway_requests_total{`, 17, true},
		{`go_goroutines`, 3.5e6, true},
		{`go_goroutines{`, 3.5e6, true}, // every series: here one without labels
		{`go_gorout`, 0, false},
		{`joingate_build_info{`, 1, true},
		{`joingate_gateway_fallbacks_totally`, 1, true},
		{`joingate_missing{`, 0, false},
	} {
		v, found, err := Value(text, c.series)
		if err != nil || v != c.v || found != c.found {
			t.Errorf("Value(%s) = %v %v %v, want %v %v", c.series, v, found, err, c.v, c.found)
		}
	}
	for _, bad := range []string{`joingate_x{cause="x"} many`, `joingate_x{cause="x"}`} {
		if _, _, err := Value(bad, "joingate_x{"); err == nil {
			t.Errorf("Value(%q): want an error", bad)
		}
	}
}

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(text))
	}))
	defer srv.Close()
	got, err := Get(srv.Client(), srv.URL+"/metrics")
	if err != nil || got != text {
		t.Fatalf("Get: %q %v", got, err)
	}
	if _, err := Get(srv.Client(), srv.URL+"/other"); err == nil {
		t.Fatal("Get of a 404: want an error")
	}
}

func TestHistogram(t *testing.T) {
	const hist = `# TYPE h histogram
h_bucket{le="0.001"} 3
h_bucket{le="0.01"} 7
h_bucket{le="+Inf"} 8
h_sum 0.05
h_count 8
`
	b, sum, count, err := Histogram(hist, "h")
	if err != nil || sum != 0.05 || count != 8 || len(b) != 3 || b[0] != (Bucket{0.001, 3}) || b[1] != (Bucket{0.01, 7}) || !math.IsInf(b[2].LE, 1) || b[2].Count != 8 {
		t.Fatalf("Histogram = %v, %v, %v, %v", b, sum, count, err)
	}
	if _, _, _, err := Histogram(`h_bucket{le="x"} 1`, "h"); err == nil {
		t.Fatal("a bad le was read")
	}
}
