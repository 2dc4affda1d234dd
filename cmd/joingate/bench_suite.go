package main

// `joingate bench suite` is what `make bench` runs after the Go benchmarks:
// on this machine, in one invocation, the reference server, `joingate all`
// with a real Redis, and the distributed set (nats-server, a gateway, two
// workers, Redis), each as separate processes under the same load from this
// process, then an open loop against `all` at a fraction of the reference's
// rate, and a table of the results. Everything listens on 127.0.0.1 only;
// every child is killed when the suite ends, fails or is interrupted.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/joingate/joingate/pkg/loadgen"
)

// Setups the suite can run, in the order it runs them.
const (
	setupReference   = "reference"
	setupAll         = "all"
	setupDistributed = "distributed"
)

type suiteOptions struct {
	load        loadgen.Options
	setups      []string
	joingate    string // binary to run the servers with; default: this executable
	natsServer  string
	redisServer string
	openFactor  float64
	profile     string
	profileFor  time.Duration
	jsonOut     string
	keep        bool
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

func runSuite(args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("joingate bench suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := suiteOptions{load: loadgen.DefaultOptions()}
	loadFlags(fs, &o.load, false)
	setups := fs.String("setups", strings.Join([]string{setupReference, setupAll, setupDistributed}, ","), "setups to run, comma-separated (the reference always runs: every ratio is to it)")
	fs.StringVar(&o.joingate, "joingate", "", "joingate binary that runs the servers (default: this one)")
	fs.StringVar(&o.natsServer, "nats-server", "", "nats-server binary for the distributed set (default: next to the joingate binary, then $PATH)")
	fs.StringVar(&o.redisServer, "redis-server", "redis-server", "redis-server binary")
	fs.Float64Var(&o.openFactor, "open-factor", 0.5, "the open-loop run of `all` sends this fraction of the reference's measured rate; 0 skips it")
	fs.StringVar(&o.profile, "profile", "", "also take a CPU profile of `all` under closed-loop load and write it to `FILE`")
	fs.DurationVar(&o.profileFor, "profile-duration", 5*time.Second, "length of the --profile")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results to `FILE` as JSON")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (configuration, logs) after the run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "joingate bench suite: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	o.setups = []string{setupReference}
	for s := range strings.SplitSeq(*setups, ",") {
		switch s = strings.TrimSpace(s); s {
		case setupReference, "":
		case setupAll, setupDistributed:
			if !slices.Contains(o.setups, s) {
				o.setups = append(o.setups, s)
			}
		default:
			fmt.Fprintf(stderr, "joingate bench suite: unknown setup %q (want %s, %s, %s)\n", s, setupReference, setupAll, setupDistributed)
			return exitUsage
		}
	}
	if o.openFactor < 0 || o.openFactor > 1 {
		fmt.Fprintf(stderr, "joingate bench suite: --open-factor must be in 0..1, got %v\n", o.openFactor)
		return exitUsage
	}
	o.load.Base = "http://127.0.0.1:1/callbackExample" // set per setup
	o.load.Progress = stderr

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := newSuite(o, environ, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "joingate bench suite: %v\n", err)
		return 1
	}
	rep, err := s.run(ctx)
	s.close(err != nil)
	if rep != nil {
		rep.print(stdout)
		if o.jsonOut != "" {
			if werr := writeJSONFile(o.jsonOut, rep); werr != nil {
				fmt.Fprintf(stderr, "joingate bench suite: %v\n", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "joingate bench suite: %v\n", err)
		return 1
	}
	return 0
}

// suite is one run of the suite: its working directory, binaries and the
// child processes alive.
type suite struct {
	o              suiteOptions
	stdout, stderr io.Writer
	dir            string
	env            []string
	self, nats     string
	redis          string
	redisProc      *child
	children       []*child
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

func newSuite(o suiteOptions, environ []string, stdout, stderr io.Writer) (*suite, error) {
	s := &suite{o: o, stdout: stdout, stderr: stderr}
	var err error
	if s.self = o.joingate; s.self == "" {
		if s.self, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("cannot find this executable: %w", err)
		}
	}
	if s.self, err = absBinary(s.self); err != nil {
		return nil, err
	}
	if slices.Contains(o.setups, setupAll) || slices.Contains(o.setups, setupDistributed) {
		if s.redis, err = absBinary(o.redisServer); err != nil {
			return nil, fmt.Errorf("%v: install it (apt-get install redis-server) or pass --redis-server", err)
		}
	}
	if slices.Contains(o.setups, setupDistributed) {
		s.nats = o.natsServer
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
	// The children get this environment without JOINGATE_* variables: the
	// suite's configuration is the file and flags it passes.
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "JOINGATE_") {
			s.env = append(s.env, kv)
		}
	}
	if s.dir, err = os.MkdirTemp("", "joingate-bench-"); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.dir, "bench.yaml"), []byte(benchPolicy), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// close stops every child still running and removes the working
// directory, unless asked to keep it or the run failed.
func (s *suite) close(failed bool) {
	for i := len(s.children) - 1; i >= 0; i-- {
		s.children[i].stop()
	}
	if s.o.keep || failed {
		fmt.Fprintf(s.stderr, "joingate bench suite: configuration and logs kept in %s\n", s.dir)
		return
	}
	os.RemoveAll(s.dir)
}

// child is a server process the suite started.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (s *suite) start(name, bin string, args ...string) (*child, error) {
	c := &child{name: name, log: filepath.Join(s.dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = f, f
	c.cmd.Env = s.env
	c.cmd.Dir = s.dir
	// Its own process group, so that a Ctrl-C reaches the suite, which
	// stops the children in order; and killed if the suite dies.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.children = append(s.children, c)
	go func() {
		c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 5s.
func (c *child) stop() {
	if c.exited() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// failure describes a child that did not come up, with the end of its log.
func (c *child) failure(err error) error {
	b, _ := os.ReadFile(c.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	state := "running"
	if c.exited() {
		state = c.cmd.ProcessState.String()
	}
	return fmt.Errorf("%s (%s): %w\n  %s", c.name, state, err, strings.Join(lines, "\n  "))
}

// waitFor polls ready every 20ms for up to 20s, failing early if c exits.
func waitFor(ctx context.Context, c *child, ready func() error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if c.exited() {
			return c.failure(errors.New("exited before it was ready"))
		}
		if time.Now().After(deadline) {
			return c.failure(fmt.Errorf("not ready within 20s: %w", err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// greets reports whether a server on addr accepts a connection and, if
// greeting is not empty, answers (after sending send) a line starting with
// it.
func greets(addr, send, greeting string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if greeting == "" {
			return nil
		}
		c.SetDeadline(time.Now().Add(time.Second))
		if send != "" {
			if _, err := io.WriteString(c, send); err != nil {
				return err
			}
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, greeting) {
			return fmt.Errorf("%s answered %q (%v), want %q", addr, line, err, greeting)
		}
		return nil
	}
}

// readyz reports whether a joingate admin listener says ready.
func readyz(adminAddr string) func() error {
	client := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := client.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func freeAddrs(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		var err error
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// Row is one setup under load.
type Row struct {
	Setup  string          `json:"setup"`
	Result *loadgen.Result `json:"result"`
	// Ratio is the throughput over the reference's.
	Ratio float64 `json:"ratio_to_reference"`
	// Processes are the server processes measured (Redis excluded: every
	// setup but the reference uses the same one).
	Processes []string `json:"processes"`
	// RSSMiB is their resident memory at the end of the measured window,
	// PeakRSSMiB their high-water mark since they started (VmHWM), summed.
	RSSMiB     float64 `json:"rss_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// ServerCPU is their CPU time over the window, in cores; RedisCPU
	// that of Redis.
	ServerCPU float64 `json:"server_cpu_cores"`
	RedisCPU  float64 `json:"redis_cpu_cores,omitempty"`
	// OtherCPU is what the rest of the machine used over the window, in
	// cores: other programs competing with the bench (it should be ~0).
	OtherCPU float64 `json:"other_cpu_cores"`
}

// Target is one of the suite's goals (a ratio to the reference, memory) and
// whether this run met it.
type Target struct {
	Name string `json:"name"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// SuiteReport is what the suite prints and writes as JSON.
type SuiteReport struct {
	// WorkDir held the configuration and the servers' logs.
	WorkDir  string            `json:"work_dir"`
	Machine  map[string]string `json:"machine"`
	Load     string            `json:"load"`
	Rows     []Row             `json:"rows"`
	OpenLoop *Row              `json:"open_loop,omitempty"`
	// OpenLoopReference is the same open loop against the reference
	// server: the floor that the generator and the machine allow.
	OpenLoopReference *Row     `json:"open_loop_reference,omitempty"`
	Profile           string   `json:"profile,omitempty"`
	Targets           []Target `json:"targets"`
}

func (s *suite) run(ctx context.Context) (*SuiteReport, error) {
	rep := &SuiteReport{WorkDir: s.dir, Machine: s.machine(), Load: s.describeLoad()}
	fmt.Fprintf(s.stderr, "joingate bench suite: %s; working directory %s\n", rep.Load, s.dir)

	ref, err := s.runReference(ctx, rep)
	if err != nil {
		return nil, err
	}
	rep.Rows = append(rep.Rows, *ref)
	var redisAddr string
	if len(s.o.setups) > 1 {
		if redisAddr, err = s.startRedis(ctx); err != nil {
			rep.finish()
			return rep, err
		}
	}
	for _, setup := range s.o.setups[1:] {
		var row *Row
		switch setup {
		case setupAll:
			row, err = s.runAll(ctx, redisAddr, ref.Result.Throughput, rep)
		case setupDistributed:
			row, err = s.runDistributed(ctx, redisAddr)
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

// finish computes the ratios to the reference (the first row) and checks
// the targets.
func (rep *SuiteReport) finish() {
	ref := rep.Rows[0]
	for i := range rep.Rows {
		if ref.Result.Throughput > 0 {
			rep.Rows[i].Ratio = rep.Rows[i].Result.Throughput / ref.Result.Throughput
		}
	}
	if rep.OpenLoop != nil && ref.Result.Throughput > 0 {
		rep.OpenLoop.Ratio = rep.OpenLoop.Result.Throughput / ref.Result.Throughput
	}
	rep.Targets = targets(rep)
}

func (s *suite) describeLoad() string {
	l := s.o.load
	conn := "keep-alive"
	if !l.KeepAlive {
		conn = "a new connection per request"
	}
	return fmt.Sprintf("closed loop, %d connections (%s), %s after %s warm-up, %d applicants and %d groups (%s)",
		l.Connections, conn, l.Duration, l.Warmup, l.Applicants, l.Groups, l.Distribution)
}

// load runs the generator against base and samples the server processes
// over the measured window.
func (s *suite) load(ctx context.Context, setup, base string, metrics []string, rate float64, procs ...*child) (*Row, error) {
	opts := s.o.load
	opts.Base, opts.MetricsURLs, opts.Rate = base, metrics, rate
	row := &Row{Setup: setup}
	for _, c := range procs {
		row.Processes = append(row.Processes, c.name)
	}
	var redis []*child
	if s.redisProc != nil {
		redis = []*child{s.redisProc}
	}
	var cpuStart, redisStart, machineStart time.Duration
	var windowStart time.Time
	var machineCPU float64
	opts.OnMeasure = func(start bool) {
		if start {
			windowStart, cpuStart, redisStart, machineStart = time.Now(), procsCPU(procs), procsCPU(redis), machineBusy()
			return
		}
		window := time.Since(windowStart).Seconds()
		row.ServerCPU = (procsCPU(procs) - cpuStart).Seconds() / window
		machineCPU = (machineBusy() - machineStart).Seconds() / window
		row.RSSMiB = procsMemory(procs, "VmRSS")
		if redis != nil {
			row.RedisCPU = (procsCPU(redis) - redisStart).Seconds() / window
		}
	}
	fmt.Fprintf(s.stderr, "--- %s\n", setup)
	res, err := loadgen.Run(ctx, opts)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, c := range procs {
		if c.exited() {
			return nil, c.failure(errors.New("exited under load"))
		}
	}
	row.Result = res
	row.PeakRSSMiB = procsMemory(procs, "VmHWM")
	row.OtherCPU = max(machineCPU-row.ServerCPU-row.RedisCPU-res.GeneratorCPU, 0)
	loadgen.Report(s.stdout, res)
	fmt.Fprintf(s.stdout, "  server      %s: %.2f cores, RSS %.0f MiB (peak %.0f MiB)",
		strings.Join(row.Processes, " + "), row.ServerCPU, row.RSSMiB, row.PeakRSSMiB)
	if redis != nil {
		fmt.Fprintf(s.stdout, "; redis-server %.2f cores", row.RedisCPU)
	}
	fmt.Fprintf(s.stdout, "; other programs %.2f cores\n\n", row.OtherCPU)
	return row, nil
}

func (s *suite) runReference(ctx context.Context, rep *SuiteReport) (*Row, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c, err := s.start("reference", s.self, "bench", "reference", "--listen", addr)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	if err := waitFor(ctx, c, greets(addr, "", "")); err != nil {
		return nil, err
	}
	base := "http://" + addr + "/callbackExample"
	row, err := s.load(ctx, setupReference, base, nil, 0, c)
	if err != nil {
		return nil, err
	}
	if s.o.openFactor > 0 && slices.Contains(s.o.setups, setupAll) && row.Result.Throughput > 0 {
		// The open loop `all` will get, against the reference: what the
		// generator and the machine can measure at that rate.
		open, err := s.load(ctx, fmt.Sprintf("reference, open loop at %.2g of the reference", s.o.openFactor), base, nil, row.Result.Throughput*s.o.openFactor, c)
		if err != nil {
			return nil, err
		}
		rep.OpenLoopReference = open
	}
	return row, nil
}

func (s *suite) startRedis(ctx context.Context) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	c, err := s.start("redis", s.redis,
		"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--loglevel", "warning")
	if err != nil {
		return "", err
	}
	if err := waitFor(ctx, c, greets(addr, "PING\r\n", "+PONG")); err != nil {
		return "", err
	}
	s.redisProc = c
	return addr, nil
}

// joingateArgs are the arguments of a joingate server process.
func (s *suite) joingateArgs(cmd string, extra ...string) []string {
	return append([]string{cmd, "--config", filepath.Join(s.dir, "bench.yaml")}, extra...)
}

func (s *suite) runAll(ctx context.Context, redisAddr string, refRate float64, rep *SuiteReport) (*Row, error) {
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	listen, admin := addrs[0], addrs[1]
	c, err := s.start("all", s.self, s.joingateArgs("all", "--listen", listen, "--admin-listen", admin, "--redis", "redis://"+redisAddr+"/0")...)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	if err := waitFor(ctx, c, readyz(admin)); err != nil {
		return nil, err
	}
	base, metrics := "http://"+listen+"/callbackExample", []string{"http://" + admin + "/metrics"}
	row, err := s.load(ctx, setupAll, base, metrics, 0, c)
	if err != nil {
		return nil, err
	}
	if s.o.openFactor > 0 && refRate > 0 {
		rate := refRate * s.o.openFactor
		open, err := s.load(ctx, fmt.Sprintf("all, open loop at %.2g of the reference", s.o.openFactor), base, metrics, rate, c)
		if err != nil {
			return nil, err
		}
		rep.OpenLoop = open
	}
	if s.o.profile != "" {
		if err := s.profileAll(ctx, base, admin); err != nil {
			return nil, err
		}
		rep.Profile = s.o.profile
	}
	return row, nil
}

// profileAll takes a CPU profile of `all` under closed-loop load, apart
// from the measured runs so that profiling does not slow them down.
func (s *suite) profileAll(ctx context.Context, base, admin string) error {
	opts := s.o.load
	opts.Base, opts.Warmup, opts.Duration, opts.Progress = base, 0, s.o.profileFor+time.Second, nil
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(lctx, opts)
		done <- err
	}()
	fmt.Fprintf(s.stderr, "--- CPU profile of all for %s under closed-loop load\n", s.o.profileFor)
	client := &http.Client{Timeout: s.o.profileFor + 10*time.Second}
	resp, err := client.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, int(s.o.profileFor.Seconds())))
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(s.o.profile)
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
	fmt.Fprintf(s.stdout, "CPU profile of all written to %s: go tool pprof -top -cum %s\n\n", s.o.profile, s.o.profile)
	return nil
}

func (s *suite) runDistributed(ctx context.Context, redisAddr string) (*Row, error) {
	addrs, err := freeAddrs(5)
	if err != nil {
		return nil, err
	}
	natsAddr, listen, gwAdmin := addrs[0], addrs[1], addrs[2]
	workerAdmins := addrs[3:]
	host, port, _ := net.SplitHostPort(natsAddr)
	nats, err := s.start("nats-server", s.nats, "-a", host, "-p", port)
	if err != nil {
		return nil, err
	}
	defer nats.stop()
	if err := waitFor(ctx, nats, greets(natsAddr, "", "INFO ")); err != nil {
		return nil, err
	}
	natsURL := "nats://" + natsAddr
	procs := []*child{nats}
	var ready []func() error
	for i, admin := range workerAdmins {
		w, err := s.start(fmt.Sprintf("worker-%d", i+1), s.self, s.joingateArgs("worker",
			"--nats", natsURL, "--redis", "redis://"+redisAddr+"/0", "--admin-listen", admin)...)
		if err != nil {
			return nil, err
		}
		defer w.stop()
		procs = append(procs, w)
		ready = append(ready, readyz(admin))
	}
	gw, err := s.start("gateway", s.self, s.joingateArgs("gateway", "--nats", natsURL, "--listen", listen, "--admin-listen", gwAdmin)...)
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	procs = append(procs, gw)
	ready = append(ready, readyz(gwAdmin))
	for i, r := range ready {
		if err := waitFor(ctx, procs[i+1], r); err != nil {
			return nil, err
		}
	}
	// Gateway first, then workers, then NATS: the order of the table.
	ordered := append([]*child{gw}, procs[1:len(procs)-1]...)
	ordered = append(ordered, nats)
	return s.load(ctx, setupDistributed, "http://"+listen+"/callbackExample", []string{"http://" + gwAdmin + "/metrics"}, 0, ordered...)
}

// procsCPU is the CPU time the processes have used (user and system).
func procsCPU(procs []*child) time.Duration {
	const clockTicks = 100 // USER_HZ on Linux
	var total time.Duration
	for _, c := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state is field 3, utime 14, stime 15.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(utime+stime) * time.Second / clockTicks
	}
	return total
}

// machineBusy is the CPU time the whole machine has spent busy (not idle
// or waiting for I/O), from /proc/stat.
func machineBusy() time.Duration {
	const clockTicks = 100
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// procsMemory sums a /proc/PID/status memory field (VmRSS, VmHWM) of the
// processes, in MiB.
func procsMemory(procs []*child, field string) float64 {
	var kib int64
	for _, c := range procs {
		kib += procStatusKiB(c.cmd.Process.Pid, field)
	}
	return float64(kib) / 1024
}

func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
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
	if len(s.o.setups) > 1 {
		m["redis-server"] = version(s.redis, "--version")
	}
	if s.nats != "" {
		m["nats-server binary"] = version(s.nats, "--version")
	}
	return m
}

func targets(rep *SuiteReport) []Target {
	var ts []Target
	for _, r := range rep.Rows {
		switch r.Setup {
		case setupAll:
			ts = append(ts,
				Target{Name: "all >= 0.5 of the reference (closed loop)", Got: fmt.Sprintf("%.2f", r.Ratio), Met: r.Ratio >= 0.5},
				Target{Name: "all RSS < 100 MiB", Got: fmt.Sprintf("%.0f MiB peak", r.PeakRSSMiB), Met: r.PeakRSSMiB < 100})
		case setupDistributed:
			ts = append(ts, Target{Name: "distributed >= 0.3 of the reference", Got: fmt.Sprintf("%.2f", r.Ratio), Met: r.Ratio >= 0.3})
		}
	}
	if o := rep.OpenLoop; o != nil {
		fb := "unknown"
		if o.Result.Fallbacks != nil {
			fb = fmt.Sprintf("%.0f", *o.Result.Fallbacks)
		}
		got := fmt.Sprintf("p99 %s, %s fallbacks, %d errors", fmtMs(o.Result.Latency.P99), fb, o.Result.HTTPErrors())
		for _, r := range rep.Rows {
			if r.Setup == setupAll && r.Result.Throughput < o.Result.TargetRate {
				got += fmt.Sprintf(" (all's closed-loop maximum, %.0f req/s, is below the %.0f req/s asked)", r.Result.Throughput, o.Result.TargetRate)
			}
		}
		if f := rep.OpenLoopReference; f != nil {
			got += fmt.Sprintf("; the reference server's p99 at that rate: %s", fmtMs(f.Result.Latency.P99))
		}
		ts = append(ts, Target{
			Name: "all, open loop at half the reference: p99 < 2ms, no fallback",
			Got:  got,
			Met:  o.Result.Latency.P99 < 2 && o.Result.Fallbacks != nil && *o.Result.Fallbacks == 0 && o.Result.HTTPErrors() == 0,
		})
	}
	return ts
}

func fmtMs(ms float64) string {
	switch {
	case ms < 1:
		return fmt.Sprintf("%.0fµs", ms*1000)
	case ms < 1000:
		return fmt.Sprintf("%.3gms", ms)
	default:
		return fmt.Sprintf("%.3gs", ms/1000)
	}
}

func (rep *SuiteReport) print(w io.Writer) {
	fmt.Fprintf(w, "joingate bench suite: %s\n", rep.Load)
	keys := make([]string, 0, len(rep.Machine))
	for k := range rep.Machine {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v := rep.Machine[k]; v != "" {
			fmt.Fprintf(w, "  %-34s %s\n", k, v)
		}
	}
	fmt.Fprintln(w)
	const format = "%-12s %9s %8s %8s %8s %8s %9s %7s %8s %8s %6s %8s %6s\n"
	fmt.Fprintf(w, format, "setup", "req/s", "×ref", "p50", "p99", "p99.9", "fallback", "errors", "RSS MiB", "srv CPU", "redis", "gen CPU", "other")
	row := func(name string, r Row) {
		res := r.Result
		fb, redisCPU := "-", "-"
		if res.Fallbacks != nil {
			fb = fmt.Sprintf("%.0f", *res.Fallbacks)
		}
		if r.RedisCPU > 0 {
			redisCPU = fmt.Sprintf("%.2f", r.RedisCPU)
		}
		fmt.Fprintf(w, format, name, fmt.Sprintf("%.0f", res.Throughput), fmt.Sprintf("%.2f", r.Ratio),
			fmtMs(res.Latency.P50), fmtMs(res.Latency.P99), fmtMs(res.Latency.P999), fb,
			strconv.FormatUint(res.HTTPErrors(), 10), fmt.Sprintf("%.0f", r.PeakRSSMiB),
			fmt.Sprintf("%.2f", r.ServerCPU), redisCPU, fmt.Sprintf("%.2f", res.GeneratorCPU), fmt.Sprintf("%.2f", r.OtherCPU))
	}
	for _, r := range rep.Rows {
		row(r.Setup, r)
	}
	for _, o := range []*Row{rep.OpenLoopReference, rep.OpenLoop} {
		if o == nil {
			continue
		}
		res := o.Result
		fmt.Fprintf(w, "\n%s, %.0f req/s: %d of %d requests due in the window answered; latency from the due time p50 %s p99 %s p99.9 %s max %s;\n",
			o.Setup, res.TargetRate, res.Responses, res.Sent+res.Unsent, fmtMs(res.Latency.P50), fmtMs(res.Latency.P99), fmtMs(res.Latency.P999), fmtMs(res.Latency.Max))
		fb := "-"
		if res.Fallbacks != nil {
			fb = fmt.Sprintf("%.0f", *res.Fallbacks)
		}
		fmt.Fprintf(w, "  service time p99 %s, send lag p99 %s; fallbacks %s, errors %d; RSS %.0f MiB (peak %.0f); CPU srv %.2f gen %.2f other %.2f",
			fmtMs(res.ServiceTime.P99), fmtMs(res.SendLag.P99), fb, res.HTTPErrors(), o.RSSMiB, o.PeakRSSMiB, o.ServerCPU, res.GeneratorCPU, o.OtherCPU)
		if res.Behind {
			fmt.Fprintf(w, "; BEHIND SCHEDULE (%d unsent)", res.Unsent)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\nRSS: peak (VmHWM) of the server processes, summed; Redis excluded. CPU in cores over the window:")
	fmt.Fprintln(w, "srv the server processes, redis the redis-server, gen this load generator, other the rest of")
	fmt.Fprintln(w, "the machine (other programs: the figures are only fair when it is near 0). Closed-loop latency")
	fmt.Fprintln(w, "runs from the send time, open-loop latency from each request's due time.")
	if len(rep.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets:")
		for _, t := range rep.Targets {
			met := "MET    "
			if !t.Met {
				met = "NOT MET"
			}
			fmt.Fprintf(w, "  %s %-58s %s\n", met, t.Name, t.Got)
		}
	}
}
