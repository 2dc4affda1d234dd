// Package testenv starts the real servers that joingate's tests talk to: an
// in-process NATS server on a random port and a redis-server process on a
// unix socket in the test's temporary directory. Both stop with the test.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/launch"
	"github.com/joingate/joingate/pkg/redisconn"
)

// NATS starts an in-process NATS server on a random loopback port.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	return NATSWith(t, server.Options{MaxPayload: 1 << 20})
}

// NATSWith is NATS with opts (users and permissions, a port of its own:
// 0 is a random one), stopped when the test ends.
func NATSWith(t testing.TB, opts server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.NoLog, opts.NoSigs = "127.0.0.1", true, true
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start within 10s")
	}
	return ns
}

// Conn connects to ns and closes the connection when the test ends.
func Conn(t testing.TB, ns *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Redis is a redis-server process owned by one test.
type Redis struct {
	// URL is a unix:// URL of the socket, for joingate's configuration.
	URL    string
	Socket string
	// Port is the loopback TCP port, for tools that need one.
	Port   int
	Client *redis.Client
	proc   *Process
	bin    string
	dir    string
}

// StartRedis starts redis-server on a unix socket and a free loopback port,
// without persistence, and waits until it answers PING. A missing
// redis-server fails the test with what to install: it is never skipped.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := NewRedis(t)
	r.Start(t)
	return r
}

// NewRedis is StartRedis without the start: URL and Client are set, for
// processes that must start before Redis exists; Start starts it.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	bin := lookRedis(t, "redis-server")
	// A unix socket path must stay under ~100 bytes; TempDir may be long.
	sockDir, err := os.MkdirTemp("", "jg-redis")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	r := &Redis{Socket: filepath.Join(sockDir, "redis.sock"), bin: bin, dir: t.TempDir()}
	r.URL = "unix://" + r.Socket
	// The client joingate builds, so tests see production's timeouts.
	if r.Client, err = redisconn.New(r.URL, 250*time.Millisecond, 16); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Client.Close() })
	return r
}

// Start starts the server and waits until it answers: the first time on a
// free port, again (after Stop) on the same socket and port, its data gone.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	if r.Port != 0 {
		if err := r.start(t); err != nil {
			t.Fatal(err)
		}
		return
	}
	err := launch.OnFreeAddrs(1, func(addrs []string) error {
		r.Port, _ = strconv.Atoi(launch.Port(addrs[0]))
		return r.start(t)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (r *Redis) start(t testing.TB) (err error) {
	r.proc, err = startRedis(t, "redis-server", r.bin, fmt.Sprintf("127.0.0.1:%d", r.Port), r.dir,
		"--unixsocket", r.Socket, "--unixsocketperm", "700")
	return err
}

// Stop kills the server, for tests of a store outage.
func (r *Redis) Stop() {
	if r.proc != nil {
		r.proc.Stop(0)
	}
}

// Eventually polls cond every few milliseconds until it holds or timeout
// passes, and reports whether it held.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Value reads one series of reg; labels are the label values in the order
// the metric declares them.
func Value(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				got = append(got, l.GetValue())
			}
			if fmt.Sprint(got) != fmt.Sprint(labels) {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no series %s%q", name, labels)
	return 0
}

// Sum adds up the series of reg named name whose first label values are
// labels: all of them when labels is empty.
func Sum(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i, v := range labels {
				if i >= len(m.GetLabel()) || m.GetLabel()[i].GetValue() != v {
					continue series
				}
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			} else {
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// WantValue fails the test unless the series of reg named by name and
// labels has the value want.
func WantValue(t testing.TB, reg prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	if got := Value(t, reg, name, labels...); got != want {
		t.Fatalf("%s%q = %v, want %v", name, labels, got, want)
	}
}

// Run calls run in a goroutine with a context that stop cancels; stop then
// waits for run to return and fails the test on an error. stop runs when the
// test ends, if not before.
func Run(t testing.TB, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// busyScript keeps Redis's one thread busy for ARGV[1] µs, as a slow
// command of another client does.
const busyScript = `
local t = redis.call("TIME")
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
repeat
  t = redis.call("TIME")
until tonumber(t[1]) * 1000000 + tonumber(t[2]) - start > tonumber(ARGV[1])
return 0`

// BusyRedis keeps the Redis at url busy for d, from a connection of its
// own, and returns once Redis is busy (a PING gets no answer within
// 20ms); the channel gets the busy script's error when it ends.
func BusyRedis(t testing.TB, url string, d time.Duration) <-chan error {
	t.Helper()
	long, err := redisconn.New(url, d+10*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	probe, err := redisconn.New(url, 20*time.Millisecond, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	done := make(chan error, 1)
	go func() {
		defer long.Close()
		done <- long.Eval(context.Background(), busyScript, nil, d.Microseconds()).Err()
	}()
	if !Eventually(5*time.Second, func() bool { return probe.Ping(context.Background()).Err() != nil }) {
		t.Fatal("Redis never got busy")
	}
	return done
}

// ScriptCalls is the number of EVALSHA commands the Redis of c has run
// (INFO commandstats), polled until Redis answers.
func ScriptCalls(t testing.TB, c *redis.Client) int {
	t.Helper()
	var info string
	if !Eventually(10*time.Second, func() bool {
		var err error
		info, err = c.Info(context.Background(), "commandstats").Result()
		return err == nil
	}) {
		t.Fatal("INFO commandstats: no answer")
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return n
		}
	}
	return 0
}
