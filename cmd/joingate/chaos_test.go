//go:build chaos

package main

// Fault scenarios (`make chaos`): joingate in distributed mode (nats-server,
// a gateway, two or three workers, redis-server as processes) under steady
// load from a test client that checks every answer, while a fault is
// injected, or before the servers behind joingate exist. Each scenario
// prints its counts, phase by phase, with the slowest answer measured by
// that client; with CHAOS_REPORT set they are appended to that file
// (RELIABILITY.md quotes them).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/launch"
	"github.com/joingate/joingate/pkg/testenv"
)

const (
	chaosTimeout = 200 * time.Millisecond
	// An answer later than the decision timeout plus this margin counts as
	// late. 700ms in all still leaves 300ms of IMServer's shortest possible
	// timeout (1s); the margin absorbs the scheduling of six processes and
	// the load client on a 2-core machine.
	chaosMargin = 500 * time.Millisecond
	chaosRate   = 400 // requests per second
	// chaosExact is the limit of the per-application rule, which the load
	// (a new applicant per request) never reaches and exactness checks do.
	chaosExact = 5
)

// counts is what the load client saw.
type counts struct {
	Sent, Allowed, Refused int
	NonJSON, Late          int
	// Dropped: a request sent on a connection that then failed without an
	// answer. Refused: no connection could be made (listener closed).
	Dropped, ConnRefused int
	Max                  time.Duration
}

func (c counts) String() string {
	return fmt.Sprintf("sent %d, allowed %d, refused %d, non-JSON %d, late %d, dropped %d, connection refused %d, slowest %s",
		c.Sent, c.Allowed, c.Refused, c.NonJSON, c.Late, c.Dropped, c.ConnRefused, c.Max.Round(time.Millisecond))
}

// load sends chaosRate join callbacks per second to a gateway from 16
// goroutines, each for a new applicant, and checks every answer.
type load struct {
	mu     sync.Mutex
	c, p   counts // the whole run; the phase since the last call to phase
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startLoad(gateway string) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	const workers = 16
	for w := range workers {
		l.wg.Go(func() {
			tick := time.NewTicker(time.Second * workers / chaosRate)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				l.one(client, gateway, fmt.Sprintf("chaos-%d-%d", w, i))
			}
		})
	}
	return l
}

func (l *load) one(client *http.Client, gateway, applicant string) {
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, "http://"+gateway+"/callbackExample/"+joinCommand, strings.NewReader(joinBody("g-chaos", applicant)))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Operationid", applicant)
	resp, err := client.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range []*counts{&l.c, &l.p} {
		c.add(took, err, resp, body)
	}
}

func (c *counts) add(took time.Duration, err error, resp *http.Response, body []byte) {
	c.Sent++
	c.Max = max(c.Max, took)
	switch {
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		c.ConnRefused++
		return
	case err != nil:
		c.Dropped++
		return
	}
	var a struct{ ActionCode, NextCode int }
	if json.Unmarshal(body, &a) != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		c.NonJSON++
		return
	}
	if took > chaosTimeout+chaosMargin {
		c.Late++
	}
	if a.ActionCode == 0 && a.NextCode == 1 {
		c.Refused++
	} else {
		c.Allowed++
	}
}

// phase returns what the load saw since the last call (or the start), and
// starts a new phase.
func (l *load) phase() counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.p
	l.p = counts{}
	return p
}

func (l *load) snapshot() counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c
}

func (l *load) stop() counts {
	l.cancel()
	l.wg.Wait()
	return l.snapshot()
}

// cluster is the distributed set under test (launch.Set), on a Redis
// of its own.
type cluster struct {
	*launch.Set
	t        *testing.T
	opts     launch.SetOptions
	redis    *testenv.Redis
	redisURL string // the workers'
}

// prepare writes the configuration and chooses Redis's socket; it starts
// nothing.
func prepare(t *testing.T) *cluster {
	bin, natsBin := binaries(t)
	logs := t.TempDir()
	config := filepath.Join(logs, "joingate.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`shutdown_timeout: 10s
gateway:
  decision_timeout: %s
worker:
  breaker_failures: 3
  breaker_cooldown: 500ms
join_group:
  limits:
    - {name: per-applicant, key: applicant, limit: 1000, period: 1m}
    - {name: per-group, key: group, limit: 1000000, period: 1m}
    - {name: per-application, key: applicant_group, limit: %d, period: 1h}
`, chaosTimeout, chaosExact)), 0o644)
	c := &cluster{t: t, redis: testenv.NewRedis(t)}
	c.redisURL = c.redis.URL
	c.opts = launch.SetOptions{Joingate: bin, NATSServer: natsBin, Config: config, RedisURL: c.redisURL, LogDir: logs}
	return c
}

// startCluster starts Redis, then nats-server, the gateway and workers
// workers (testenv.StartSet), each ready.
func startCluster(t *testing.T, workers int) *cluster {
	c := prepare(t)
	c.redis.Start(t)
	c.opts.Workers = workers
	c.Set = testenv.StartSet(t, c.opts)
	return c
}

// newCluster prepares a cluster and starts nothing: the scenario starts
// its pieces.
func newCluster(t *testing.T) *cluster {
	c := prepare(t)
	c.Set = testenv.NewSet(t, c.opts)
	return c
}

// startServers starts Redis, nats-server and the gateway.
func (c *cluster) startServers() {
	c.redis.Start(c.t)
	c.startNATS()
	c.startGateway()
	waitReady(c.t, c.Gateway, c.GatewayAdmin)
}

func (c *cluster) startGateway() {
	if err := c.StartGateway(); err != nil {
		c.t.Fatal(err)
	}
}

// startNATS starts nats-server, again after it was killed, on the same
// address, and waits until it greets.
func (c *cluster) startNATS() {
	if err := c.StartNATS(context.Background()); err != nil {
		c.t.Fatal(err)
	}
}

// startWorker starts a worker on c.redisURL and waits until it is ready.
func (c *cluster) startWorker(name string) {
	w, admin := c.spawnWorker(name, c.redisURL)
	waitReady(c.t, w, admin)
}

// spawnWorker starts a worker on redisURL and does not wait.
func (c *cluster) spawnWorker(name, redisURL string) (*testenv.Process, string) {
	w, admin, err := c.StartWorker(name, redisURL)
	if err != nil {
		c.t.Fatal(err)
	}
	return w, admin
}

// readyz returns the status and body of admin's /readyz.
func (c *cluster) readyz(admin string) (int, string) {
	c.t.Helper()
	resp, err := client.Get("http://" + admin + "/readyz")
	if err != nil {
		c.t.Fatalf("readyz of %s: %v", admin, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// members counts the workers in the queue group.
func (c *cluster) members() float64 {
	var n float64
	for _, a := range c.WorkerAdmins {
		n += c.metric(a, "joingate_worker_queue_group_member")
	}
	return n
}

// storeErrors sums the workers' store errors of call (decide, probe).
func (c *cluster) storeErrors(call string) float64 {
	var n float64
	for _, a := range c.WorkerAdmins {
		n += c.metric(a, fmt.Sprintf(`joingate_worker_store_errors_total{call=%q,`, call))
	}
	return n
}

func (c *cluster) metric(admin, series string) float64 {
	return testenv.TextValue(c.t, testenv.Scrape(c.t, admin), series)
}

func (c *cluster) fallbacks(cause string) float64 {
	return c.metric(c.GatewayAdmin, fmt.Sprintf(`joingate_gateway_fallbacks_total{cause=%q}`, cause))
}

// decided reports the gateway's count of worker decisions.
func (c *cluster) decided() float64 { return c.metric(c.GatewayAdmin, gatewayDecided) }

// waitDecisions waits until the gateway has had n more decisions than it
// had when called, and fails the test if that does not happen.
func (c *cluster) waitDecisions(what string, n float64) {
	c.t.Helper()
	from := c.decided()
	if !testenv.Eventually(15*time.Second, func() bool { return c.decided() >= from+n }) {
		c.t.Fatalf("%s: no decisions (%v since)", what, c.decided()-from)
	}
}

// report prints a scenario's counts and appends them to CHAOS_REPORT.
func report(t *testing.T, scenario string, c counts, extra string) {
	line := fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %d | %s | %s |",
		scenario, c.Sent, c.Allowed, c.Refused, c.NonJSON, c.Late, c.Dropped, c.ConnRefused, c.Max.Round(time.Millisecond), extra)
	t.Log(line)
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

// clean fails on any answer that was not JSON, came late, or was lost.
func clean(t *testing.T, what string, c counts) {
	t.Helper()
	if c.NonJSON+c.Late+c.Dropped+c.ConnRefused > 0 {
		t.Fatalf("%s: load saw %s; want no non-JSON, late, dropped or refused answers", what, c)
	}
}

// expectClean is clean for a whole run, which must have had load.
func expectClean(t *testing.T, c counts) {
	t.Helper()
	clean(t, "the whole run", c)
	if c.Sent < chaosRate {
		t.Fatalf("load sent only %d requests", c.Sent)
	}
}

func TestChaosKillWorker(t *testing.T) {
	c := startCluster(t, 2)
	l := startLoad(c.GatewayAddr)
	c.waitDecisions("before the kill", 200)
	if err := c.Workers[0].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.Workers[0].Wait(5 * time.Second)
	before := c.metric(c.WorkerAdmins[1], workerDecided)
	c.waitDecisions("after the kill", 400)
	got := l.stop()
	survivor := c.metric(c.WorkerAdmins[1], workerDecided) - before
	report(t, "kill -9 one of two workers", got, fmt.Sprintf("survivor decided %v after the kill; fallbacks: timeout %v, no_responders %v",
		survivor, c.fallbacks("timeout"), c.fallbacks("no_responders")))
	expectClean(t, got)
	if survivor < 400 {
		t.Fatalf("the surviving worker decided %v requests after the kill, want the load", survivor)
	}
}

// NATS killed under load, then started again: the gateway stays ready and
// answers the fallback at once while it is away.
func TestChaosRestartNATS(t *testing.T) {
	c := startCluster(t, 2)
	l := startLoad(c.GatewayAddr)
	c.waitDecisions("before the restart", 200)
	c.NATS.Cmd.Process.Signal(syscall.SIGKILL)
	c.NATS.Wait(5 * time.Second)
	l.phase()
	unavailable := c.fallbacks("nats_unavailable")
	if !testenv.Eventually(10*time.Second, func() bool { return c.fallbacks("nats_unavailable") >= unavailable+100 }) {
		t.Fatal("no nats_unavailable fallbacks while NATS was down")
	}
	status, body := c.readyz(c.GatewayAdmin)
	down := l.phase()
	report(t, "NATS down: the gateway answers alone", down, fmt.Sprintf("gateway /readyz %d", status))
	if status != http.StatusOK {
		t.Fatalf("gateway /readyz %d %s while NATS is down; want 200: it answers every callback", status, body)
	}
	clean(t, "NATS down", down)
	c.startNATS()
	// Gateway and workers reconnect by themselves and decide again.
	c.waitDecisions("after the restart", 400)
	got := l.stop()
	report(t, "restart the NATS server", got, fmt.Sprintf("fallbacks: nats_unavailable %v, timeout %v, no_responders %v",
		c.fallbacks("nats_unavailable"), c.fallbacks("timeout"), c.fallbacks("no_responders")))
	expectClean(t, got)
}

// outage runs one phase of a store outage under load: fault, then wait
// until every worker has left the queue group and the gateway has
// answered n callbacks "no responders". No answer may wait for the
// gateway's timeout: each store call ends within the worker's budget.
func (c *cluster) outage(l *load, scenario string, fault func()) counts {
	c.t.Helper()
	timeouts, none := c.fallbacks("timeout"), c.fallbacks("no_responders")
	l.phase()
	fault()
	if !testenv.Eventually(10*time.Second, func() bool { return c.members() == 0 && c.fallbacks("no_responders") >= none+100 }) {
		c.t.Fatalf("%s: %v workers still in the queue group, %v no_responders fallbacks", scenario, c.members(), c.fallbacks("no_responders")-none)
	}
	p := l.phase()
	late := c.fallbacks("timeout") - timeouts
	report(c.t, scenario, p, fmt.Sprintf("timeout fallbacks %v; store errors: decide %v, probe %v", late, c.storeErrors("decide"), c.storeErrors("probe")))
	clean(c.t, scenario, p)
	if late > 0 {
		c.t.Fatalf("%s: %v callbacks waited for the gateway's timeout (%s); the store budget is redis.timeout (100ms)", scenario, late, chaosTimeout)
	}
	return p
}

// recovered ends a store outage scenario: every worker back in the queue
// group and deciding, then the whole run reported and checked, with no
// answer that waited for the gateway's timeout in any phase.
func (c *cluster) recovered(l *load, what, scenario string) {
	c.t.Helper()
	c.rejoined(what)
	c.waitDecisions(what, 400)
	got := l.stop()
	timeouts := c.fallbacks("timeout")
	report(c.t, scenario, got, fmt.Sprintf("fallbacks: timeout %v, no_responders %v", timeouts, c.fallbacks("no_responders")))
	expectClean(c.t, got)
	if timeouts > 0 {
		c.t.Fatalf("%s: %v answers waited for the gateway's timeout", scenario, timeouts)
	}
}

// rejoined waits until every worker is back in the queue group.
func (c *cluster) rejoined(what string) {
	c.t.Helper()
	if !testenv.Eventually(15*time.Second, func() bool { return c.members() == float64(len(c.Workers)) }) {
		c.t.Fatalf("%s: %v of %d workers back in the queue group", what, c.members(), len(c.Workers))
	}
}

func TestChaosRedis(t *testing.T) {
	c := startCluster(t, 2)
	l := startLoad(c.GatewayAddr)
	c.waitDecisions("before the outage", 200)

	// Stopped: connections refused at once; workers leave the group.
	c.outage(l, "Redis stopped", c.redis.Stop)
	c.redis.Start(t)
	c.rejoined("after Redis came back")
	c.waitDecisions("after Redis came back", 200)

	// Paused (every command waits 2s): each call ends at the store budget.
	c.outage(l, "Redis paused (CLIENT PAUSE 2s)", func() {
		if err := c.redis.Client.Do(context.Background(), "CLIENT", "PAUSE", "2000", "ALL").Err(); err != nil {
			t.Fatal(err)
		}
	})
	c.recovered(l, "after the pause", "stop Redis, then pause it 2s")
}

// Redis behind a network that drops everything: connections stay open
// and nothing comes back; new ones are accepted and never answered.
func TestChaosRedisBlackholed(t *testing.T) {
	c := newCluster(t)
	c.startServers()
	hole := testenv.StartBlackhole(t, fmt.Sprintf("127.0.0.1:%d", c.redis.Port))
	c.redisURL = "redis://" + hole.Addr
	for i := range 2 {
		c.startWorker(fmt.Sprint("worker", i+1))
	}
	l := startLoad(c.GatewayAddr)
	c.waitDecisions("before the blackhole", 200)
	c.outage(l, "Redis blackholed", hole.Drop)
	hole.Pass()
	c.recovered(l, "after the blackhole", "blackhole Redis, then let it through")
}

// One worker of three has a wrong Redis password: it never joins the
// queue group, says why, and the limits hold exactly.
func TestChaosWrongRedisPassword(t *testing.T) {
	c := newCluster(t)
	c.startServers()
	if err := c.redis.Client.Do(context.Background(), "CONFIG", "SET", "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	c.redisURL = "unix://:s3cret@" + c.redis.Socket
	bad, badAdmin := c.spawnWorker("worker-wrong-password", "unix://:wrong@"+c.redis.Socket)
	for i := range 2 {
		c.startWorker(fmt.Sprint("worker", i+1))
	}
	var status int
	var body string
	if !testenv.Eventually(10*time.Second, func() bool {
		status, body = c.readyz(badAdmin)
		return strings.Contains(body, "auth")
	}) || status != http.StatusServiceUnavailable {
		t.Fatalf("the worker with a wrong password: /readyz %d %q; want 503 naming the cause", status, body)
	}
	if out := bad.Output(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "WRONGPASS") || strings.Contains(out, "wrong@") {
		t.Fatalf("its log has no ERROR line with Redis's words (or shows the password):\n%s", out)
	}

	l := startLoad(c.GatewayAddr)
	c.waitDecisions("with the misconfigured worker", 200)
	allowed := 0
	for i := range 4 * chaosExact {
		_, _, a, err := tryCallback(c.GatewayAddr, joinCommand, fmt.Sprint("exact-", i), joinBody("g-exact", "exact-applicant"))
		if err != nil {
			t.Fatal(err)
		}
		if a.allowed() {
			allowed++
		}
	}
	c.waitDecisions("after the applications", 400)
	got := l.stop()
	badDecided := c.metric(badAdmin, `joingate_worker_requests_total{outcome="decided"}`)
	report(t, "1 of 3 workers with a wrong Redis password", got, fmt.Sprintf("%d of %d applications of one applicant allowed (limit %d); its /readyz %d; it decided %v",
		allowed, 4*chaosExact, chaosExact, status, badDecided))
	expectClean(t, got)
	if allowed != chaosExact || badDecided != 0 {
		t.Fatalf("%d of %d allowed, want exactly %d; the misconfigured worker decided %v, want 0", allowed, 4*chaosExact, chaosExact, badDecided)
	}
}

// Gateway and workers started before NATS and Redis exist: the gateway is
// ready and answers the fallback at once; workers wait out of the queue
// group, join NATS, then the group when Redis comes.
func TestChaosStartBeforeNATSAndRedis(t *testing.T) {
	c := newCluster(t)
	c.startGateway()
	waitReady(t, c.Gateway, c.GatewayAdmin)
	for i := range 2 {
		w, admin := c.spawnWorker(fmt.Sprint("worker", i+1), c.redisURL)
		testenv.WaitHTTP(t, w, "http://"+admin+"/healthz", 15*time.Second) // up, not ready
	}
	l := startLoad(c.GatewayAddr)
	phase := func(scenario, cause, worker string) {
		t.Helper()
		from := c.fallbacks(cause)
		var (
			status int
			body   string
		)
		if !testenv.Eventually(15*time.Second, func() bool {
			status, body = c.readyz(c.WorkerAdmins[0])
			return c.fallbacks(cause) >= from+100 && strings.Contains(body, worker)
		}) || status != http.StatusServiceUnavailable {
			t.Fatalf("%s: %v %s fallbacks; worker /readyz %d %q, want 503 saying %q", scenario, c.fallbacks(cause)-from, cause, status, body, worker)
		}
		p := l.phase()
		report(t, scenario, p, fmt.Sprintf("fallbacks %s; worker /readyz %d", cause, status))
		clean(t, scenario, p)
	}
	l.phase()
	phase("started before NATS and Redis", "nats_unavailable", "waiting for NATS")
	c.startNATS()
	phase("NATS up, Redis not yet", "no_responders", "store failing")
	c.redis.Start(t)
	c.rejoined("after Redis came")
	c.waitDecisions("after Redis came", 400)
	got := l.stop()
	report(t, "start before NATS and Redis, then start them", got, fmt.Sprintf("fallbacks: nats_unavailable %v, no_responders %v, timeout %v",
		c.fallbacks("nats_unavailable"), c.fallbacks("no_responders"), c.fallbacks("timeout")))
	expectClean(t, got)
}

// A Redis that another client's slow command keeps busy: under load every
// answer stays JSON and in time (each store call ends at the worker's
// budget and is answered on_store_error, the breakers open, the workers
// leave the queue group and the gateway answers at once); and decisions
// that reach Redis after their deadline consume nothing. For the second,
// with the load stopped and the workers back in the group, two callbacks
// of one applicant reach the busy Redis, are answered at the store budget,
// and run when Redis is free: that applicant has no key in Redis
// afterwards.
func TestChaosSlowRedis(t *testing.T) {
	c := startCluster(t, 2)
	l := startLoad(c.GatewayAddr)
	c.waitDecisions("before", 200)
	breakers := func(state float64) bool {
		return c.metric(c.WorkerAdmins[0], "joingate_worker_store_breaker_state") == state &&
			c.metric(c.WorkerAdmins[1], "joingate_worker_store_breaker_state") == state
	}
	if err := <-testenv.BusyRedis(t, c.redis.URL, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c.waitDecisions("after Redis was busy", 200)
	got := l.stop()
	report(t, "Redis busy 1.5s (a slow command)", got, fmt.Sprintf("fallbacks: timeout %v", c.fallbacks("timeout")))
	expectClean(t, got)

	if !testenv.Eventually(10*time.Second, func() bool { return breakers(0) }) {
		t.Fatal("the breakers did not close after Redis was free")
	}
	c.rejoined("after Redis was free")
	before := testenv.ScriptCalls(t, c.redis.Client)
	done := testenv.BusyRedis(t, c.redis.URL, time.Second)
	failed := c.storeErrors("decide")
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			_, _, a, err := tryCallback(c.GatewayAddr, joinCommand, fmt.Sprint("late-", i), joinBody("g-late", "late-applicant"))
			if err != nil || !a.allowed() {
				t.Errorf("callback %d while Redis is busy: %s, %v; want on_store_error, allow", i, a, err)
			}
		})
	}
	wg.Wait()
	if got := c.storeErrors("decide") - failed; got != 2 {
		t.Fatalf("%v failed store calls for the 2 callbacks; want 2: they did not wait on Redis", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool { return testenv.ScriptCalls(t, c.redis.Client) > before }) {
		t.Fatal("the late decisions never ran in Redis: the scenario proves nothing")
	}
	keys, err := c.redis.Client.Keys(context.Background(), "*late-applicant*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys of the applicant whose decisions came late: %v, %v; want none (nothing consumed)", keys, err)
	}
}

func TestChaosSIGTERM(t *testing.T) {
	c := startCluster(t, 2)
	l := startLoad(c.GatewayAddr)
	c.waitDecisions("before SIGTERM", 200)

	// A worker stops: it drains, exits 0, and the other takes the load.
	c.Workers[0].Cmd.Process.Signal(syscall.SIGTERM)
	if !c.Workers[0].Wait(15*time.Second) || c.Workers[0].Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("worker1 did not exit 0 after SIGTERM: %v", c.Workers[0].Cmd.ProcessState)
	}
	c.waitDecisions("after the worker stopped", 200)
	mid := l.snapshot()
	if mid.NonJSON+mid.Late+mid.Dropped+mid.ConnRefused > 0 {
		t.Fatalf("a worker's SIGTERM cost answers: %s", mid)
	}

	// The gateway stops: every request it accepted is answered; after the
	// listener closes, new connections are refused (nothing else).
	c.Gateway.Cmd.Process.Signal(syscall.SIGTERM)
	if !c.Gateway.Wait(15*time.Second) || c.Gateway.Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("gateway did not exit 0 after SIGTERM: %v", c.Gateway.Cmd.ProcessState)
	}
	got := l.stop()
	report(t, "SIGTERM a worker, then the gateway", got, "worker exit 0, gateway exit 0")
	if got.NonJSON+got.Late+got.Dropped > 0 {
		t.Fatalf("load saw %s; want every accepted request answered in time", got)
	}
}
