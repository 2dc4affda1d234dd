// Package benchsuite is `joingate bench suite` and `joingate bench soak`:
// on this machine, in one run, the reference server, `joingate all` with a
// real Redis, and the distributed set (nats-server, a gateway, two workers,
// Redis), each as separate processes under the same load from this
// process, then an open loop against `all` at a fraction of the
// reference's rate, and a table of the results; or a long open loop
// against `all` that watches it for leaks. Everything listens on 127.0.0.1
// only; every child is stopped when the run ends, fails or is cancelled.
package benchsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/joingate/joingate/pkg/launch"
	"github.com/joingate/joingate/pkg/loadgen"
	"github.com/joingate/joingate/pkg/promtext"
)

// Setups the suite can run, in the order it runs them.
const (
	SetupReference = "reference"
	SetupAll       = "all"
	// SetupFloor is `all` with Redis and no limits at all: every callback
	// crosses HTTP, the NATS request and reply and the worker's decoding,
	// and none calls Redis. What it costs is the floor of the product's
	// shape, which no change behind the NATS hop (the policy, the store,
	// the memory of refusals) goes below.
	SetupFloor       = "floor"
	SetupDistributed = "distributed"
	// SetupFlood is `all` with Redis under a flood: Zipf-hot applicants
	// and groups past their limits, nearly every callback refused; run
	// with the worker's memory of refusals and without it.
	SetupFlood = "flood"
)

// setupFloodNoMemory is the flood's second row: worker.refusal_memory 0.
const setupFloodNoMemory = "flood, no memory"

// Options configure a run of the suite or the soak.
type Options struct {
	// Load shapes the load of every setup; Base, MetricsURLs and Rate are
	// set per setup.
	Load loadgen.Options
	// Setups are the setups to run: SetupReference first, always (every
	// ratio is to it), then any of SetupAll and SetupDistributed.
	Setups []string
	// Joingate is the binary that runs the servers (required).
	Joingate string
	// NATSServer is the nats-server binary of the distributed set;
	// default: next to Joingate, then $PATH.
	NATSServer string
	// RedisServer is the redis-server binary.
	RedisServer string
	// RedisSocket has the servers reach Redis on a unix socket instead of
	// loopback TCP: what a host that runs both would configure.
	RedisSocket bool
	// OpenRates are the rates of the open loops against the reference and
	// `all`, in requests per second (none: no open loop).
	OpenRates []float64
	// OpenFactor: the soak's rate, without Load.Rate, as this fraction of
	// the reference's measured rate.
	OpenFactor float64
	// Profile, if set, is where a CPU profile of `all` under closed-loop
	// load, ProfileFor long, is written; the flood's goes beside it
	// ("all.pprof", "all-flood.pprof").
	Profile    string
	ProfileFor time.Duration
	// Keep keeps the working directory (configuration, logs) after the
	// run; a failed run always keeps it.
	Keep bool
	// Stdout gets the results, Stderr the progress.
	Stdout, Stderr io.Writer
}

// DefaultOptions are the suite's: every setup, the load generator's
// defaults, an open loop at half the reference's rate.
func DefaultOptions() Options {
	return Options{
		Load:        loadgen.DefaultOptions(),
		Setups:      []string{SetupReference, SetupAll, SetupFloor, SetupDistributed, SetupFlood},
		RedisServer: "redis-server",
		OpenRates:   []float64{5000, 10000},
		OpenFactor:  0.5,
		ProfileFor:  5 * time.Second,
		Stdout:      io.Discard,
		Stderr:      io.Discard,
	}
}

// ParseSetups reads a comma-separated list of setups; the reference is
// always first, whether listed or not.
func ParseSetups(list string) ([]string, error) {
	setups := []string{SetupReference}
	for s := range strings.SplitSeq(list, ",") {
		switch s = strings.TrimSpace(s); s {
		case SetupReference, "":
		case SetupAll, SetupFloor, SetupDistributed, SetupFlood:
			if !slices.Contains(setups, s) {
				setups = append(setups, s)
			}
		default:
			return nil, fmt.Errorf("unknown setup %q (want %s, %s, %s, %s, %s)", s, SetupReference, SetupAll, SetupFloor, SetupDistributed, SetupFlood)
		}
	}
	return setups, nil
}

// Validate checks what the command line can get wrong.
func (o Options) Validate() error {
	if o.OpenFactor < 0 || o.OpenFactor > 1 {
		return fmt.Errorf("--factor must be in 0..1, got %v", o.OpenFactor)
	}
	for _, r := range o.OpenRates {
		if r <= 0 {
			return fmt.Errorf("--open-rates must be positive, got %v", r)
		}
	}
	if len(o.Setups) == 0 || o.Setups[0] != SetupReference {
		return errors.New("the setups must start with the reference")
	}
	return nil
}

// benchPolicy allows nearly everything but keeps both limits, so that every
// decision still makes its Redis round trip with two keys, as the default
// policy does.
const benchPolicy = `# joingate bench suite: limits too high to refuse, so that the bench
# measures the decision path rather than refusals. pprof on: --profile
# reads /debug/pprof/profile of 'all'.
admin_pprof: true
log:
  level: warn
join_group:
  limits:
    - name: bench-applicant
      key: applicant
      limit: 1000000
      period: 1s
      burst: 1000000
    - name: bench-group
      key: group
      limit: 1000000
      period: 1s
      burst: 1000000
`

// floorPolicy is the floor's: no limits, so that no decision needs the
// store (the dynamic lists, empty, are held by the worker).
const floorPolicy = `# joingate bench suite, floor: no limits, no store call per callback.
log:
  level: warn
join_group:
  limits: []
`

// floodPolicy is the flood's: limits IMServer's users would have (5
// applications per applicant and 60 per group a minute), which refuse
// nearly every callback of FloodLoad; %d is worker.refusal_memory, %s
// the key prefix, so that the two flood rows share no key.
const floodPolicy = `# joingate bench suite, flood: nearly every callback refused.
log:
  level: warn
redis:
  key_prefix: "%s"
admin_pprof: true
worker:
  refusal_memory: %d
join_group:
  limits:
    - name: flood-applicant
      key: applicant
      limit: 5
      period: 1m
      burst: 5
    - name: flood-group
      key: group
      limit: 60
      period: 1m
      burst: 60
`

// FloodLoad shapes the flood's load from the suite's: 1,000 applicants and
// 100 groups, Zipf-hot (an attack's few hot sources and targets), and three
// times the warm-up, in which the applicants' and groups' first
// applications (their bursts, admitted) are spent: the window measures the
// flood itself.
func FloodLoad(l loadgen.Options) loadgen.Options {
	l.Applicants, l.Groups, l.Distribution = 1000, 100, loadgen.Zipf
	l.Warmup *= 3
	return l
}

// stopGrace is how long a child has to exit after SIGTERM.
const stopGrace = 5 * time.Second

// Run runs the suite. The report is returned, as far as it got, also with
// an error.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	s, err := newSuite(o)
	if err != nil {
		return nil, err
	}
	rep, err := s.run(ctx)
	s.close(err != nil)
	return rep, err
}

// suite is one run of the suite: its working directory, binaries and the
// child processes alive.
type suite struct {
	o          Options
	dir        string
	self, nats string
	redis      string
	redisProc  *launch.Process
	redisURL   string // of redisProc, for joingate
	redises    int    // started so far
	children   []*launch.Process
}

// absBinary finds bin as exec.Command would and makes its path absolute:
// the children run in the suite's working directory.
func absBinary(bin string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s not found: %w", bin, err)
	}
	return filepath.Abs(path)
}

func newSuite(o Options) (*suite, error) {
	s := &suite{o: o}
	var err error
	if s.self, err = absBinary(o.Joingate); err != nil {
		return nil, err
	}
	if len(o.Setups) > 1 {
		if s.redis, err = absBinary(o.RedisServer); err != nil {
			return nil, fmt.Errorf("%v: install it (apt-get install redis-server) or pass --redis-server", err)
		}
	}
	if slices.Contains(o.Setups, SetupDistributed) {
		s.nats = o.NATSServer
		if s.nats == "" {
			s.nats = filepath.Join(filepath.Dir(s.self), "nats-server")
			if _, err := os.Stat(s.nats); err != nil {
				s.nats = "nats-server"
			}
		}
		if s.nats, err = absBinary(s.nats); err != nil {
			return nil, fmt.Errorf("%v: build it with `go build -o bin/nats-server github.com/nats-io/nats-server/v2` and pass --nats-server", err)
		}
	}
	if s.dir, err = os.MkdirTemp("", "joingate-bench-"); err != nil {
		return nil, err
	}
	for name, content := range map[string]string{
		"bench.yaml":           benchPolicy,
		"floor.yaml":           floorPolicy,
		"flood.yaml":           fmt.Sprintf(floodPolicy, "flood:", 100_000),
		"flood-no-memory.yaml": fmt.Sprintf(floodPolicy, "flood-no-memory:", 0),
	} {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// close stops every child still running and removes the working
// directory, unless asked to keep it or the run failed.
func (s *suite) close(failed bool) {
	for i := len(s.children) - 1; i >= 0; i-- {
		s.children[i].Stop(stopGrace)
	}
	if s.o.Keep || failed {
		fmt.Fprintf(s.o.Stderr, "joingate bench suite: configuration and logs kept in %s\n", s.dir)
		return
	}
	os.RemoveAll(s.dir)
}

// startOn starts a child on n free loopback addresses with start, which
// also waits until it is ready, and again on other addresses when it
// exits at once (launch.OnFreeAddrs); the suite stops it when it closes.
func (s *suite) startOn(n int, start func(addrs []string) (*launch.Process, error)) (*launch.Process, []string, error) {
	var (
		p    *launch.Process
		used []string
	)
	err := launch.OnFreeAddrs(n, func(addrs []string) (err error) {
		p, err = start(addrs)
		used = addrs
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	s.children = append(s.children, p)
	return p, used, nil
}

func (s *suite) run(ctx context.Context) (*Report, error) {
	rep := &Report{WorkDir: s.dir, Machine: s.machine(), Load: s.describeLoad()}
	fmt.Fprintf(s.o.Stderr, "joingate bench suite: %s; working directory %s\n", rep.Load, s.dir)

	ref, err := s.runReference(ctx, rep)
	if err != nil {
		return nil, err
	}
	rep.Rows = append(rep.Rows, *ref)
	if len(s.o.Setups) > 1 {
		if _, err = s.startRedis(ctx); err != nil {
			rep.finish()
			return rep, err
		}
	}
	for _, setup := range s.o.Setups[1:] {
		var row *Row
		switch setup {
		case SetupAll, SetupFloor:
			row, err = s.runAll(ctx, s.redisURL, rep, setup)
		case SetupDistributed:
			row, err = s.runDistributed(ctx, s.redisURL)
		case SetupFlood:
			var rows []Row
			if rows, err = s.runFlood(ctx); err == nil {
				rep.Rows = append(rep.Rows, rows[:len(rows)-1]...)
				row = &rows[len(rows)-1]
			}
		}
		if err != nil {
			rep.finish()
			return rep, fmt.Errorf("%s: %w", setup, err)
		}
		rep.Rows = append(rep.Rows, *row)
	}
	rep.finish()
	return rep, nil
}

func (s *suite) describeLoad() string {
	l := s.o.Load
	conn := "keep-alive"
	if !l.KeepAlive {
		conn = "a new connection per request"
	}
	return fmt.Sprintf("closed loop, %d connections (%s), %s after %s warm-up, %d applicants and %d groups (%s)",
		l.Connections, conn, l.Duration, l.Warmup, l.Applicants, l.Groups, l.Distribution)
}

// load runs the generator against base and samples the server processes
// over the measured window.
func (s *suite) load(ctx context.Context, setup, base string, metrics []string, rate float64, procs ...*launch.Process) (*Row, error) {
	return s.loadWith(ctx, s.o.Load, setup, base, metrics, rate, procs...)
}

// loadWith is load with a load of its own.
func (s *suite) loadWith(ctx context.Context, opts loadgen.Options, setup, base string, metrics []string, rate float64, procs ...*launch.Process) (*Row, error) {
	countStoreCalls := setup == SetupFlood || setup == setupFloodNoMemory
	opts.Base, opts.MetricsURLs, opts.Rate = base, metrics, rate
	row := &Row{Setup: setup}
	for _, p := range procs {
		row.Processes = append(row.Processes, p.Name)
	}
	var redis []*launch.Process
	if s.redisProc != nil {
		redis = []*launch.Process{s.redisProc}
	}
	var cpuStart, redisStart, machineStart time.Duration
	var windowStart time.Time
	var machineCPU float64
	var storeCalls func() error // the share of decisions that called the store, in the window
	opts.OnMeasure = func(start bool) {
		if start {
			windowStart, cpuStart, redisStart, machineStart = time.Now(), procsCPU(procs), procsCPU(redis), machineBusy()
			if countStoreCalls {
				before, err := promtext.Get(http.DefaultClient, metrics[0])
				storeCalls = func() error {
					if err != nil {
						return err
					}
					after, err := promtext.Get(http.DefaultClient, metrics[0])
					if err == nil {
						row.StoreCalls, err = storeCallsPerDecision(before, after)
					}
					return err
				}
			}
			return
		}
		if storeCalls != nil {
			if err := storeCalls(); err != nil {
				fmt.Fprintf(s.o.Stderr, "store calls of %s: %v\n", setup, err)
			}
		}
		window := time.Since(windowStart).Seconds()
		row.ServerCPU = (procsCPU(procs) - cpuStart).Seconds() / window
		machineCPU = (machineBusy() - machineStart).Seconds() / window
		row.RSSMiB = procsMemory(procs, "VmRSS")
		if redis != nil {
			row.RedisCPU = (procsCPU(redis) - redisStart).Seconds() / window
		}
	}
	fmt.Fprintf(s.o.Stderr, "--- %s\n", setup)
	res, err := loadgen.Run(ctx, opts)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, p := range procs {
		if p.Exited() {
			return nil, p.Failed(errors.New("exited under load"))
		}
	}
	row.Result = res
	row.PeakRSSMiB = procsMemory(procs, "VmHWM")
	row.OtherCPU = max(machineCPU-row.ServerCPU-row.RedisCPU-res.GeneratorCPU, 0)
	loadgen.Report(s.o.Stdout, res)
	fmt.Fprintf(s.o.Stdout, "  server      %s: %.2f cores, RSS %.0f MiB (peak %.0f MiB)",
		strings.Join(row.Processes, " + "), row.ServerCPU, row.RSSMiB, row.PeakRSSMiB)
	if redis != nil {
		fmt.Fprintf(s.o.Stdout, "; redis-server %.2f cores", row.RedisCPU)
	}
	fmt.Fprintf(s.o.Stdout, "; other programs %.2f cores\n\n", row.OtherCPU)
	return row, nil
}

func (s *suite) runReference(ctx context.Context, rep *Report) (*Row, error) {
	c, addrs, err := s.startOn(1, func(addrs []string) (*launch.Process, error) {
		return launch.StartReady(ctx, "reference", s.self, []string{"bench", "reference", "--listen", addrs[0]}, nil, s.dir,
			launch.Greets(addrs[0], "", ""))
	})
	if err != nil {
		return nil, err
	}
	defer c.Stop(stopGrace)
	base := "http://" + addrs[0] + "/callbackExample"
	row, err := s.load(ctx, SetupReference, base, nil, 0, c)
	if err != nil {
		return nil, err
	}
	if slices.Contains(s.o.Setups, SetupAll) || slices.Contains(s.o.Setups, SetupFloor) {
		// The open loops `all` and the floor will get, against the
		// reference: what the generator and the machine measure at those
		// rates.
		for _, rate := range s.o.OpenRates {
			open, err := s.load(ctx, fmt.Sprintf("reference, open loop at %.0f/s", rate), base, nil, rate, c)
			if err != nil {
				return nil, err
			}
			rep.OpenLoops = append(rep.OpenLoops, OpenLoop{Rate: rate, Reference: open})
		}
	}
	return row, nil
}

// startRedis starts a Redis and returns its URL for joingate: on loopback
// TCP, or on a unix socket in the working directory (RedisSocket).
func (s *suite) startRedis(ctx context.Context) (string, error) {
	// The flood starts a Redis of its own before it stops the last one.
	s.redises++
	var args []string
	socket := filepath.Join(s.dir, fmt.Sprintf("redis-%d.sock", s.redises))
	if s.o.RedisSocket {
		args = []string{"--unixsocket", socket}
	}
	c, addrs, err := s.startOn(1, func(addrs []string) (*launch.Process, error) {
		return launch.StartRedis(ctx, "redis", s.redis, addrs[0], s.dir, args...)
	})
	if err != nil {
		return "", err
	}
	s.redisProc, s.redisURL = c, "redis://"+addrs[0]+"/0"
	if s.o.RedisSocket {
		s.redisURL = "unix://" + socket
	}
	return s.redisURL, nil
}

// startAll starts `joingate all` on redisURL with the configuration file
// config and waits until it is ready; it returns its callback and admin
// addresses.
func (s *suite) startAll(ctx context.Context, redisURL, config string) (c *launch.Process, listen, admin string, err error) {
	c, addrs, err := s.startOn(2, func(addrs []string) (*launch.Process, error) {
		args := []string{"all", "--config", filepath.Join(s.dir, config), "--listen", addrs[0], "--admin-listen", addrs[1], "--redis", redisURL}
		return launch.StartReady(ctx, "all", s.self, args,
			nil, s.dir, launch.HTTPOK("http://"+addrs[1]+"/readyz"))
	})
	if err != nil {
		return nil, "", "", err
	}
	return c, addrs[0], addrs[1], nil
}

// runAll runs `all` with Redis under the suite's load, then the open
// loops: as SetupAll with the bench's policy (its stage histograms
// scraped around each open loop, and the profile), or as SetupFloor with
// no limits.
func (s *suite) runAll(ctx context.Context, redisURL string, rep *Report, setup string) (*Row, error) {
	config := "bench.yaml"
	if setup == SetupFloor {
		config = "floor.yaml"
	}
	c, listen, admin, err := s.startAll(ctx, redisURL, config)
	if err != nil {
		return nil, err
	}
	defer c.Stop(stopGrace)
	base, metrics := "http://"+listen+"/callbackExample", []string{"http://" + admin + "/metrics"}
	row, err := s.load(ctx, setup, base, metrics, 0, c)
	if err != nil {
		return nil, err
	}
	for i := range rep.OpenLoops {
		o := &rep.OpenLoops[i]
		name := fmt.Sprintf("%s, open loop at %.0f/s", setup, o.Rate)
		if setup == SetupFloor {
			if o.Floor, err = s.load(ctx, name, base, metrics, o.Rate, c); err != nil {
				return nil, err
			}
			continue
		}
		before, err := promtext.Get(http.DefaultClient, metrics[0])
		if err != nil {
			return nil, err
		}
		if o.All, err = s.load(ctx, name, base, metrics, o.Rate, c); err != nil {
			return nil, err
		}
		after, err := promtext.Get(http.DefaultClient, metrics[0])
		if err != nil {
			return nil, err
		}
		if o.Stages, err = stages(before, after); err != nil {
			return nil, err
		}
	}
	if setup == SetupAll && s.o.Profile != "" {
		if err := s.profile(ctx, s.o.Load, base, admin, s.o.Profile); err != nil {
			return nil, err
		}
		rep.Profile = s.o.Profile
	}
	return row, nil
}

// floodProfile is where the flood's profile goes beside all's: "all.pprof"
// gives "all-flood.pprof".
func floodProfile(allProfile string) string {
	ext := filepath.Ext(allProfile)
	return strings.TrimSuffix(allProfile, ext) + "-flood" + ext
}

// profile takes a CPU profile of `all` under closed-loop load, apart
// from the measured runs so that profiling does not slow them down.
func (s *suite) profile(ctx context.Context, load loadgen.Options, base, admin, file string) error {
	opts := load
	opts.Base, opts.Warmup, opts.Duration, opts.Progress = base, 0, s.o.ProfileFor+time.Second, nil
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(lctx, opts)
		done <- err
	}()
	fmt.Fprintf(s.o.Stderr, "--- CPU profile of all for %s under closed-loop load\n", s.o.ProfileFor)
	client := &http.Client{Timeout: s.o.ProfileFor + 10*time.Second}
	resp, err := client.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, int(s.o.ProfileFor.Seconds())))
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	cancel()
	if err := <-done; err != nil {
		return err
	}
	fmt.Fprintf(s.o.Stdout, "CPU profile of all written to %s: go tool pprof -top -cum %s\n\n", file, file)
	return nil
}

// runFlood runs `all` under FloodLoad with the memory of refusals, then
// without it, back to back, each on a Redis of its own: the keys the
// earlier setups left (and their expiry) cost Redis CPU that is not the
// flood's.
func (s *suite) runFlood(ctx context.Context) ([]Row, error) {
	var rows []Row
	for _, r := range []struct{ setup, config string }{{SetupFlood, "flood.yaml"}, {setupFloodNoMemory, "flood-no-memory.yaml"}} {
		old := s.redisProc
		redisURL, err := s.startRedis(ctx)
		if err != nil {
			return nil, err
		}
		old.Stop(stopGrace)
		c, listen, admin, err := s.startAll(ctx, redisURL, r.config)
		if err != nil {
			return nil, err
		}
		metrics := []string{"http://" + admin + "/metrics"}
		row, err := s.loadWith(ctx, FloodLoad(s.o.Load), r.setup, "http://"+listen+"/callbackExample", metrics, 0, c)
		if err == nil && s.o.Profile != "" && r.setup == SetupFlood {
			err = s.profile(ctx, FloodLoad(s.o.Load), "http://"+listen+"/callbackExample", admin, floodProfile(s.o.Profile))
		}
		c.Stop(stopGrace)
		if err != nil {
			return nil, err
		}
		rows = append(rows, *row)
	}
	return rows, nil
}

func (s *suite) runDistributed(ctx context.Context, redisURL string) (*Row, error) {
	set, err := launch.StartSet(ctx, launch.SetOptions{
		Joingate: s.self, NATSServer: s.nats, Config: filepath.Join(s.dir, "bench.yaml"),
		RedisURL: redisURL, Workers: 2, LogDir: s.dir, Grace: stopGrace,
	})
	if err != nil {
		return nil, err
	}
	defer set.Stop()
	// Gateway first, then workers, then NATS: the order of the table.
	procs := append([]*launch.Process{set.Gateway}, set.Workers...)
	procs = append(procs, set.NATS)
	return s.load(ctx, SetupDistributed, "http://"+set.GatewayAddr+"/callbackExample", []string{"http://" + set.GatewayAdmin + "/metrics"}, 0, procs...)
}

// machine describes where the suite ran.
func (s *suite) machine() map[string]string {
	m := map[string]string{
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"go":         runtime.Version(),
		"gomaxprocs": strconv.Itoa(runtime.GOMAXPROCS(0)),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			switch d.Path {
			case "github.com/valyala/fasthttp", "github.com/nats-io/nats.go", "github.com/nats-io/nats-server/v2", "github.com/redis/go-redis/v9":
				m[d.Path] = d.Version
			}
		}
	}
	version := func(bin string, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	if len(s.o.Setups) > 1 {
		m["redis-server"] = version(s.redis, "--version")
		m["redis transport"] = "loopback TCP"
		if s.o.RedisSocket {
			m["redis transport"] = "unix socket"
		}
	}
	if s.nats != "" {
		m["nats-server binary"] = version(s.nats, "--version")
	}
	return m
}
