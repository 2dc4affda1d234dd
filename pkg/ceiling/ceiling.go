// Package ceiling is the reference server joingate's benchmarks compare
// against: a bare fasthttp server, configured as the gateway's, that routes
// a callback by the last path segment, decodes the join-group body with the
// gateway's decoder and answers "allow". It does nothing else: no NATS, no
// policy, no metrics, no logs. What joingate costs is its distance from
// this server under the same load on the same machine.
package ceiling

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/callback"
)

// Options configure the server; Listen is ignored when Listener is set.
type Options struct {
	Listen       string
	Listener     net.Listener
	MaxBodyBytes int
	ReadTimeout  time.Duration
	IdleTimeout  time.Duration
	MaxConns     int
}

// DefaultOptions are the gateway's defaults, on loopback.
func DefaultOptions() Options {
	g := gateway.DefaultOptions()
	return Options{
		Listen:       "127.0.0.1:10006",
		MaxBodyBytes: g.MaxBodyBytes,
		ReadTimeout:  g.ReadTimeout,
		IdleTimeout:  g.IdleTimeout,
		MaxConns:     g.MaxConns,
	}
}

// Server is the reference server.
type Server struct {
	ln  net.Listener
	srv *fasthttp.Server
}

// New binds the listener; Run serves.
func New(opts Options) (*Server, error) {
	if opts.MaxBodyBytes <= 0 || opts.ReadTimeout <= 0 || opts.IdleTimeout <= 0 || opts.MaxConns <= 0 {
		return nil, errors.New("ceiling options: body limit, timeouts and connection limit must be positive")
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", opts.Listen); err != nil {
			return nil, fmt.Errorf("reference listener %s: %w", opts.Listen, err)
		}
	}
	srv := gateway.NewHTTPServer(Handle, gateway.Options{
		MaxBodyBytes: opts.MaxBodyBytes,
		ReadTimeout:  opts.ReadTimeout,
		IdleTimeout:  opts.IdleTimeout,
		MaxConns:     opts.MaxConns,
	})
	return &Server{ln: ln, srv: srv}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is done, then shuts down within 5s.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("reference server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.ShutdownWithContext(sctx)
}

// Handle is the whole reference: route on the last path segment, decode
// the join-group callback as the gateway does, answer allow.
func Handle(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, callback.AppendFailure(nil, "method not allowed"))
		return
	}
	if string(callback.Command(ctx.Path())) != callback.JoinGroupCommand {
		writeJSON(ctx, fasthttp.StatusNotFound, callback.AppendFailure(nil, "unknown path"))
		return
	}
	var req callback.JoinGroup
	if err := callback.DecodeJoinGroup(ctx.PostBody(), &req); err != nil {
		writeJSON(ctx, fasthttp.StatusBadRequest, callback.AppendFailure(nil, err.Error()))
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("application/json; charset=utf-8")
	ctx.SetBodyString(callback.AllowJSON)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("application/json; charset=utf-8")
	ctx.SetBody(body)
}
