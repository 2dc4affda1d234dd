// Package app wires a joingate process: the components a command runs
// (gateway, worker, admin listener, config reload, embedded NATS), their
// connections and metrics, and the order in which they stop. main and the
// in-process tests run it the same way.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/admin"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/control"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/redisconn"
	"github.com/joingate/joingate/pkg/reload"
	"github.com/joingate/joingate/pkg/throttle"
	"github.com/joingate/joingate/worker"
)

// Options are what a process brings besides its configuration.
type Options struct {
	// Role is the command: "all", "gateway" or "worker".
	Role string
	// Version and Revision label joingate_build_info.
	Version, Revision string
	// ConfigPath is the configuration file, watched for changes; "" for
	// none. Load reads the configuration again for a reload (the file,
	// then the environment and flags, which a reload cannot change).
	ConfigPath string
	Load       func() (config.Config, error)
	// Reload asks for a reload now (main sends on SIGHUP); nil for never.
	Reload <-chan struct{}
	Logger *slog.Logger
}

// App is a wired process. New builds it, Run runs it until its context
// ends, then stops it.
type App struct {
	cfg  config.Config
	log  *slog.Logger
	life lifecycle
	gw   *gateway.Gateway
	adm  *admin.Server
}

// Run builds the process cmd describes and runs it until ctx is done.
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	a, err := New(cfg, opts)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New wires the components of opts.Role: it starts the embedded NATS
// server when there is no nats.url, connects, and binds the listeners. On
// an error it undoes what it started. Stop order: the gateway answers its
// in-flight requests while the worker still decides, then the worker
// drains, then the reload watcher and admin listener stop, then the NATS
// connections drain and the store closes.
func New(cfg config.Config, opts Options) (_ *App, err error) {
	switch opts.Role {
	case "all", "gateway", "worker":
	default:
		return nil, fmt.Errorf("app: unknown role %q", opts.Role)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &App{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			a.life.cleanup(time.Now().Add(cfg.ShutdownTimeout))
		}
	}()
	runGateway, runWorker := opts.Role != "worker", opts.Role != "gateway"
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	// The version a build was stamped with: go_build_info reads "(devel)"
	// for builds outside a module proxy, such as the Docker image's.
	promauto.With(reg).NewGauge(prometheus.GaugeOpts{
		Name:        "joingate_build_info",
		Help:        "Always 1; the labels say which joingate build runs.",
		ConstLabels: prometheus.Labels{"version": opts.Version, "revision": opts.Revision, "goversion": runtime.Version()},
	}).Set(1)
	log.Info("joingate starting", "command", opts.Role, "version", opts.Version)

	var embedded *server.Server
	if cfg.NATS.URL == "" {
		if embedded, err = natsconn.Embedded(cfg.NATS.EmbeddedListen, log); err != nil {
			return nil, err
		}
		a.life.onStop(func(time.Time) { embedded.Shutdown() })
	}
	connect := func(role string) (*nats.Conn, error) {
		sec := natsconn.Security{CredsFile: cfg.NATS.CredsFile, NkeySeedFile: cfg.NATS.NkeySeedFile,
			CAFile: cfg.NATS.TLS.CAFile, CertFile: cfg.NATS.TLS.CertFile, KeyFile: cfg.NATS.TLS.KeyFile}
		nc, err := natsconn.Connect(cfg.NATS.URL, embedded, "joingate-"+role, sec, log.With("component", role))
		if err != nil {
			return nil, err
		}
		a.life.onStop(func(deadline time.Time) {
			if err := natsconn.Drain(nc, max(time.Until(deadline), 100*time.Millisecond)); err != nil {
				log.Warn("nats drain", "err", err)
			}
		})
		return nc, nil
	}

	var checks []admin.Check
	var wk *worker.Worker
	var api http.Handler
	if runWorker {
		store, closeStore, err := newStore(cfg, log)
		if err != nil {
			return nil, err
		}
		a.life.onStop(func(time.Time) { closeStore() })
		pol, err := policy.NewSet(cfg, cfg.Redis.KeyPrefix)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		nc, err := connect("worker")
		if err != nil {
			return nil, err
		}
		opts := worker.DefaultOptions()
		opts.Conn, opts.Store, opts.Policy = nc, store, pol
		opts.Subject, opts.Queue = cfg.NATS.Subject, cfg.NATS.Queue
		opts.Concurrency = cfg.Worker.Concurrency
		opts.DecisionTimeout = cfg.Gateway.DecisionTimeout
		opts.DrainTimeout = cfg.ShutdownTimeout
		opts.BreakerFailures, opts.BreakerCooldown = cfg.Worker.BreakerFailures, cfg.Worker.BreakerCooldown
		opts.StoreBudget, opts.RejoinAfter = cfg.Redis.Timeout, cfg.Worker.BreakerCooldown
		switch {
		case cfg.Redis.URL == "":
			// In memory, the store itself costs no more than a memory of it.
		case cfg.Redis.Mode == redisconn.Cluster && cfg.Worker.RefusalMemory > 0:
			// A query split across hash slots refunds what one slot
			// consumed when another refuses: a refusal seen meanwhile
			// would be remembered past the refund.
			log.Info("worker.refusal_memory is off on Redis Cluster: every decision asks Redis")
		default:
			opts.RefusalMemory = cfg.Worker.RefusalMemory
		}
		opts.Logger, opts.Registerer = log, reg
		if wk, err = worker.New(opts); err != nil {
			return nil, err
		}
		checks = append(checks, admin.Check{Name: "worker", Check: wk.Ready})
		api = control.Handler(invalidating{store, wk.Invalidate}, wk.Policy, log.With("component", "control"))
	}
	if runGateway {
		nc, err := connect("gateway")
		if err != nil {
			return nil, err
		}
		opts := gateway.DefaultOptions()
		opts.Conn, opts.Listen = nc, cfg.Listen
		opts.Subject = cfg.NATS.Subject
		opts.DecisionTimeout = cfg.Gateway.DecisionTimeout
		opts.FallbackBody = cfg.Gateway.FallbackBody()
		opts.MaxBodyBytes = cfg.Gateway.MaxBodyBytes
		opts.ReadTimeout, opts.IdleTimeout = cfg.Gateway.ReadTimeout, cfg.Gateway.IdleTimeout
		opts.MaxConns = cfg.Gateway.MaxConns
		opts.ShutdownTimeout = cfg.ShutdownTimeout
		opts.BasicUser, opts.BasicPassword = cfg.Gateway.BasicAuth.Username, cfg.Gateway.BasicAuth.Password
		opts.AllowNets = cfg.Gateway.AllowCIDRs
		opts.TLSCertFile, opts.TLSKeyFile = cfg.Gateway.TLS.CertFile, cfg.Gateway.TLS.KeyFile
		opts.Logger, opts.Registerer = log, reg
		if a.gw, err = gateway.New(opts); err != nil {
			return nil, err
		}
		a.life.onStop(func(time.Time) { a.gw.Close() })
		checks = append(checks, admin.Check{Name: "gateway", Check: a.gw.Ready})
		a.life.add("gateway", a.gw.Run)
	}
	var watcher *reload.Watcher
	if wk != nil {
		a.life.add("worker", wk.Run)
		if watcher, err = newWatcher(cfg, opts.ConfigPath, opts.Load, wk, reg, log); err != nil {
			return nil, err
		}
	}
	a.life.add("reload", func(ctx context.Context) error { return runReload(ctx, watcher, opts, log) })

	if cfg.AdminListen != "" {
		if a.adm, err = admin.New(cfg.AdminListen, reg, checks, log.With("component", "admin")); err != nil {
			return nil, err
		}
		if api != nil {
			a.adm.HandleAPI(api, cfg.AdminToken)
		} else {
			a.adm.HandleNoAPI("this is a joingate gateway: the admin API (joingate ctl) is on the admin listener of a worker or of joingate all")
		}
		if cfg.AdminPprof {
			a.adm.HandlePprof()
		}
		log.Info("admin listening", "addr", a.adm.Addr(), "api", api != nil && cfg.AdminToken != "", "pprof", cfg.AdminPprof)
		a.life.add("admin", a.adm.Run)
	}
	return a, nil
}

// GatewayAddr is the callback listener's address, "" without a gateway.
func (a *App) GatewayAddr() string {
	if a.gw == nil {
		return ""
	}
	return a.gw.Addr()
}

// AdminAddr is the admin listener's address, "" without one.
func (a *App) AdminAddr() string {
	if a.adm == nil {
		return ""
	}
	return a.adm.Addr()
}

// Run runs the components until ctx is done or one fails, then stops
// them in order within shutdown_timeout.
func (a *App) Run(ctx context.Context) error {
	return a.life.run(ctx, func(failed bool) {
		if failed {
			a.log.Error("a component failed, shutting down")
		} else {
			a.log.Info("signal received, shutting down")
		}
		if a.adm != nil {
			a.adm.SetNotReady()
		}
		if a.cfg.ShutdownDelay > 0 {
			// Let load balancers see /readyz fail before the listener closes.
			a.log.Info("not ready; waiting before closing the listener", "shutdown_delay", a.cfg.ShutdownDelay)
			time.Sleep(a.cfg.ShutdownDelay)
		}
	}, a.cfg.ShutdownTimeout)
}

// runReload runs the watcher (nil without a worker or a config file) and
// reloads when asked, until ctx is done.
func runReload(ctx context.Context, watcher *reload.Watcher, opts Options, log *slog.Logger) error {
	errc := make(chan error, 1)
	if watcher != nil {
		go func() { errc <- watcher.Run(ctx) }()
	}
	for {
		select {
		case <-ctx.Done():
			if watcher != nil {
				return <-errc
			}
			return nil
		case err := <-errc:
			return err
		case <-opts.Reload:
		}
		if watcher == nil {
			log.Info("SIGHUP: nothing to reload (no worker, or no --config file)")
			continue
		}
		watcher.Trigger("SIGHUP")
	}
}

// newWatcher returns a watcher that reloads the policy of wk when the config
// file changes or on SIGHUP, or nil when there is no file to watch. Only the
// policies (join_group, invite_to_group, member_join,
// worker.on_store_error, worker.store_error_refusal)
// changes without a restart; other changed keys are reported and ignored.
func newWatcher(running config.Config, path string, load func() (config.Config, error), wk *worker.Worker, reg prometheus.Registerer, log *slog.Logger) (*reload.Watcher, error) {
	if path == "" {
		return nil, nil
	}
	applied := running // the configuration whose policy is in force
	apply := func() ([]string, error) {
		cfg, err := load()
		if err != nil {
			return nil, err
		}
		pol, err := policy.NewSet(cfg, running.Redis.KeyPrefix)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		var later []string
		for _, k := range config.Diff(running, cfg) {
			if !config.Reloadable(k) {
				later = append(later, k)
			}
		}
		if len(later) > 0 {
			log.Warn("changed keys take effect only after a restart; the new policy applies now", "keys", later)
		}
		changed := slices.DeleteFunc(config.Diff(applied, cfg), func(k string) bool { return !config.Reloadable(k) })
		wk.SetPolicy(pol)
		if err := wk.Invalidate(context.Background()); err != nil { // bounded by its flush timeout
			// The new policy applies here all the same; the other workers
			// reload their own.
			log.Warn("the other workers' memory of refusals was not told of the new policy", "err", err)
		}
		applied = cfg
		log.Info("policy in force", "limits", len(cfg.JoinGroup.Limits), "dry_run", cfg.JoinGroup.DryRun,
			"invite_limits", len(cfg.InviteToGroup.Limits), "member_join_limits", len(cfg.MemberJoin.Limits), "probation", cfg.MemberJoin.Probation.MuteFor)
		return changed, nil
	}
	w, err := reload.New(reload.Options{Path: path, Reload: apply, Logger: log, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("config reload: %w", err)
	}
	return w, nil
}

// invalidating is the store as the admin API changes it: each change is
// followed by a broadcast that clears every worker's memory of refusals.
type invalidating struct {
	store
	invalidate func(context.Context) error
}

func (s invalidating) Reset(ctx context.Context, keys ...string) error {
	return s.then(ctx, s.store.Reset(ctx, keys...))
}

func (s invalidating) ListAdd(ctx context.Context, index, member, flag string) error {
	return s.then(ctx, s.store.ListAdd(ctx, index, member, flag))
}

func (s invalidating) ListRemove(ctx context.Context, index, member, flag string) error {
	return s.then(ctx, s.store.ListRemove(ctx, index, member, flag))
}

// then broadcasts after a change, also one that failed: it may have
// changed part of what it meant to.
func (s invalidating) then(ctx context.Context, err error) error {
	if berr := s.invalidate(ctx); berr != nil {
		return errors.Join(err, fmt.Errorf("the other workers may refuse from memory what changed in the store, for up to a minute (retry once NATS is back): %w", berr))
	}
	return err
}

// store is what the worker decides with and the admin API manages.
type store interface {
	worker.Store
	control.Store
}

// newStore returns the limiter store: Redis when configured, else memory
// (only `all` may run without Redis; checkRole enforces it).
func newStore(cfg config.Config, log *slog.Logger) (store, func(), error) {
	if cfg.Redis.URL == "" {
		log.Info("limits kept in process memory (no redis.url)")
		return ratelimit.NewMemory(), func() {}, nil
	}
	// go-redis logs through a package-level logger; main owns it.
	redis.SetLogger(redisLogger{throttle.New(log.With("component", "redis"), time.Second)})
	client, err := redisconn.NewUniversal(cfg.Redis.URL, cfg.Redis.Mode, cfg.Redis.RedisTLS(), cfg.Redis.Timeout, min(cfg.Worker.Concurrency, 512))
	if err != nil {
		return nil, nil, err
	}
	log.Info("limits kept in redis", "mode", cfg.Redis.Mode, "addrs", redisconn.Addrs(cfg.Redis.URL, cfg.Redis.Mode))
	r := ratelimit.NewRedis(client)
	checkClock(r.ClockOffset, cfg.Redis.Timeout, log)
	if !cfg.Worker.BatchRedis {
		return r, func() { client.Close() }, nil
	}
	// The decisions a worker makes at once go to Redis together (on Redis
	// Cluster the Batcher sends each alone). Its goroutines start with the
	// first calls made at once; closing the store ends them, after the
	// worker has stopped.
	b := ratelimit.NewBatcher(r, ratelimit.DefaultMaxBatch, ratelimit.DefaultPipelines)
	return b, func() { b.Close(); client.Close() }, nil
}

// maxClockOffset is the difference between Redis's clock and this host's
// that start-up warns about.
const maxClockOffset = 50 * time.Millisecond

// checkClock warns when Redis's clock (offset: Redis.ClockOffset) is far
// from this host's: decisions carry deadlines that the Redis script
// compares with its own clock. Redis may not be up yet: then nothing is
// said.
func checkClock(clockOffset func(context.Context) (time.Duration, error), timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	offset, err := clockOffset(ctx)
	if err != nil || offset.Abs() <= maxClockOffset {
		return
	}
	log.Warn("redis clock differs from this host's: synchronise both (NTP); "+
		"ahead, decisions fail as reaching Redis after their deadline; behind, late decisions may consume quota",
		"offset", offset.Round(time.Millisecond))
}

// redisLogger sends go-redis's own messages (dial failures, pool trouble)
// to slog, throttled: during an outage it reports every attempt.
type redisLogger struct{ throttled *throttle.Throttle }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if line, ok := l.throttled.Allow(slog.LevelWarn, "redis client", slog.Attr{}); ok {
		line.Log("said", fmt.Sprintf(format, v...))
	}
}
