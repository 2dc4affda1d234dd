// Command joingate is OpenIM's callbackBeforeJoinGroupCommand webhook: a
// fasthttp gateway, NATS queue-group workers and Redis-backed limits.
//
//	joingate all            embedded NATS, gateway and worker in one process
//	joingate gateway        the callback edge only
//	joingate worker         a decider only
//	joingate ctl            operator commands against a worker's admin API
//	joingate check-config   validate configuration and exit
//	joingate version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/joingate/joingate/pkg/app"
	"github.com/joingate/joingate/pkg/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr)) }

const usage = `usage: joingate <command> [flags]

commands:
  all           run an embedded NATS server, the gateway and a worker in one process
  gateway       run the callback edge (needs --nats)
  worker        run a decider (needs --nats and --redis)
  ctl           operator commands: dynamic lists, quotas, explain (see 'joingate ctl -h')
  check-config  validate the configuration and exit
  bench         load generator that speaks like IMServer, the reference server, the bench suite
  version       print the version

Run 'joingate help <command>' or 'joingate <command> -h' for what a command
does and the flags it reads.
`

// commandHelp says what each serving command does, for its -h.
var commandHelp = map[string]string{
	"all": `Runs an embedded NATS server, the gateway and a worker in one process: the
zero-dependency default. Limits are kept in memory, or in Redis with --redis;
--nats connects to an outside NATS server instead of the embedded one.`,
	"gateway": `Runs the callback edge: it answers IMServer's callbacks, sends join callbacks
to workers over NATS (--nats, required) and answers gateway.fallback when no
decision comes within --decision-timeout. It stays ready without NATS.`,
	"worker": `Runs a decider: it takes join callbacks from NATS (--nats, required), applies
the policy with limits in Redis (--redis, required) and replies. It is in the
queue group only while its store answers.`,
	"check-config": `Loads the configuration (defaults, --config file, JOINGATE_* environment,
flags), validates it and exits: 0 when it is valid, 2 with the file, line and
key of each error otherwise.`,
}

// exitUsage is the exit code for bad command lines and configuration.
const exitUsage = 2

func run(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "--version", "-version", "-v":
		fmt.Fprintf(stdout, "joingate %s %s\n", version, revision())
		return 0
	case "help", "-h", "--help":
		if len(args) == 1 && args[0] != "help" {
			// joingate help CMD: the command's own -h, on stdout.
			return run([]string{args[0], "-h"}, environ, stdout, stdout)
		}
		fmt.Fprint(stdout, usage)
		return 0
	case "ctl":
		return runCtl(args, environ, os.Stdin, stdout, stderr)
	case "bench":
		return runBench(args, stdout, stderr)
	case "all", "gateway", "worker", "check-config":
	default:
		fmt.Fprintf(stderr, "joingate: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}

	fs := flag.NewFlagSet("joingate "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: joingate %s [flags]\n\n%s\n\nEvery configuration key can also be set in the --config file or as a\n"+
			"JOINGATE_* environment variable (deploy/joingate.example.yaml lists them).\n\nflags:\n", cmd, commandHelp[cmd])
		fs.PrintDefaults()
	}
	configPath := fs.String("config", "", "YAML configuration file (see deploy/joingate.example.yaml)")
	flagValues := config.FlagValues(fs, cmd)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "joingate %s: unexpected arguments %q\n", cmd, fs.Args())
		return exitUsage
	}
	cfg, err := config.Load(*configPath, environ, flagValues())
	if err != nil {
		fmt.Fprintf(stderr, "joingate: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	if err := checkRole(cmd, &cfg); err != nil {
		fmt.Fprintf(stderr, "joingate %s: %v\n", cmd, err)
		return exitUsage
	}
	if cmd == "check-config" {
		fmt.Fprintf(stdout, "configuration OK: %d rate limit rule(s), decision timeout %s, fallback %s\n",
			len(cfg.JoinGroup.Limits), cfg.Gateway.DecisionTimeout, cfg.Gateway.Fallback)
		return 0
	}

	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default: // one pending reload covers them all
				}
			}
		}
	}()
	err = app.Run(ctx, cfg, app.Options{
		Role: cmd, Version: version, Revision: revisionID(), Logger: log,
		// A reload reads the same layers as start-up: the file, then the
		// environment and flags, which a reload cannot change.
		ConfigPath: *configPath,
		Load:       func() (config.Config, error) { return config.Load(*configPath, environ, flagValues()) },
		Reload:     reload,
	})
	if err != nil {
		log.Error("joingate stopped with an error", "command", cmd, "err", err)
		return 1
	}
	return 0
}

// checkRole rejects configurations a command cannot run with.
func checkRole(cmd string, cfg *config.Config) error {
	switch cmd {
	case "gateway":
		if cfg.NATS.URL == "" {
			return errors.New("nats.url (--nats) is required: the gateway reaches workers through NATS")
		}
	case "worker":
		if cfg.NATS.URL == "" {
			return errors.New("nats.url (--nats) is required: the worker takes requests from NATS")
		}
		if cfg.Redis.URL == "" {
			return errors.New("redis.url (--redis) is required: workers share their limits in Redis")
		}
	}
	if cfg.NATS.EmbeddedListen != "" && (cmd != "all" || cfg.NATS.URL != "") {
		return errors.New("nats.embedded_listen applies to `joingate all` without nats.url only (it serves the embedded NATS server)")
	}
	return nil
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func revision() string {
	return fmt.Sprintf("(%s, %s)", revisionID(), runtime.Version())
}

// revisionID is the VCS revision the binary was built from, "-dirty" when
// the tree had changes, or "unknown".
func revisionID() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	return rev + dirty
}
