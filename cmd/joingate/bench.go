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
	"strings"
	"syscall"

	"github.com/joingate/joingate/gateway"
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
func runBench(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "reference":
			return runReference(args[1:], stderr)
		case "suite":
			return runSuite(args[1:], environ, stdout, stderr)
		case "soak":
			return runSoak(args[1:], environ, stdout, stderr)
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "joingate bench: unexpected arguments %q\n", fs.Args())
		return exitUsage
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
			fmt.Fprintf(stderr, "joingate bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "joingate bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	res, err := loadgen.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "joingate bench: %v\n", err)
		return exitUsage
	}
	loadgen.Report(stdout, res)
	if *jsonOut != "" {
		if err := writeJSONFile(*jsonOut, res); err != nil {
			fmt.Fprintf(stderr, "joingate bench: %v\n", err)
			return 1
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "joingate bench reference: unexpected arguments %q\n", fs.Args())
		return exitUsage
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
		fmt.Fprintf(stderr, "joingate bench reference: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "reference server (decode the callback, answer allow, nothing else) listening on %s\n", srv.Addr())
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "joingate bench reference: %v\n", err)
		return 1
	}
	return 0
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
