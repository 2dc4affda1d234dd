package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/benchsuite"
	"github.com/joingate/joingate/pkg/loadgen"
	"github.com/joingate/joingate/pkg/reference"
)

const benchUsage = `usage:
  joingate bench [flags]                 send IMServer-like load to a webhook (see flags)
  joingate bench --reference [--listen ADDR]
  joingate bench reference [--listen ADDR]
                                         run the reference server, the one the bench compares with
  joingate bench suite [flags]           what 'make bench' runs: the reference server, 'joingate all'
                                         with Redis and the distributed set under the same load, and
                                         a table of the results ('joingate bench suite -h')

`

// runBench is `joingate bench`: the load generator, the reference server
// and the benchmark suite.
func runBench(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "reference":
			return runReference(args[1:], stderr)
		case "suite":
			return runSuite(args[1:], stdout, stderr)
		case "soak":
			return runSoak(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("joingate bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	asReference := fs.Bool("reference", false, "run the reference server on --listen instead of sending load")
	listen := fs.String("listen", reference.DefaultOptions().Listen, "--reference: the address to serve on")
	opts := loadgen.DefaultOptions()
	loadFlags(fs, &opts, true)
	metricsURLs := fs.String("metrics-url", "", "gateways' Prometheus endpoints, comma-separated (http://127.0.0.1:9090/metrics):\n"+
		"fallback answers are the growth of "+loadgen.FallbacksMetric+"; a fallback allow reads like any other")
	jsonOut := fs.String("json", "", "also write the results to `FILE` as JSON")
	quiet := fs.Bool("quiet", false, "no progress line every second")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the generator itself to `FILE`")
	if code, ok := parseBenchFlags(fs, args, stderr); !ok {
		return code
	}
	if *asReference {
		return serveReference(*listen, stderr)
	}
	if *metricsURLs != "" {
		opts.MetricsURLs = strings.Split(*metricsURLs, ",")
	}
	if !*quiet {
		opts.Progress = stderr
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return failed(stderr, "joingate bench", err, 1)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return failed(stderr, "joingate bench", err, 1)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := loadgen.Run(ctx, opts)
	if err != nil {
		return failed(stderr, "joingate bench", err, exitUsage)
	}
	loadgen.Report(stdout, res)
	if *jsonOut != "" {
		if err := writeJSONFile(*jsonOut, res); err != nil {
			return failed(stderr, "joingate bench", err, 1)
		}
	}
	if res.Responses == 0 {
		fmt.Fprintln(stderr, "joingate bench: no request was answered")
		return 1
	}
	return 0
}

// loadFlags binds the flags that shape the load to opts; withTarget adds
// the ones that only make sense against a server of the user's choosing.
func loadFlags(fs *flag.FlagSet, opts *loadgen.Options, withTarget bool) {
	if withTarget {
		fs.StringVar(&opts.Base, "url", opts.Base, "the webhook base URL, as configured in IMServer; requests go to <url>/callbackBeforeJoinGroupCommand")
		fs.Float64Var(&opts.Rate, "rate", 0, "open loop at this many requests per second (latency counted from each request's due time); 0: closed loop")
		fs.BoolVar(&opts.AllowRemote, "allow-remote", false, "allow a --url that is not a loopback address")
	}
	fs.IntVar(&opts.Connections, "connections", opts.Connections, "concurrent connections (closed loop: each sends as fast as it is answered)")
	fs.IntVar(&opts.Connections, "c", opts.Connections, "short for --connections")
	fs.DurationVar(&opts.Duration, "duration", opts.Duration, "measured duration")
	fs.DurationVar(&opts.Warmup, "warmup", opts.Warmup, "load sent before the measurement and not counted")
	fs.BoolVar(&opts.KeepAlive, "keepalive", opts.KeepAlive, "reuse connections; --keepalive=false opens a new connection per request")
	fs.DurationVar(&opts.Timeout, "timeout", opts.Timeout, "give up on a request after this long (IMServer's callback timeout)")
	fs.IntVar(&opts.Applicants, "applicants", opts.Applicants, "number of distinct applicants (applyID)")
	fs.IntVar(&opts.Groups, "groups", opts.Groups, "number of distinct groups (groupID)")
	fs.StringVar(&opts.Distribution, "dist", opts.Distribution, "how applicants and groups are drawn: uniform or zipf")
	fs.Float64Var(&opts.ZipfS, "zipf-s", opts.ZipfS, "the Zipf exponent (> 1; larger: hotter head)")
	fs.StringVar(&opts.Message, "message", opts.Message, "reqMessage of every request")
	fs.Uint64Var(&opts.Seed, "seed", opts.Seed, "random seed of the drawn applicants and groups")
}

func runReference(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("joingate bench reference", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", reference.DefaultOptions().Listen, "the address to serve on")
	if code, ok := parseBenchFlags(fs, args, stderr); !ok {
		return code
	}
	return serveReference(*listen, stderr)
}

// serveReference runs the reference server until SIGINT or SIGTERM.
func serveReference(listen string, stderr io.Writer) int {
	opts := reference.DefaultOptions()
	opts.NewServer = gateway.NewDefaultHTTPServer
	opts.Listen = listen
	srv, err := reference.New(opts)
	if err != nil {
		return failed(stderr, "joingate bench reference", err, 1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "reference server (decode the callback, answer allow, nothing else) listening on %s\n", srv.Addr())
	if err := srv.Run(ctx); err != nil {
		return failed(stderr, "joingate bench reference", err, 1)
	}
	return 0
}

// runSuite is `joingate bench suite` (pkg/benchsuite): its flags.
func runSuite(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("joingate bench suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := benchsuite.DefaultOptions()
	loadFlags(fs, &o.Load, false)
	setups := fs.String("setups", strings.Join(o.Setups, ","), "setups to run, comma-separated (the reference always runs: every ratio is to it)")
	fs.StringVar(&o.Joingate, "joingate", "", "joingate binary that runs the servers (default: this one)")
	fs.StringVar(&o.NATSServer, "nats-server", "", "nats-server binary for the distributed set (default: next to the joingate binary, then $PATH)")
	fs.StringVar(&o.RedisServer, "redis-server", o.RedisServer, "redis-server binary")
	fs.BoolVar(&o.RedisSocket, "redis-socket", false, "the servers reach Redis on a unix socket instead of loopback TCP")
	openRates := fs.String("open-rates", joinRates(o.OpenRates), "rates of the open loops against the reference and `all`, requests per second, comma-separated; \"\" for none")
	fs.StringVar(&o.Profile, "profile", "", "also take a CPU profile of `all` under closed-loop load and write it to `FILE` (the flood's to FILE-flood)")
	fs.DurationVar(&o.ProfileFor, "profile-duration", o.ProfileFor, "length of the --profile")
	jsonOut := fs.String("json", "", "also write the results to `FILE` as JSON")
	fs.BoolVar(&o.Keep, "keep", false, "keep the working directory (configuration, logs) after the run")
	if code, ok := parseBenchFlags(fs, args, stderr); !ok {
		return code
	}
	var err error
	if o.Setups, err = benchsuite.ParseSetups(*setups); err == nil {
		if o.OpenRates, err = parseRates(*openRates); err == nil {
			err = o.Validate()
		}
	}
	if err != nil {
		return failed(stderr, "joingate bench suite", err, exitUsage)
	}
	if o.Joingate, err = selfUnless(o.Joingate); err != nil {
		return failed(stderr, "joingate bench suite", err, 1)
	}
	o.Load.Progress, o.Stdout, o.Stderr = stderr, stdout, stderr

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := benchsuite.Run(ctx, o)
	if rep != nil {
		rep.Print(stdout)
		if *jsonOut != "" {
			if werr := writeJSONFile(*jsonOut, rep); werr != nil {
				fmt.Fprintf(stderr, "joingate bench suite: %v\n", werr)
			}
		}
	}
	if err != nil {
		return failed(stderr, "joingate bench suite", err, 1)
	}
	return 0
}

// runSoak is `joingate bench soak` (benchsuite.Soak): `joingate all` with
// Redis under a steady open-loop load for a long, bounded time, sampling
// its memory, goroutines and open files; it fails when one of them keeps
// growing.
func runSoak(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("joingate bench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := benchsuite.DefaultOptions()
	o.Load.Duration = 10 * time.Minute
	loadFlags(fs, &o.Load, false)
	fs.StringVar(&o.RedisServer, "redis-server", o.RedisServer, "redis-server binary")
	fs.Float64Var(&o.OpenFactor, "factor", o.OpenFactor, "without --rate: this fraction of the reference's rate, measured first")
	interval := fs.Duration("interval", 5*time.Second, "how often to sample the process")
	if code, ok := parseBenchFlags(fs, args, stderr); !ok {
		return code
	}
	if *interval <= 0 || o.Load.Duration < 10**interval {
		fmt.Fprintf(stderr, "joingate bench soak: want --duration of at least 10 --interval\n")
		return exitUsage
	}
	var err error
	if o.Joingate, err = selfUnless(""); err != nil {
		return failed(stderr, "joingate bench soak", err, 1)
	}
	o.Load.Progress, o.Stdout, o.Stderr = stderr, stdout, stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := benchsuite.Soak(ctx, o, *interval)
	if err != nil {
		return failed(stderr, "joingate bench soak", err, 1)
	}
	rep.Print(stdout)
	if rep.Grew() {
		return 1
	}
	return 0
}

// parseBenchFlags parses args, which must hold flags only; when it
// returns false the command exits with code (0 for -h).
func parseBenchFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return exitUsage, false
	}
	return 0, true
}

// failed writes err on stderr as cmd's and returns code, the exit code.
func failed(stderr io.Writer, cmd string, err error, code int) int {
	fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
	return code
}

// selfUnless is bin, or this executable when bin is empty.
func selfUnless(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find this executable: %w", err)
	}
	return self, nil
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// joinRates and parseRates write and read --open-rates.
func joinRates(rates []float64) string {
	var s []string
	for _, r := range rates {
		s = append(s, strconv.FormatFloat(r, 'f', -1, 64))
	}
	return strings.Join(s, ",")
}

func parseRates(list string) ([]float64, error) {
	var rates []float64
	for f := range strings.SplitSeq(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("--open-rates: %q is not a rate", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}
