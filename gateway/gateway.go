// Package gateway is joingate's callback edge: a fasthttp server that takes
// IMServer's webhook POSTs, asks a worker for the decision over NATS within
// a short budget, and answers IMServer with JSON every time: the worker's
// decision, or the configured fallback when none arrives in time.
package gateway

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/throttle"
)

// Options configure a Gateway. Conn is required.
type Options struct {
	// Listen is the callback address; ignored when Listener is set.
	Listen   string
	Listener net.Listener
	Conn     *nats.Conn
	// Subject prefix: the callbacks joingate decides (callback.Commands) go
	// to <Subject>.<command>.
	Subject         string
	DecisionTimeout time.Duration
	// FallbackBody is the answer when no decision arrives in time:
	// callback.AllowJSON unless gateway.fallback is deny.
	FallbackBody []byte
	MaxBodyBytes int
	ReadTimeout  time.Duration
	IdleTimeout  time.Duration
	MaxConns     int
	// ShutdownTimeout bounds how long Run waits, once stopped, for in-flight
	// requests to be answered.
	ShutdownTimeout time.Duration
	// Access control, all optional. With BasicUser set, a callback must
	// carry that user and BasicPassword (IMServer sends them when its
	// webhook URL has user-info). With AllowNets set, only clients whose
	// address is in one of them are served. With TLSCertFile and
	// TLSKeyFile set, the edge serves HTTPS.
	BasicUser, BasicPassword string
	AllowNets                []netip.Prefix
	TLSCertFile, TLSKeyFile  string
	// Logger nil discards the logs; Registerer nil registers the metrics
	// with a registry of the gateway's own.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultOptions returns the options a gateway runs with unless told
// otherwise: those of config.Default(), so that a default is written once.
// The caller sets Conn.
func DefaultOptions() Options {
	c := config.Default()
	return Options{
		Listen:          c.Listen,
		Subject:         c.NATS.Subject,
		DecisionTimeout: c.Gateway.DecisionTimeout,
		FallbackBody:    c.Gateway.FallbackBody(),
		MaxBodyBytes:    c.Gateway.MaxBodyBytes,
		ReadTimeout:     c.Gateway.ReadTimeout,
		IdleTimeout:     c.Gateway.IdleTimeout,
		MaxConns:        c.Gateway.MaxConns,
		ShutdownTimeout: c.ShutdownTimeout,
	}
}

// validate reports what is wrong with o; it changes nothing.
func (o *Options) validate() error {
	var errs []error
	if o.Conn == nil {
		errs = append(errs, errors.New("no NATS connection"))
	}
	if o.Subject == "" {
		errs = append(errs, errors.New("no subject"))
	}
	if o.DecisionTimeout <= 0 {
		errs = append(errs, fmt.Errorf("decision timeout must be positive, got %s", o.DecisionTimeout))
	}
	if len(o.FallbackBody) == 0 {
		errs = append(errs, errors.New("no fallback body"))
	}
	if o.MaxBodyBytes <= 0 || o.ReadTimeout <= 0 || o.IdleTimeout <= 0 || o.MaxConns <= 0 || o.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("body limit, timeouts and connection limit must be positive"))
	}
	return errors.Join(errs...)
}

// Gateway is the callback edge.
type Gateway struct {
	opts     Options
	log      *slog.Logger
	metrics  *metrics
	ln       net.Listener   // bound
	served   *limitListener // on ln (through TLS when configured): what srv serves
	srv      *fasthttp.Server
	routes   map[string]route // by command
	stopping atomic.Bool

	requests        sync.Pool // of *nats.Msg, the tagged request reused
	replies         *replies
	fallbackRefuses bool
	basicAuth       []byte // the expected Authorization header, or nil
	// throttled logs per-request trouble (bad input, fallbacks) at most
	// once a second per kind.
	throttled *throttle.Throttle
}

// New checks opts, binds the listener and builds the gateway; Run serves.
func New(opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("gateway options: %w", err)
	}
	g := &Gateway{
		opts:            opts,
		log:             opts.Logger.With("component", "gateway"),
		metrics:         newMetrics(opts.Registerer, opts.DecisionTimeout, opts.Conn),
		routes:          make(map[string]route, len(callback.Commands)),
		fallbackRefuses: callback.IsRefusal(opts.FallbackBody),
		requests:        sync.Pool{New: func() any { return new(nats.Msg) }},
	}
	for _, c := range callback.Commands {
		g.routes[c] = route{command: c, subject: natsconn.TaggedSubject(opts.Subject, c), metrics: g.metrics.command(c)}
	}
	g.throttled = throttle.New(g.log, time.Second)
	if opts.BasicUser != "" {
		g.basicAuth = []byte("Basic " + base64.StdEncoding.EncodeToString([]byte(opts.BasicUser+":"+opts.BasicPassword)))
	}
	// A callback must fit in one NATS message, or every one would fall back.
	if limit := opts.Conn.MaxPayload(); limit > 0 && int64(opts.MaxBodyBytes)+4096 > limit {
		return nil, fmt.Errorf("gateway options: max body %d bytes (+4 KiB of headers) exceeds the NATS server's max_payload %d", opts.MaxBodyBytes, limit)
	}
	var tlsConfig *tls.Config
	if opts.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.TLSCertFile, opts.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("gateway tls: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	}
	g.ln = opts.Listener
	if g.ln == nil {
		ln, err := net.Listen("tcp", opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("callback listener %s: %w", opts.Listen, err)
		}
		g.ln = ln
	}
	ln := g.ln
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	g.served = newLimitListener(ln, opts.MaxConns, opts.FallbackBody, g.metrics.connsRefused)
	g.srv = NewHTTPServer(g.handle, opts)
	// The listener keeps to MaxConns; fasthttp's own limit, which would
	// answer in plain text, only needs room for connections it has not yet
	// let go of when their slot is given back.
	g.srv.Concurrency = 2 * opts.MaxConns
	g.srv.ErrorHandler = g.handleError
	// fasthttp's parse errors quote the raw headers, Authorization
	// included: keep them out of the log.
	g.srv.SecureErrorLogMessage = true
	// Keep-alive connections get "Connection: close" while stopping, so
	// that IMServer does not send its next callback into a closed
	// connection (a POST it would not retry).
	g.srv.CloseOnShutdown = true
	g.srv.Logger = fasthttpLogger{g.log}
	replies, err := newReplies(opts.Conn)
	if err != nil {
		g.served.Close()
		return nil, fmt.Errorf("gateway: subscribe to the replies: %w", err)
	}
	g.replies = replies
	return g, nil
}

// NewHTTPServer returns a fasthttp server for h with the gateway's HTTP
// settings from opts (body limit, timeouts, connection limit) and nothing
// else of the gateway: the benchmarks' reference server (pkg/reference) is
// built by it too, so that only the work differs.
func NewHTTPServer(h fasthttp.RequestHandler, opts Options) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      h,
		Name:                         "joingate",
		Concurrency:                  opts.MaxConns,
		ReadBufferSize:               8 << 10,
		MaxRequestBodySize:           opts.MaxBodyBytes,
		ReadTimeout:                  opts.ReadTimeout,
		WriteTimeout:                 opts.ReadTimeout,
		IdleTimeout:                  opts.IdleTimeout,
		TCPKeepalive:                 true,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
	}
}

// NewDefaultHTTPServer is NewHTTPServer with the default options: the
// reference server's (reference.Options.NewServer).
func NewDefaultHTTPServer(h fasthttp.RequestHandler) *fasthttp.Server {
	return NewHTTPServer(h, DefaultOptions())
}

// Addr is the bound callback address.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Ready reports whether the gateway can answer callbacks: serving and not
// shutting down. NATS is not part of it: without NATS every join callback
// gets gateway.fallback at once, while an unready gateway is taken out of
// its Service and IMServer, reaching nobody, refuses every join.
// joingate_gateway_nats_connected tells whether decisions can be had.
func (g *Gateway) Ready(context.Context) error {
	if g.stopping.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// Close releases the callback listener of a gateway that will not Run (its
// process failed to start); after Run it does nothing.
func (g *Gateway) Close() {
	g.served.Close()
	g.replies.close()
}

// Run serves callbacks until ctx is done, then shuts down gracefully: not
// ready, no new connections, in-flight requests answered (within
// ShutdownTimeout).
func (g *Gateway) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- g.srv.Serve(g.served) }()
	g.log.Info("gateway listening", "addr", g.Addr(), "subjects", natsconn.TaggedSubject(g.opts.Subject, "<command>"), "commands", callback.Commands, "decision_timeout", g.opts.DecisionTimeout)
	select {
	case err := <-errc:
		return fmt.Errorf("callback server: %w", err)
	case <-ctx.Done():
	}
	g.stopping.Store(true)
	g.log.Info("gateway shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), g.opts.ShutdownTimeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- g.srv.ShutdownWithContext(sctx) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for stopped := false; !stopped; {
		select {
		case err := <-shut:
			if err != nil {
				return fmt.Errorf("callback server shutdown: %w", err)
			}
			stopped = true
		case <-tick.C:
			g.served.closeUnused(time.Second)
		}
	}
	// Shutdown closes only the listeners Serve has registered: one
	// cancelled right after start would still be accepting. Serve returns
	// once the listener is closed; then no refusal starts, and the last
	// ones end within a second.
	g.served.Close()
	<-errc
	g.served.refusing.Wait()
	g.replies.close()
	g.log.Info("gateway stopped")
	return nil
}

func (g *Gateway) handle(ctx *fasthttp.RequestCtx) {
	defer func() {
		if p := recover(); p != nil {
			g.log.Error("BUG: panic while handling a callback", "panic", p, "path", string(ctx.Path()))
			g.fail(ctx, fasthttp.StatusInternalServerError, "internal error")
		}
	}()
	if !g.admitted(ctx) {
		return
	}
	if !ctx.IsPost() {
		g.reject(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed: IMServer callbacks are POST")
		return
	}
	cmd := command(ctx.Request.Header.RequestURI())
	r, decided := g.routes[string(cmd)]
	if !decided {
		if callback.IsCommand(cmd) {
			// A callback we hold no policy for: allowed here, no NATS hop.
			g.metrics.requests.WithLabelValues(commandOther, outcomeNoPolicy).Inc()
			writeJSONString(ctx, fasthttp.StatusOK, callback.AllowJSON)
			return
		}
		g.reject(ctx, fasthttp.StatusNotFound, "unknown path: want <webhook base>/<callbackCommand>")
		return
	}
	g.decide(ctx, r)
}

// route is where a callback joingate decides goes.
type route struct {
	command, subject string
	metrics          *commandMetrics
}

// command is the callback command a request target names: its last path
// segment. It routes on the raw target cut at the query: fasthttp's parsed
// Path reads "//callback...?x=http://y" (a base URL ending in "/" and a
// "://" in the query) as an absolute URL, and loses the command.
func command(target []byte) []byte {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	if bytes.IndexByte(target, '%') >= 0 {
		// Rare: percent-encoding in a webhook path. Decode it as the
		// parsed path would (an invalid escape is left as it is).
		if unescaped, err := url.PathUnescape(string(target)); err == nil {
			target = []byte(unescaped)
		}
	}
	return callback.Command(target)
}

// decide asks a worker to decide a callback on its route.
func (g *Gateway) decide(ctx *fasthttp.RequestCtx, r route) {
	command := r.command
	start := time.Now()
	g.metrics.inFlight.Inc()
	defer g.metrics.inFlight.Dec()
	body := ctx.PostBody()
	opID := ctx.Request.Header.Peek(natsconn.HeaderOperationID)

	if err := callback.Validate(command, body); err != nil {
		r.metrics.invalid.Inc()
		if l, ok := g.throttled.Allow(slog.LevelWarn, "malformed callback; answered actionCode 1", slog.String("command", command)); ok {
			l.Log("operationID", string(opID), "remote", ctx.RemoteAddr().String(), "err", err)
		}
		writeJSON(ctx, fasthttp.StatusBadRequest, callback.AppendFailure(nil, err.Error()))
		return
	}

	// The message and its frame are reused: nats.go copies what it sends
	// before PublishMsg returns.
	deadline := start.Add(g.opts.DecisionTimeout)
	out := g.requests.Get().(*nats.Msg)
	defer g.requests.Put(out)
	out.Subject = r.subject
	out.Data = natsconn.AppendTagged(out.Data[:0], 0, deadline, opID, body) // replies.request tags it

	var (
		cause string
		reply []byte
		err   error
	)
	if !g.opts.Conn.IsConnected() {
		cause, err = causeNATSUnavailable, errNotConnected
	} else {
		sent := time.Now()
		reply, err = g.replies.request(out, deadline)
		switch {
		case err == nil && !isJSONObject(reply):
			cause = causeError
			err = fmt.Errorf("worker replied %d bytes that are not a JSON object", len(reply))
		case err == nil:
			g.metrics.natsTime.Observe(time.Since(sent).Seconds())
		case errors.Is(err, errReplyTimeout):
			cause = causeTimeout
		case errors.Is(err, nats.ErrNoResponders):
			cause = causeNoResponders
		case errors.Is(err, errConnClosed), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
			errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrReconnectBufExceeded),
			errors.Is(err, nats.ErrInvalidConnection), errors.Is(err, nats.ErrDisconnected):
			cause = causeNATSUnavailable
		default:
			cause = causeError
		}
	}
	if cause != "" {
		if l, ok := g.throttled.Allow(slog.LevelWarn, "no decision; answered gateway.fallback", slog.String("cause", cause)); ok {
			l.Log("operationID", string(opID), "err", err)
		}
	}

	if cause != "" {
		g.fallback(ctx, r, cause)
	} else {
		r.metrics.decided.Inc()
		writeJSON(ctx, fasthttp.StatusOK, reply)
		refused := callback.IsRefusal(reply)
		r.metrics.answered(refused)
		if g.log.Enabled(context.Background(), slog.LevelDebug) {
			g.log.Debug("decided", "operationID", string(opID), "command", command, "refused", refused, "elapsed", time.Since(start))
		}
	}
	g.metrics.duration.Observe(time.Since(start).Seconds())
}

// fallback answers a decided callback with gateway.fallback.
func (g *Gateway) fallback(ctx *fasthttp.RequestCtx, r route, cause string) {
	g.metrics.fallbacks.WithLabelValues(cause).Inc()
	r.metrics.fallback.Inc()
	r.metrics.answered(g.fallbackRefuses)
	writeJSON(ctx, fasthttp.StatusOK, g.opts.FallbackBody)
}

// errNotConnected is the fallback's error when NATS is down: nothing was
// sent.
var errNotConnected = errors.New("nats not connected")

// admitted applies the access controls; a refused request is answered
// (JSON, actionCode 1) and counted as rejected.
func (g *Gateway) admitted(ctx *fasthttp.RequestCtx) bool {
	if len(g.opts.AllowNets) > 0 {
		ip, ok := netip.AddrFromSlice(ctx.RemoteIP())
		allowed := false
		for _, n := range g.opts.AllowNets {
			allowed = allowed || (ok && n.Contains(ip.Unmap()))
		}
		if !allowed {
			g.reject(ctx, fasthttp.StatusForbidden, "client address not in gateway.allow_cidrs")
			return false
		}
	}
	if g.basicAuth != nil && subtle.ConstantTimeCompare(ctx.Request.Header.Peek("Authorization"), g.basicAuth) != 1 {
		ctx.Response.Header.Set("WWW-Authenticate", `Basic realm="joingate"`)
		g.reject(ctx, fasthttp.StatusUnauthorized, "missing or wrong credentials: put user:password in the webhook URL")
		return false
	}
	return true
}

// reject answers a request that is not a callback at all.
func (g *Gateway) reject(ctx *fasthttp.RequestCtx, status int, msg string) {
	g.metrics.requests.WithLabelValues(commandNone, outcomeRejected).Inc()
	if l, ok := g.throttled.Allow(slog.LevelWarn, "rejected request", slog.String("reason", msg)); ok {
		l.Log("method", string(ctx.Method()), "path", string(ctx.Path()),
			"remote", ctx.RemoteAddr().String(), "operationID", string(ctx.Request.Header.Peek(natsconn.HeaderOperationID)))
	}
	g.fail(ctx, status, msg)
}

func (g *Gateway) fail(ctx *fasthttp.RequestCtx, status int, msg string) {
	writeJSON(ctx, status, callback.AppendFailure(nil, msg))
}

// handleError answers what fasthttp could not parse, in JSON like every
// other answer, since IMServer treats a body that is not JSON as a refusal.
func (g *Gateway) handleError(ctx *fasthttp.RequestCtx, err error) {
	// On a kept connection the previous answer's write deadline may have
	// passed: give this answer its own, or it is lost.
	ctx.SetWriteDeadline(time.Now().Add(g.opts.ReadTimeout))
	if g.unparsableTarget(ctx) {
		return
	}
	status, msg := fasthttp.StatusBadRequest, "cannot parse HTTP request"
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, msg = fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than gateway.max_body_bytes (%d)", g.opts.MaxBodyBytes)
	case errors.As(err, &small):
		status, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large"
	case errors.As(err, &netErr) && netErr.Timeout():
		status, msg = fasthttp.StatusRequestTimeout, "request not received within gateway.read_timeout"
	}
	g.metrics.requests.WithLabelValues(commandNone, outcomeRejected).Inc()
	if l, ok := g.throttled.Allow(slog.LevelWarn, "rejected request", slog.String("reason", msg)); ok {
		l.Log("remote", ctx.RemoteAddr().String(), "err", err)
	}
	g.fail(ctx, status, msg)
}

// unparsableTarget answers a POST whose headers fasthttp read but whose
// target it could not parse as a URI: one that starts with "//" and holds
// "://" reads to it as a scheme-relative URL with a host such as "::"
// ("//a:b://x/callback..."), which a webhook base can produce. It routes on
// the raw target like any callback; the body is not read, so a join
// callback cannot be decided and gets the fallback. It reports whether it
// answered.
func (g *Gateway) unparsableTarget(ctx *fasthttp.RequestCtx) bool {
	target := ctx.Request.Header.RequestURI()
	if !ctx.IsPost() || len(target) < 2 || target[0] != '/' || target[1] != '/' {
		return false
	}
	var u fasthttp.URI
	if u.Parse(ctx.Request.Header.Host(), target) == nil {
		return false // not why fasthttp failed
	}
	cmd := command(target)
	r, decided := g.routes[string(cmd)]
	switch {
	case decided:
		g.fallback(ctx, r, causeError)
	case callback.IsCommand(cmd):
		g.metrics.requests.WithLabelValues(commandOther, outcomeNoPolicy).Inc()
		writeJSONString(ctx, fasthttp.StatusOK, callback.AllowJSON)
	default:
		return false
	}
	if l, ok := g.throttled.Allow(slog.LevelWarn, "request target is not a URI fasthttp can parse; routed on its last segment", slog.Attr{}); ok {
		path, _, _ := bytes.Cut(target, []byte("?")) // a query may carry a key
		l.Log("path", string(path), "command", string(cmd), "remote", ctx.RemoteAddr().String(),
			"operationID", string(ctx.Request.Header.Peek(natsconn.HeaderOperationID)))
	}
	return true
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("application/json; charset=utf-8")
	ctx.SetBody(body)
}

func writeJSONString(ctx *fasthttp.RequestCtx, status int, body string) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("application/json; charset=utf-8")
	ctx.SetBodyString(body)
}

// isJSONObject is a cheap sanity check of a worker's reply before it is
// handed to IMServer as it is.
func isJSONObject(b []byte) bool {
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}'
}

// fasthttpLogger sends fasthttp's own messages to slog at debug level:
// everything it reports is also answered and counted by the gateway.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "source", "fasthttp")
}
