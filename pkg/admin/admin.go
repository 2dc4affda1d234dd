// Package admin serves the operator endpoints of a joingate process:
// /metrics, /healthz, /readyz and, when asked for, /debug/pprof/, on their
// own listener so that the callback edge never serves them.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition; nil means ready.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Server is the admin HTTP server.
type Server struct {
	mux      *http.ServeMux
	srv      *http.Server
	ln       net.Listener
	log      *slog.Logger
	checks   []Check
	stopping atomic.Bool
}

// New binds addr and prepares the endpoints. Metrics come from gatherer;
// /readyz is 200 only while every check passes and the process is not
// shutting down.
func New(addr string, gatherer prometheus.Gatherer, checks []Check, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener %s: %w", addr, err)
	}
	s := &Server{ln: ln, log: log, checks: checks}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	s.mux = mux
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// pprof's profile and trace run for up to 30s by default.
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  90 * time.Second,
	}
	return s, nil
}

// HandleAPI serves h under /api/ to callers that present token as
// "Authorization: Bearer <token>"; with token empty the API answers 403.
// The API changes what decisions are made, so it is never open. Call it
// before Run.
func (s *Server) HandleAPI(h http.Handler, token string) {
	s.mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if token == "" {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintln(w, `{"error":"the admin API is disabled: set admin_token (JOINGATE_ADMIN_TOKEN) to enable it"}`)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			s.log.Warn("admin API call without a valid token", "remote", r.RemoteAddr, "path", r.URL.Path)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error":"missing or wrong token: send Authorization: Bearer <admin_token>"}`)
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// HandleNoAPI answers /api/ with 404 and why: for a process that serves no
// admin API (a gateway), so that `joingate ctl` pointed at it says where
// to point instead of "404 page not found".
func (s *Server) HandleNoAPI(why string) {
	body, _ := json.Marshal(map[string]string{"error": why})
	s.mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write(append(body, '\n'))
	}))
}

// HandlePprof serves /debug/pprof/. It is unauthenticated (anyone who
// reaches the admin listener can read the process's memory and stall it
// with a 30 s profile), so it is served only when admin_pprof asks for it.
// Call it before Run.
func (s *Server) HandlePprof() {
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetNotReady turns /readyz off for good: the process is stopping, and load
// balancers should send no new work.
func (s *Server) SetNotReady() { s.stopping.Store(true) }

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.stopping.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var failed []string
	for _, c := range s.checks {
		if err := c.Check(ctx); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", c.Name, err))
		}
	}
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, f := range failed {
			fmt.Fprintln(w, f)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}

// Run serves until ctx is done, then stops.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("admin server shutdown: %w", err)
	}
	return nil
}
