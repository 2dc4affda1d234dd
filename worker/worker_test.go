package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/ratelimit/ratelimittest"
	"github.com/joingate/joingate/pkg/testenv"
)

type answer struct {
	ActionCode, ErrCode, NextCode int
	ErrMsg, ErrDlt                string
}

func testPolicy(t *testing.T, limits ...config.Limit) *policy.JoinGroup {
	t.Helper()
	cfg := config.Default()
	cfg.JoinGroup.Limits = limits
	p, err := policy.New(cfg.JoinGroup, cfg.Worker, "test:")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func perApplicant(n int) config.Limit {
	return config.Limit{Name: "per-applicant", Key: config.KeyApplicant, Limit: n, Period: time.Hour, Burst: n, ErrCode: 5001, ErrMsg: "too many join requests"}
}

// startWorker runs a worker on ns and returns it, its registry and a stop
// function that ends Run and waits for it (also called when the test ends).
func startWorker(t *testing.T, ns *server.Server, store Store, p *policy.JoinGroup, mutate func(*Options)) (*Worker, *prometheus.Registry, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := DefaultOptions()
	opts.Conn = testenv.Conn(t, ns)
	opts.Store, opts.Policy, opts.Registerer = store, p, reg
	if mutate != nil {
		mutate(&opts)
	}
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Run(t, w.Run)
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) == nil }) {
		t.Fatalf("worker not ready: %v", w.Ready(context.Background()))
	}
	return w, reg, stop
}

// request sends a join-group request as the gateway does.
func request(t *testing.T, nc *nats.Conn, body string, deadline time.Time) (*nats.Msg, error) {
	t.Helper()
	msg := nats.NewMsg("joingate." + callback.JoinGroupCommand)
	msg.Data = []byte(body)
	msg.Header.Set(natsconn.HeaderOperationID, "op-1")
	natsconn.SetDeadline(msg, deadline)
	return nc.RequestMsg(msg, time.Until(deadline))
}

// joinBody is the body IMServer posts, byte for byte (groupType "\u0002").
func joinBody(applicant, group string) string {
	return callback.IMServerJoinGroup(group, applicant, "hi")
}

func decode(t *testing.T, m *nats.Msg) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		t.Fatalf("reply %q is not JSON: %v", m.Data, err)
	}
	return a
}

func TestDecides(t *testing.T) {
	ns := testenv.NATS(t)
	_, reg, _ := startWorker(t, ns, ratelimit.NewMemory(), testPolicy(t, perApplicant(2)), nil)
	nc := testenv.Conn(t, ns)
	for i := range 3 {
		m, err := request(t, nc, joinBody("u1", "g1"), time.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		a := decode(t, m)
		if refused := a.NextCode == 1; refused != (i == 2) {
			t.Fatalf("request %d: %+v", i+1, a)
		}
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_decisions_total", "refuse", "rate_limit")

	// A body that is not a callback gets actionCode 1, not silence.
	m, err := request(t, nc, `{"groupID":5}`, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, m); a.ActionCode != 1 || a.ErrMsg == "" {
		t.Fatalf("invalid body answered %+v", a)
	}
	// Another command on the subject is allowed.
	m, err = nc.Request("joingate.callbackAfterJoinGroupCommand", []byte(`{}`), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, m); a.ActionCode != 0 || a.NextCode != 0 {
		t.Fatalf("other command answered %+v", a)
	}
}

// A request whose deadline passed while it waited behind a slow one is
// dropped without touching the store: its quota stays intact.
func TestExpiredRequestConsumesNothing(t *testing.T) {
	ns := testenv.NATS(t)
	mem := ratelimit.NewMemory()
	g := ratelimittest.NewGate(mem)
	_, reg, _ := startWorker(t, ns, g, testPolicy(t, perApplicant(1)), func(o *Options) { o.Concurrency = 1 })
	nc := testenv.Conn(t, ns)

	var wg sync.WaitGroup
	wg.Go(func() { request(t, nc, joinBody("blocker", "g"), time.Now().Add(5*time.Second)) })
	<-g.Entered // the only decision slot is taken
	_, err := request(t, nc, joinBody("late", "g"), time.Now().Add(50*time.Millisecond))
	if !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("late request: %v, want a timeout", err)
	}
	g.Open()
	wg.Wait()
	expired := func() float64 { return testenv.Value(t, reg, "joingate_worker_requests_total", outcomeExpired) }
	if !testenv.Eventually(5*time.Second, func() bool { return expired() == 1 }) {
		t.Fatalf("expired requests: %v, want 1", expired())
	}
	// "late" still has its one request.
	m, err := request(t, nc, joinBody("late", "g"), time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, m); a.NextCode != 0 {
		t.Fatalf("late's first real request refused: %+v: the expired one consumed quota", a)
	}
	if mem.Len() != 2 {
		t.Fatalf("store holds %d keys, want 2 (blocker and late once)", mem.Len())
	}
}

// timesOut is a store that answers when the call's deadline has passed,
// with the error go-redis gives then: a socket read cut at the deadline is
// an "i/o timeout", not context.DeadlineExceeded.
type timesOut struct{ Store }

func (timesOut) Decide(ctx context.Context, _ *ratelimit.Query, _ *ratelimit.Answer) error {
	<-ctx.Done()
	return fmt.Errorf("%w: read unix @->/run/redis.sock: i/o timeout", ratelimit.ErrStore)
}

// A store call that ends after the request's deadline, whatever its error,
// means the gateway has answered: counted as expired, not as a store
// failure, and not answered.
func TestDeadlinePassesInStore(t *testing.T) {
	ns := testenv.NATS(t)
	_, reg, _ := startWorker(t, ns, timesOut{ratelimit.NewMemory()}, testPolicy(t, perApplicant(1)), nil)
	nc := testenv.Conn(t, ns)
	if m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(50*time.Millisecond)); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("reply %v, error %v; want none", m, err)
	}
	expired := func() float64 { return testenv.Value(t, reg, "joingate_worker_requests_total", outcomeExpired) }
	if !testenv.Eventually(5*time.Second, func() bool { return expired() == 1 }) {
		t.Fatalf("expired requests: %v, want 1", expired())
	}
	testenv.WantValue(t, reg, 0, "joingate_worker_requests_total", outcomeDecided)
	testenv.WantValue(t, reg, 0, "joingate_worker_store_errors_total")
}

func TestStoreErrorAnswersConfigured(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	_, reg, _ := startWorker(t, ns, ratelimit.NewRedis(srv.Client), testPolicy(t, perApplicant(5)), nil)
	nc := testenv.Conn(t, ns)
	srv.Stop()
	m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, m); a.ActionCode != 0 || a.NextCode != 0 {
		t.Fatalf("store down answered %+v, want allow (on_store_error: allow)", a)
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_store_errors_total")
	testenv.WantValue(t, reg, 1, "joingate_worker_decisions_total", "allow", "store_error")
}

func TestReadyFollowsStore(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	w, _, _ := startWorker(t, ns, ratelimit.NewRedis(srv.Client), testPolicy(t), nil)
	srv.Stop()
	if err := w.Ready(context.Background()); err == nil {
		t.Fatal("worker ready with Redis down")
	}
}

// Draining answers what was received before the stop.
func TestDrainAnswersInFlight(t *testing.T) {
	ns := testenv.NATS(t)
	g := ratelimittest.NewGate(ratelimit.NewMemory())
	w, _, stop := startWorker(t, ns, g, testPolicy(t, perApplicant(5)), nil)
	nc := testenv.Conn(t, ns)
	replies := make(chan error, 1)
	go func() {
		m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(5*time.Second))
		if err == nil && decode(t, m).NextCode != 0 {
			err = fmt.Errorf("refused: %s", m.Data)
		}
		replies <- err
	}()
	<-g.Entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }() // stop while the request is being decided
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) != nil }) {
		t.Fatal("draining worker still ready")
	}
	g.Open()
	if err := <-replies; err != nil {
		t.Fatalf("in-flight request during drain: %v", err)
	}
	<-stopped
}

func TestOptionsValidate(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New with empty options succeeded")
	}
}

// While Redis is down the breaker answers at once without calling it, and
// closes again by itself once Redis is back.
func TestStoreBreaker(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	_, reg, _ := startWorker(t, ns, ratelimit.NewRedis(srv.Client), testPolicy(t, perApplicant(100)), func(o *Options) {
		o.BreakerFailures, o.BreakerCooldown = 3, 200*time.Millisecond
	})
	nc := testenv.Conn(t, ns)
	ask := func() answer {
		t.Helper()
		m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return decode(t, m)
	}
	storeCalls := func() uint64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "joingate_worker_store_duration_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("no store histogram")
		return 0
	}
	ask()
	srv.Stop()
	for range 3 {
		if a := ask(); a.NextCode != 0 {
			t.Fatalf("store down answered %+v, want allow", a)
		}
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_store_breaker_state")
	before := storeCalls()
	for range 5 {
		ask()
	}
	if got := storeCalls(); got != before {
		t.Fatalf("%d store calls while the breaker was open, want 0", got-before)
	}
	testenv.WantValue(t, reg, 8, "joingate_worker_decisions_total", "allow", "store_error")

	srv.Start(t)
	if !testenv.Eventually(5*time.Second, func() bool {
		ask()
		return testenv.Value(t, reg, "joingate_worker_store_breaker_state") == 0
	}) {
		t.Fatal("breaker did not close after Redis came back")
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_store_breaker_transitions_total", "closed")
}

// Requests queued behind a busy worker when it is told to stop are all
// answered before Run returns.
func TestDrainAnswersQueued(t *testing.T) {
	ns := testenv.NATS(t)
	g := ratelimittest.NewGate(ratelimit.NewMemory())
	_, _, stop := startWorker(t, ns, g, testPolicy(t, perApplicant(100)), func(o *Options) { o.Concurrency = 1 })
	nc := testenv.Conn(t, ns)
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox + ".*")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		msg := nats.NewMsg("joingate." + callback.JoinGroupCommand)
		msg.Reply = fmt.Sprint(inbox, ".", i)
		msg.Data = []byte(joinBody(fmt.Sprint("u", i), "g"))
		natsconn.SetDeadline(msg, time.Now().Add(10*time.Second))
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	// Once the server has seen all five, it has routed them to the worker
	// ahead of anything the worker sends after this point.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	<-g.Entered // one is being decided, the others wait in the worker
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	g.Open()
	for i := range n {
		m, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("reply %d of %d: %v: a request received before the stop was not answered", i+1, n, err)
		}
		if a := decode(t, m); a.NextCode != 0 {
			t.Fatalf("refused: %s", m.Data)
		}
	}
	<-stopped
}

// A request past its deadline gets no reply at all: the gateway has
// answered it already.
func TestExpiredGetsNoReply(t *testing.T) {
	ns := testenv.NATS(t)
	mem := ratelimit.NewMemory()
	_, reg, _ := startWorker(t, ns, mem, testPolicy(t, perApplicant(1)), nil)
	nc := testenv.Conn(t, ns)
	msg := nats.NewMsg("joingate." + callback.JoinGroupCommand)
	msg.Data = []byte(joinBody("u", "g"))
	natsconn.SetDeadline(msg, time.Now().Add(-time.Millisecond))
	if m, err := nc.RequestMsg(msg, 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("expired request: reply %v, error %v; want no reply", m, err)
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_requests_total", outcomeExpired)
	if mem.Len() != 0 {
		t.Fatal("an expired request reached the store")
	}
}
