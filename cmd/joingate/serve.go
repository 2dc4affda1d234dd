package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"sync"
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

// serve wires and runs the components of cmd ("all", "gateway" or
// "worker") until ctx is done, then stops them in order: the gateway
// answers its in-flight requests while the worker still decides, then the
// worker drains, then NATS connections drain.
func serve(ctx context.Context, cmd string, cfg config.Config, rl reloader, log *slog.Logger) error {
	runGateway, runWorker := cmd != "worker", cmd != "gateway"
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
		ConstLabels: prometheus.Labels{"version": version, "revision": revisionID(), "goversion": runtime.Version()},
	}).Set(1)
	log.Info("joingate starting", "command", cmd, "version", version)

	var embedded *server.Server
	if cfg.NATS.URL == "" {
		var err error
		if embedded, err = natsconn.Embedded(cfg.NATS.EmbeddedListen, log); err != nil {
			return err
		}
		defer embedded.Shutdown()
	}
	var conns []*nats.Conn
	// stopBy is the shutdown deadline, set when shutdown starts.
	stopBy := time.Now().Add(cfg.ShutdownTimeout)
	defer func() {
		for _, nc := range conns {
			if err := natsconn.Drain(nc, max(time.Until(stopBy), 100*time.Millisecond)); err != nil {
				log.Warn("nats drain", "err", err)
			}
		}
	}()
	connect := func(role string) (*nats.Conn, error) {
		sec := natsconn.Security{CredsFile: cfg.NATS.CredsFile, NkeySeedFile: cfg.NATS.NkeySeedFile,
			CAFile: cfg.NATS.TLS.CAFile, CertFile: cfg.NATS.TLS.CertFile, KeyFile: cfg.NATS.TLS.KeyFile}
		nc, err := natsconn.Connect(cfg.NATS.URL, embedded, "joingate-"+role, sec, log.With("component", role))
		if err == nil {
			conns = append(conns, nc)
		}
		return nc, err
	}

	var checks []admin.Check
	var gw *gateway.Gateway
	var wk *worker.Worker
	var api http.Handler
	if runWorker {
		store, closeStore, err := newStore(cfg, log)
		if err != nil {
			return err
		}
		defer closeStore()
		pol, err := policy.New(cfg.JoinGroup, cfg.Worker, cfg.Redis.KeyPrefix)
		if err != nil {
			return fmt.Errorf("join_group policy: %w", err)
		}
		nc, err := connect("worker")
		if err != nil {
			return err
		}
		opts := worker.DefaultOptions()
		opts.Conn, opts.Store, opts.Policy = nc, store, pol
		opts.Subject, opts.Queue = cfg.NATS.Subject, cfg.NATS.Queue
		opts.Concurrency = cfg.Worker.Concurrency
		opts.DecisionTimeout = cfg.Gateway.DecisionTimeout
		opts.DrainTimeout = cfg.ShutdownTimeout
		opts.BreakerFailures, opts.BreakerCooldown = cfg.Worker.BreakerFailures, cfg.Worker.BreakerCooldown
		opts.StoreBudget, opts.RejoinAfter = cfg.Redis.Timeout, cfg.Worker.BreakerCooldown
		opts.Logger, opts.Registerer = log, reg
		if wk, err = worker.New(opts); err != nil {
			return err
		}
		checks = append(checks, admin.Check{Name: "worker", Check: wk.Ready})
		api = control.Handler(store, wk.Policy, log.With("component", "control"))
	}
	if runGateway {
		nc, err := connect("gateway")
		if err != nil {
			return err
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
		if gw, err = gateway.New(opts); err != nil {
			return err
		}
		checks = append(checks, admin.Check{Name: "gateway", Check: gw.Ready})
	}

	var watcher *reload.Watcher
	if wk != nil {
		var err error
		if watcher, err = newWatcher(cfg, rl, wk, reg, log); err != nil {
			return err
		}
	}

	var adm *admin.Server
	if cfg.AdminListen != "" {
		var err error
		if adm, err = admin.New(cfg.AdminListen, reg, checks, log.With("component", "admin")); err != nil {
			return err
		}
		if api != nil {
			adm.HandleAPI(api, cfg.AdminToken)
		} else {
			adm.HandleNoAPI("this is a joingate gateway: the admin API (joingate ctl) is on the admin listener of a worker or of joingate all")
		}
		if cfg.AdminPprof {
			adm.HandlePprof()
		}
		log.Info("admin listening", "addr", adm.Addr(), "api", api != nil && cfg.AdminToken != "", "pprof", cfg.AdminPprof)
	}

	// Each component gets its own context so that they stop in order.
	var (
		mu     sync.Mutex
		errs   []error
		failed = make(chan struct{}, 3)
	)
	launch := func(name string, ctx context.Context, run func(context.Context) error) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				failed <- struct{}{}
			}
		}()
		return done
	}
	idle := func(context.Context) error { return nil }
	adminRun, workerRun, gatewayRun := idle, idle, idle
	if adm != nil {
		adminRun = adm.Run
	}
	if wk != nil {
		workerRun = wk.Run
	}
	if gw != nil {
		gatewayRun = gw.Run
	}
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	workerCtx, stopWorker := context.WithCancel(context.Background())
	gatewayCtx, stopGateway := context.WithCancel(context.Background())
	defer stopAdmin()
	defer stopWorker()
	defer stopGateway()
	adminDone := launch("admin", adminCtx, adminRun)
	if watcher != nil {
		launch("reload", adminCtx, watcher.Run)
	}
	go func() {
		for {
			select {
			case <-adminCtx.Done():
				return
			case <-rl.hup:
			}
			if watcher == nil {
				log.Info("SIGHUP: nothing to reload (no worker, or no --config file)")
				continue
			}
			log.Info("SIGHUP: reloading the policy", "config", rl.path)
			watcher.Trigger()
		}
	}()
	workerDone := launch("worker", workerCtx, workerRun)
	gatewayDone := launch("gateway", gatewayCtx, gatewayRun)

	select {
	case <-ctx.Done():
		log.Info("signal received, shutting down")
	case <-failed:
		log.Error("a component failed, shutting down")
	}
	if adm != nil {
		adm.SetNotReady()
	}
	if cfg.ShutdownDelay > 0 {
		// Let load balancers see /readyz fail before the listener closes.
		log.Info("not ready; waiting before closing the listener", "shutdown_delay", cfg.ShutdownDelay)
		time.Sleep(cfg.ShutdownDelay)
	}
	// One deadline for every phase: what is not done by then is abandoned.
	stopBy = time.Now().Add(cfg.ShutdownTimeout)
	abandon := time.NewTimer(cfg.ShutdownTimeout)
	defer abandon.Stop()
	for _, phase := range []struct {
		name string
		stop func()
		done <-chan struct{}
	}{{"gateway", stopGateway, gatewayDone}, {"worker", stopWorker, workerDone}, {"admin", stopAdmin, adminDone}} {
		phase.stop()
		select {
		case <-phase.done:
		case <-abandon.C:
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s did not stop within shutdown_timeout (%s)", phase.name, cfg.ShutdownTimeout))
			mu.Unlock()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return errors.Join(errs...)
}

// reloader is how a running process reloads its policy: the config file to
// watch, how to load the configuration again, and main's SIGHUP channel.
type reloader struct {
	path string
	load func() (config.Config, error)
	hup  <-chan os.Signal
}

// newWatcher returns a watcher that reloads the policy of wk when the config
// file changes or on SIGHUP, or nil when there is no file to watch. Only the
// policy (join_group, worker.on_store_error, worker.store_error_refusal)
// changes without a restart; other changed keys are reported and ignored.
func newWatcher(running config.Config, rl reloader, wk *worker.Worker, reg prometheus.Registerer, log *slog.Logger) (*reload.Watcher, error) {
	if rl.path == "" {
		return nil, nil
	}
	apply := func() error {
		cfg, err := rl.load()
		if err != nil {
			return err
		}
		pol, err := policy.New(cfg.JoinGroup, cfg.Worker, running.Redis.KeyPrefix)
		if err != nil {
			return fmt.Errorf("join_group policy: %w", err)
		}
		if changed := restartKeys(running, cfg); len(changed) > 0 {
			log.Warn("changed keys take effect only after a restart; the new policy applies now", "keys", changed)
		}
		wk.SetPolicy(pol)
		log.Info("policy in force", "limits", len(cfg.JoinGroup.Limits), "dry_run", cfg.JoinGroup.DryRun)
		return nil
	}
	w, err := reload.New(reload.Options{Path: rl.path, Reload: apply, Logger: log, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("config reload: %w", err)
	}
	return w, nil
}

// restartKeys names the top-level sections other than the policy that
// differ between two configurations.
func restartKeys(old, cur config.Config) []string {
	var changed []string
	old.JoinGroup, cur.JoinGroup = config.JoinGroup{}, config.JoinGroup{}
	old.Worker.OnStoreError, cur.Worker.OnStoreError = "", ""
	old.Worker.StoreErrorRefusal, cur.Worker.StoreErrorRefusal = config.Refusal{}, config.Refusal{}
	ov, cv := reflect.ValueOf(old), reflect.ValueOf(cur)
	for i := range ov.NumField() {
		if !reflect.DeepEqual(ov.Field(i).Interface(), cv.Field(i).Interface()) {
			changed = append(changed, ov.Type().Field(i).Tag.Get("yaml"))
		}
	}
	return changed
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
	redis.SetLogger(redisLogger{log: log.With("component", "redis"), throttle: throttle.New(time.Second)})
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
type redisLogger struct {
	log      *slog.Logger
	throttle *throttle.Throttle
}

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ok, n := l.throttle.Allow(); ok {
		l.log.Warn(fmt.Sprintf(format, v...), "suppressed", n)
	}
}
