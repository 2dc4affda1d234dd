package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/joingate/joingate/pkg/testenv"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: "joingate_test_total", Help: "t"}).Add(3)
	var storeDown atomic.Bool
	checks := []Check{{Name: "store", Check: func(context.Context) error {
		if storeDown.Load() {
			return errors.New("redis: connection refused")
		}
		return nil
	}}}
	s, err := New("127.0.0.1:0", reg, checks, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Run(t, s.Run)
	base := "http://" + s.Addr()

	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "joingate_test_total 3") {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d", code)
	}
	storeDown.Store(true)
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "store: redis: connection refused") {
		t.Fatalf("/readyz with a failing check: %d %q", code, body)
	}
	storeDown.Store(false)
	s.SetNotReady()
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Fatalf("/readyz while stopping: %d %q", code, body)
	}
	// Not served unless asked for: it is unauthenticated.
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ without HandlePprof: %d, want 404", code)
	}
	stop() // fails the test if Run returns an error
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("admin server still serving after Run returned")
	}
}

func TestPprof(t *testing.T) {
	s, err := New("127.0.0.1:0", prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.HandlePprof()
	testenv.Run(t, s.Run)
	if code, body := get(t, "http://"+s.Addr()+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ with HandlePprof: %d", code)
	}
}
