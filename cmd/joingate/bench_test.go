package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/benchsuite"
	"github.com/joingate/joingate/pkg/loadgen"
	"github.com/joingate/joingate/pkg/reference"
	"github.com/joingate/joingate/pkg/testenv"
)

func TestBenchCommandLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		{[]string{"--connections", "0", "--duration", "1s"}, "connections must be at least 1"},
		{[]string{"--url", "http://10.1.2.3:10006/callbackExample"}, "not a loopback address"},
		{[]string{"--dist", "pareto"}, "unknown distribution"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"reference", "extra"}, "unexpected arguments"},
		{[]string{"suite", "--setups", "all,cluster"}, `unknown setup "cluster"`},
		{[]string{"suite", "--open-rates", "-5"}, "--open-rates must be positive"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"bench"}, c.args...), nil, &stdout, &stderr); code != exitUsage {
			t.Errorf("joingate bench %q: exit %d, want %d\n%s", c.args, code, exitUsage, stderr.String())
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("joingate bench %q: stderr lacks %q:\n%s", c.args, c.want, stderr.String())
		}
	}
}

// `joingate bench` against the reference server: the report on stdout and
// the same results as JSON.
func TestBenchAgainstReference(t *testing.T) {
	opts := reference.DefaultOptions()
	opts.NewServer = gateway.NewDefaultHTTPServer
	opts.Listen = "127.0.0.1:0"
	srv, err := reference.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, srv.Run)

	out := filepath.Join(t.TempDir(), "result.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "--url", "http://" + srv.Addr() + "/callbackExample", "-c", "4",
		"--duration", "300ms", "--warmup", "0s", "--dist", "zipf", "--json", out, "--quiet"}, nil, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"closed loop, 4 connections", "p99.9", "non-JSON bodies 0"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res loadgen.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("--json wrote %s: %v", b, err)
	}
	if res.Responses == 0 || res.Allowed != res.Responses || res.Distribution != loadgen.Zipf || res.Latency.P99 <= 0 {
		t.Fatalf("results: %s", b)
	}
}

// The suite, short: every setup comes up, takes load and answers; the JSON
// has every row; and no process the suite started outlives it.
func TestBenchSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen processes")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found: run `make test` (installs it) or `apt-get install redis-server`")
	}
	joingate, natsServer := binaries(t)
	out := filepath.Join(t.TempDir(), "suite.json")
	cmd := exec.Command(joingate, "bench", "suite", "--nats-server", natsServer,
		"--duration", "400ms", "--warmup", "100ms", "-c", "8", "--open-rates", "300", "--json", out)
	cmd.Env = testenv.ChildEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("suite: %v\n%s\n%s", err, stdout.String(), stderr.String())
		}
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("suite still running after 90s\n%s\n%s", stdout.String(), stderr.String())
	}
	for _, want := range []string{"×ref", "reference", "distributed", "floor:", "targets:"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchsuite.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	var setups []string
	for _, r := range rep.Rows {
		setups = append(setups, r.Setup)
		res := r.Result
		if strings.HasPrefix(r.Setup, benchsuite.SetupFlood) {
			// The flood's limits refuse most of a run this short (the
			// first applications of each applicant and group pass).
			if res.Responses == 0 || res.HTTPErrors() != 0 || r.Refused < 0.5 || r.RedisCPU <= 0 || r.CPUPerRequest <= 0 {
				t.Errorf("%s: %d responses, %d errors, %.2f refused, redis %.2f cores, %.1fµs/request",
					r.Setup, res.Responses, res.HTTPErrors(), r.Refused, r.RedisCPU, r.CPUPerRequest)
			}
			continue
		}
		if res.Responses == 0 || res.HTTPErrors() != 0 || res.Allowed != res.Responses || r.PeakRSSMiB <= 0 {
			t.Errorf("%s: %d responses, %d allowed, %d errors, %v MiB", r.Setup, res.Responses, res.Allowed, res.HTTPErrors(), r.PeakRSSMiB)
		}
		if r.Setup != benchsuite.SetupReference && (res.Fallbacks == nil || *res.Fallbacks != 0) {
			t.Errorf("%s: fallbacks %v (%s), want 0", r.Setup, res.Fallbacks, res.FallbacksNote)
		}
	}
	if strings.Join(setups, ",") != "reference,all,floor,distributed,flood,flood, no memory" || len(rep.OpenLoops) != 1 ||
		rep.OpenLoops[0].Reference == nil || rep.OpenLoops[0].All == nil || rep.OpenLoops[0].Floor == nil {
		t.Fatalf("rows %v, open loops %+v", setups, rep.OpenLoops)
	}
	for _, o := range []*benchsuite.Row{rep.OpenLoops[0].All, rep.OpenLoops[0].Floor} {
		if res := o.Result; res.Responses == 0 || res.HTTPErrors() != 0 || res.Allowed != res.Responses {
			t.Errorf("%s: %d responses, %d allowed, %d errors", o.Setup, res.Responses, res.Allowed, res.HTTPErrors())
		}
	}
	// The floor calls Redis for no decision, all for every one.
	if all, floor := rep.Rows[1], rep.Rows[2]; floor.RedisCPUPerRequest >= all.RedisCPUPerRequest/2 {
		t.Errorf("Redis CPU per request: floor %.2fµs, all %.2fµs", floor.RedisCPUPerRequest, all.RedisCPUPerRequest)
	}
	// The memory of refusals spares Redis most of the flood; without it
	// every decision calls Redis.
	if mem, none := rep.Rows[4], rep.Rows[5]; mem.StoreCalls >= 0.8*none.StoreCalls || none.StoreCalls < 0.99 {
		t.Errorf("store calls per decision: %.2f with the memory of refusals, %.2f without", mem.StoreCalls, none.StoreCalls)
	}
	// Where all's time went: every stage measured, each within the one
	// that contains it.
	if st := rep.OpenLoops[0].Stages; len(st) != 4 || st[0].Count == 0 || st[3].Count == 0 ||
		st[0].Mean < st[1].Mean || st[1].Mean < st[2].Mean || st[2].Mean < st[3].Mean {
		t.Fatalf("stages %+v", st)
	}
	if rep.Rows[0].Ratio != 1 || rep.Rows[1].Ratio <= 0 || len(rep.Targets) != 7 {
		t.Fatalf("ratios %v %v, %d targets", rep.Rows[0].Ratio, rep.Rows[1].Ratio, len(rep.Targets))
	}
	// Every child is gone: none runs in the suite's working directory or
	// names it, and the directory is removed.
	if rep.WorkDir == "" {
		t.Fatal("no working directory in the report")
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cwd, _ := os.Readlink(p + "/cwd")
		cmdline, _ := os.ReadFile(p + "/cmdline")
		if strings.HasPrefix(cwd, rep.WorkDir) || bytes.Contains(cmdline, []byte(rep.WorkDir)) {
			t.Errorf("%s still running: %q in %s", p, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), cwd)
		}
	}
	if _, err := os.Stat(rep.WorkDir); !os.IsNotExist(err) {
		t.Errorf("working directory %s not removed: %v", rep.WorkDir, err)
	}
}
