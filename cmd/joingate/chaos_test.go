//go:build chaos

package main

// Fault scenarios (`make chaos`): joingate in distributed mode (nats-server,
// a gateway, two workers, redis-server as processes) under steady load from
// a test client that checks every answer, while a fault is injected. Each
// scenario prints its counts; with CHAOS_REPORT set they are appended to
// that file (RELIABILITY.md quotes them).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	c      counts
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
	l.c.Sent++
	l.c.Max = max(l.c.Max, took)
	switch {
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		l.c.ConnRefused++
		return
	case err != nil:
		l.c.Dropped++
		return
	}
	var a struct{ ActionCode, NextCode int }
	if json.Unmarshal(body, &a) != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		l.c.NonJSON++
		return
	}
	if took > chaosTimeout+chaosMargin {
		l.c.Late++
	}
	if a.ActionCode == 0 && a.NextCode == 1 {
		l.c.Refused++
	} else {
		l.c.Allowed++
	}
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

// cluster is the distributed set under test.
type cluster struct {
	t                 *testing.T
	bin, natsBin      string
	logs, config      string
	redis             *testenv.Redis
	natsAddr, natsURL string
	nats              *testenv.Process
	gwAddr, gwAdmin   string
	gateway           *testenv.Process
	workerAdmins      []string
	workers           []*testenv.Process
}

func startCluster(t *testing.T) *cluster {
	bin, natsBin := binaries(t)
	c := &cluster{t: t, bin: bin, natsBin: natsBin, logs: t.TempDir(), redis: testenv.StartRedis(t)}
	c.config = filepath.Join(c.logs, "joingate.yaml")
	os.WriteFile(c.config, []byte(fmt.Sprintf(`shutdown_timeout: 10s
gateway:
  decision_timeout: %s
worker:
  breaker_failures: 3
  breaker_cooldown: 500ms
join_group:
  limits:
    - {name: per-applicant, key: applicant, limit: 1000, period: 1m}
    - {name: per-group, key: group, limit: 1000000, period: 1m}
`, chaosTimeout)), 0o644)
	c.natsAddr = testenv.Loopback(t)
	c.natsURL = "nats://" + c.natsAddr
	c.startNATS()
	c.gwAddr, c.gwAdmin = testenv.Loopback(t), testenv.Loopback(t)
	c.gateway = startProcess(t, c.logs, "gateway", bin, "gateway", "--config", c.config, "--nats", c.natsURL,
		"--listen", c.gwAddr, "--admin-listen", c.gwAdmin)
	waitReady(t, c.gateway, c.gwAdmin)
	for i := range 2 {
		c.startWorker(fmt.Sprint("worker", i+1))
	}
	return c
}

func (c *cluster) startNATS() {
	_, port, _ := net.SplitHostPort(c.natsAddr)
	c.nats = startProcess(c.t, c.logs, "nats-server", c.natsBin, "-a", "127.0.0.1", "-p", port)
	testenv.WaitNATS(c.t, c.nats, c.natsAddr)
}

func (c *cluster) startWorker(name string) {
	admin := testenv.Loopback(c.t)
	w := startProcess(c.t, c.logs, name, c.bin, "worker", "--config", c.config, "--nats", c.natsURL,
		"--redis", c.redis.URL, "--admin-listen", admin)
	waitReady(c.t, w, admin)
	c.workers = append(c.workers, w)
	c.workerAdmins = append(c.workerAdmins, admin)
}

func (c *cluster) metric(admin, series string) float64 {
	return testenv.TextValue(c.t, testenv.Scrape(c.t, admin), series)
}

func (c *cluster) fallbacks(cause string) float64 {
	return c.metric(c.gwAdmin, fmt.Sprintf(`joingate_gateway_fallbacks_total{cause=%q}`, cause))
}

// decided reports the gateway's count of worker decisions.
func (c *cluster) decided() float64 { return c.metric(c.gwAdmin, gatewayDecided) }

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

// expectClean fails on any answer that was not JSON, came late, or was lost.
func expectClean(t *testing.T, c counts) {
	t.Helper()
	if c.NonJSON+c.Late+c.Dropped+c.ConnRefused > 0 {
		t.Fatalf("load saw %s; want no non-JSON, late, dropped or refused answers", c)
	}
	if c.Sent < chaosRate {
		t.Fatalf("load sent only %d requests", c.Sent)
	}
}

func TestChaosKillWorker(t *testing.T) {
	c := startCluster(t)
	l := startLoad(c.gwAddr)
	c.waitDecisions("before the kill", 200)
	if err := c.workers[0].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.workers[0].Wait(5 * time.Second)
	before := c.metric(c.workerAdmins[1], workerDecided)
	c.waitDecisions("after the kill", 400)
	got := l.stop()
	survivor := c.metric(c.workerAdmins[1], workerDecided) - before
	report(t, "kill -9 one of two workers", got, fmt.Sprintf("survivor decided %v after the kill; fallbacks: timeout %v, no_responders %v",
		survivor, c.fallbacks("timeout"), c.fallbacks("no_responders")))
	expectClean(t, got)
	if survivor < 400 {
		t.Fatalf("the surviving worker decided %v requests after the kill, want the load", survivor)
	}
}

func TestChaosRestartNATS(t *testing.T) {
	c := startCluster(t)
	l := startLoad(c.gwAddr)
	c.waitDecisions("before the restart", 200)
	c.nats.Cmd.Process.Signal(syscall.SIGKILL)
	c.nats.Wait(5 * time.Second)
	// During the outage every answer is the fallback, within the timeout.
	unavailable := c.fallbacks("nats_unavailable")
	if !testenv.Eventually(10*time.Second, func() bool { return c.fallbacks("nats_unavailable") >= unavailable+100 }) {
		t.Fatal("no nats_unavailable fallbacks while NATS was down")
	}
	c.startNATS()
	// Gateway and workers reconnect by themselves and decide again.
	c.waitDecisions("after the restart", 400)
	got := l.stop()
	report(t, "restart the NATS server", got, fmt.Sprintf("fallbacks: nats_unavailable %v, timeout %v, no_responders %v",
		c.fallbacks("nats_unavailable"), c.fallbacks("timeout"), c.fallbacks("no_responders")))
	expectClean(t, got)
}

func TestChaosRedis(t *testing.T) {
	c := startCluster(t)
	l := startLoad(c.gwAddr)
	c.waitDecisions("before the outage", 200)
	storeErrors := func() float64 {
		return c.metric(c.workerAdmins[0], "joingate_worker_store_errors_total{") + c.metric(c.workerAdmins[1], "joingate_worker_store_errors_total{")
	}
	breakerOpen := func() bool {
		return c.metric(c.workerAdmins[0], "joingate_worker_store_breaker_state") == 1 || c.metric(c.workerAdmins[1], "joingate_worker_store_breaker_state") == 1
	}

	// Stopped: store errors, answered on_store_error (allow) at once.
	c.redis.Stop()
	if !testenv.Eventually(10*time.Second, func() bool { return storeErrors() >= 100 && breakerOpen() }) {
		t.Fatalf("Redis stopped: store errors %v, breaker open %v", storeErrors(), breakerOpen())
	}
	c.redis.Start(t)
	if !testenv.Eventually(10*time.Second, func() bool {
		return c.metric(c.workerAdmins[0], "joingate_worker_store_breaker_state") == 0 && c.metric(c.workerAdmins[1], "joingate_worker_store_breaker_state") == 0
	}) {
		t.Fatal("the breakers did not close after Redis came back")
	}
	stoppedErrors := storeErrors()

	// Paused (every command waits 2s): the request deadlines cut the calls
	// short, the breaker opens, the answers stay within the budget.
	if err := c.redis.Client.Do(context.Background(), "CLIENT", "PAUSE", "2000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, breakerOpen) {
		t.Fatal("Redis paused: the breaker did not open")
	}
	c.waitDecisions("after the pause", 400)
	got := l.stop()
	report(t, "stop Redis, then pause it 2s", got, fmt.Sprintf("store errors while stopped %v; fallbacks: timeout %v", stoppedErrors, c.fallbacks("timeout")))
	expectClean(t, got)
}

// A Redis that another client's slow command keeps busy (the worker
// slower than the decision timeout of issue 6): under load every answer
// stays JSON and in time (the gateway falls back at its timeout, the
// breakers open, then answer at once); and decisions that reach Redis
// after their deadline consume nothing. For the second, with the load
// stopped and the breakers closed, two callbacks of one applicant reach
// the busy Redis, fall back at the gateway, and run when Redis is free:
// that applicant has no key in Redis afterwards.
func TestChaosSlowRedis(t *testing.T) {
	c := startCluster(t)
	l := startLoad(c.gwAddr)
	c.waitDecisions("before", 200)
	breakers := func(state float64) bool {
		return c.metric(c.workerAdmins[0], "joingate_worker_store_breaker_state") == state &&
			c.metric(c.workerAdmins[1], "joingate_worker_store_breaker_state") == state
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
	before := testenv.ScriptCalls(t, c.redis.Client)
	done := testenv.BusyRedis(t, c.redis.URL, time.Second)
	timeouts := c.fallbacks("timeout")
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			_, _, a, err := tryCallback(c.gwAddr, joinCommand, fmt.Sprint("late-", i), joinBody("g-late", "late-applicant"))
			if err != nil || !a.allowed() {
				t.Errorf("callback %d while Redis is busy: %s, %v; want the fallback, allow", i, a, err)
			}
		})
	}
	wg.Wait()
	if got := c.fallbacks("timeout") - timeouts; got != 2 {
		t.Fatalf("%v timeout fallbacks for the 2 callbacks; want 2: they did not wait on Redis", got)
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
	c := startCluster(t)
	l := startLoad(c.gwAddr)
	c.waitDecisions("before SIGTERM", 200)

	// A worker stops: it drains, exits 0, and the other takes the load.
	c.workers[0].Cmd.Process.Signal(syscall.SIGTERM)
	if !c.workers[0].Wait(15*time.Second) || c.workers[0].Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("worker1 did not exit 0 after SIGTERM: %v", c.workers[0].Cmd.ProcessState)
	}
	c.waitDecisions("after the worker stopped", 200)
	mid := l.snapshot()
	if mid.NonJSON+mid.Late+mid.Dropped+mid.ConnRefused > 0 {
		t.Fatalf("a worker's SIGTERM cost answers: %s", mid)
	}

	// The gateway stops: every request it accepted is answered; after the
	// listener closes, new connections are refused (nothing else).
	c.gateway.Cmd.Process.Signal(syscall.SIGTERM)
	if !c.gateway.Wait(15*time.Second) || c.gateway.Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("gateway did not exit 0 after SIGTERM: %v", c.gateway.Cmd.ProcessState)
	}
	got := l.stop()
	report(t, "SIGTERM a worker, then the gateway", got, "worker exit 0, gateway exit 0")
	if got.NonJSON+got.Late+got.Dropped > 0 {
		t.Fatalf("load saw %s; want every accepted request answered in time", got)
	}
}
