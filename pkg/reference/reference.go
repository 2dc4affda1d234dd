// Package reference is the reference server joingate's benchmarks compare
// against: a bare fasthttp server, built as the gateway's (the caller
// passes gateway.NewHTTPServer, so that only the work differs), that routes
// a callback by the last path segment, decodes the join-group body with the
// gateway's decoder and answers "allow". It does nothing else: no NATS, no
// policy, no metrics, no logs. What joingate costs is its distance from
// this server under the same load on the same machine.
package reference

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/joingate/joingate/pkg/callback"
)

// Options configure the server; Listen is ignored when Listener is set.
// NewServer (required) builds the HTTP server around the handler: the
// gateway's, with its settings.
type Options struct {
	Listen    string
	Listener  net.Listener
	NewServer func(fasthttp.RequestHandler) *fasthttp.Server
}

// DefaultOptions listen on the gateway's port, on loopback.
func DefaultOptions() Options {
	return Options{Listen: "127.0.0.1:10006"}
}

// Server is the reference server.
type Server struct {
	ln  net.Listener
	srv *fasthttp.Server
}

// New binds the listener; Run serves.
func New(opts Options) (*Server, error) {
	if opts.NewServer == nil {
		return nil, errors.New("reference options: no NewServer (pass the gateway's)")
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", opts.Listen); err != nil {
			return nil, fmt.Errorf("reference listener %s: %w", opts.Listen, err)
		}
	}
	return &Server{ln: ln, srv: opts.NewServer(Handle)}, nil
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
