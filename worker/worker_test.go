package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/breaker"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/ratelimit/ratelimittest"
	"github.com/joingate/joingate/pkg/redisconn"
	"github.com/joingate/joingate/pkg/testenv"
)

type answer struct {
	ActionCode, ErrCode, NextCode int
	ErrMsg, ErrDlt                string
}

func testPolicy(t *testing.T, limits ...config.Limit) *policy.Set {
	t.Helper()
	cfg := config.Default()
	cfg.JoinGroup.Limits = limits
	p, err := policy.NewSet(cfg, "test:")
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
func startWorker(t *testing.T, ns *server.Server, store Store, p *policy.Set, mutate func(*Options)) (*Worker, *prometheus.Registry, func()) {
	t.Helper()
	w, reg, stop := runWorker(t, ns, store, p, mutate)
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) == nil }) {
		t.Fatalf("worker not ready: %v", w.Ready(context.Background()))
	}
	return w, reg, stop
}

// runWorker is startWorker without waiting until the worker is ready.
func runWorker(t *testing.T, ns *server.Server, store Store, p *policy.Set, mutate func(*Options)) (*Worker, *prometheus.Registry, func()) {
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
	return w, reg, testenv.Run(t, w.Run)
}

// request sends a join-group request as the gateway does, tagged, and
// returns the reply with its tag checked and taken off: every reply path
// of the worker's tests answers behind the tag.
func request(t *testing.T, nc *nats.Conn, body string, deadline time.Time) (*nats.Msg, error) {
	t.Helper()
	tag := rand.Uint64()
	m, err := nc.RequestMsg(tagged(callback.JoinGroupCommand, body, tag, deadline), time.Until(deadline))
	if err != nil {
		return m, err
	}
	got, answer, ok := natsconn.ParseReply(m.Data)
	if !ok || got != tag {
		t.Errorf("reply %q to a request tagged %x", m.Data, tag)
	}
	m.Data = answer
	return m, nil
}

// framed is the request a gateway sends for a callback of command.
func framed(command, body string, deadline time.Time) *nats.Msg {
	return &nats.Msg{
		Subject: natsconn.FramedSubject("joingate", command),
		Data:    natsconn.AppendFramed(nil, deadline, []byte("op-1"), []byte(body)),
	}
}

// tagged is the tagged request for a callback of command, as gateways send
// it.
func tagged(command, body string, tag uint64, deadline time.Time) *nats.Msg {
	return &nats.Msg{
		Subject: natsconn.TaggedSubject("joingate", command),
		Data:    natsconn.AppendTagged(nil, tag, deadline, []byte("op-1"), []byte(body)),
	}
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
		m, err := request(t, nc, joinBody("u1", "g1"), time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		a := decode(t, m)
		if refused := a.NextCode == 1; refused != (i == 2) {
			t.Fatalf("request %d: %+v", i+1, a)
		}
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_decisions_total", callback.JoinGroupCommand, "refuse", "rate_limit")

	// A body that is not a callback gets actionCode 1, not silence.
	m, err := request(t, nc, `{"groupID":5}`, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, m); a.ActionCode != 1 || a.ErrMsg == "" {
		t.Fatalf("invalid body answered %+v", a)
	}
	// Workers take only the commands they decide: any other falls back
	// at the gateway at once (which answers it at the edge anyway).
	if _, err = nc.Request("joingate.callbackAfterJoinGroupCommand", []byte(`{}`), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("other command: %v, want no responders", err)
	}
}

// The invitation and members-join callbacks are decided on their own
// subjects, with their own policies and metrics, the probation mute in the
// members-join answer.
func TestDecidesEveryWayIn(t *testing.T) {
	ns := testenv.NATS(t)
	cfg := config.Default()
	cfg.InviteToGroup.Limits = []config.Limit{{Name: "per-group", Key: config.KeyGroup, Limit: 3, Period: time.Hour, Burst: 3, ErrCode: 5101, ErrMsg: "x"}}
	cfg.MemberJoin.DenyMembers = []string{"troll"}
	cfg.MemberJoin.Probation.MuteFor = time.Hour
	p, err := policy.NewSet(cfg, "test:")
	if err != nil {
		t.Fatal(err)
	}
	_, reg, _ := startWorker(t, ns, ratelimit.NewMemory(), p, nil)
	nc := testenv.Conn(t, ns)
	ask := func(command, body string) []byte {
		t.Helper()
		m, err := nc.RequestMsg(framed(command, body, time.Now().Add(5*time.Second)), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return m.Data
	}
	if a := ask(callback.InviteCommand, callback.IMServerInvite("g", "", "a", "b")); !bytes.Equal(a, []byte(callback.AllowJSON)) {
		t.Fatalf("invitation of 2 of 3: %s", a)
	}
	if a := ask(callback.InviteCommand, callback.IMServerInvite("g", "", "c", "d")); !bytes.Contains(a, []byte(`"errCode":5101`)) {
		t.Fatalf("invitation of 2 more: %s", a)
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_rule_refusals_total", callback.InviteCommand, "enforce", "per-group")
	testenv.WantValue(t, reg, 1, "joingate_worker_decisions_total", callback.InviteCommand, "refuse", "rate_limit")
	before := time.Now().Add(time.Hour).UnixMilli()
	var joined struct {
		NextCode           int
		MemberCallbackList []struct {
			UserID      string
			MuteEndTime int64
		}
	}
	if err := json.Unmarshal(ask(callback.MembersJoinCommand, callback.IMServerMembersJoin("g", "a", "b")), &joined); err != nil {
		t.Fatal(err)
	}
	if joined.NextCode != 0 || len(joined.MemberCallbackList) != 2 || joined.MemberCallbackList[1].UserID != "b" ||
		joined.MemberCallbackList[0].MuteEndTime < before || joined.MemberCallbackList[0].MuteEndTime > time.Now().Add(time.Hour).UnixMilli() {
		t.Fatalf("members-join under probation: %+v", joined)
	}
	testenv.WantValue(t, reg, 2, "joingate_worker_probation_members_total")
	if a := ask(callback.MembersJoinCommand, callback.IMServerMembersJoin("g", "a", "troll")); !bytes.Contains(a, []byte(`"errCode":5200`)) {
		t.Fatalf("members-join with a denied member: %s", a)
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_decisions_total", callback.MembersJoinCommand, "refuse", "deny_member")
	if a := ask(callback.MembersJoinCommand, `{"groupID":"g","memberList":[]}`); !bytes.Contains(a, []byte(`"actionCode":1`)) {
		t.Fatalf("empty members-join: %s", a)
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
	m, err := request(t, nc, joinBody("late", "g"), time.Now().Add(5*time.Second))
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
	if n := testenv.Sum(t, reg, "joingate_worker_store_errors_total", callDecide); n != 0 {
		t.Fatalf("%v store errors, want 0", n)
	}
}

// hangs is a store whose calls end only with their context, with the
// error go-redis gives then.
type hangs struct{ Store }

func (hangs) Decide(ctx context.Context, _ *ratelimit.Query, _ *ratelimit.Answer) error {
	<-ctx.Done()
	return fmt.Errorf("%w: %w", ratelimit.ErrStore, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded})
}

// A hanging store costs a decision the store budget, not the request's
// deadline: the answer (on_store_error) comes while the gateway waits,
// and the failure is counted as a timeout.
func TestStoreBudget(t *testing.T) {
	ns := testenv.NATS(t)
	_, reg, _ := startWorker(t, ns, hangs{ratelimit.NewMemory()}, testPolicy(t, perApplicant(1)), func(o *Options) {
		o.StoreBudget = 50 * time.Millisecond
	})
	nc := testenv.Conn(t, ns)
	m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(2*time.Second))
	if err != nil {
		t.Fatalf("no answer within the request's deadline: %v; the store call outlasted the store budget", err)
	}
	if a := decode(t, m); a.NextCode != 0 {
		t.Fatalf("answer %+v, want allow (on_store_error)", a)
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_store_errors_total", callDecide, redisconn.CauseTimeout)
	testenv.WantValue(t, reg, 1, "joingate_worker_decisions_total", callback.JoinGroupCommand, "allow", "store_error")
}

func TestStoreErrorAnswersConfigured(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	_, reg, _ := startWorker(t, ns, ratelimit.NewRedis(srv.Client), testPolicy(t, perApplicant(5)), nil)
	nc := testenv.Conn(t, ns)
	srv.Stop()
	m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, m); a.ActionCode != 0 || a.NextCode != 0 {
		t.Fatalf("store down answered %+v, want allow (on_store_error: allow)", a)
	}
	if n := testenv.Sum(t, reg, "joingate_worker_store_errors_total", callDecide); n != 1 {
		t.Fatalf("%v decisions failed in the store, want 1", n)
	}
	testenv.WantValue(t, reg, 1, "joingate_worker_decisions_total", callback.JoinGroupCommand, "allow", "store_error")
}

// A worker whose store refuses it (wrong password) never joins the queue
// group: requests get "no responders" (the gateway falls back at once),
// readiness names the cause, and the probes count it.
func TestMisconfiguredStoreNeverJoins(t *testing.T) {
	ns := testenv.NATS(t)
	port := testenv.StartRedisServer(t, false, "--requirepass", "right")
	good, err := redisconn.New(fmt.Sprintf("redis://:right@127.0.0.1:%d", port), time.Second, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if !testenv.Eventually(10*time.Second, func() bool { return good.Ping(context.Background()).Err() == nil }) {
		t.Fatal("redis-server did not start")
	}
	bad, err := redisconn.New(fmt.Sprintf("redis://:wrong@127.0.0.1:%d", port), time.Second, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	w, reg, _ := runWorker(t, ns, ratelimit.NewRedis(bad), testPolicy(t, perApplicant(5)), func(o *Options) { o.ProbeInterval = 10 * time.Millisecond })
	probes := func() float64 {
		return testenv.Value(t, reg, "joingate_worker_store_errors_total", callProbe, redisconn.CauseAuth)
	}
	if !testenv.Eventually(5*time.Second, func() bool { return probes() >= 3 }) {
		t.Fatalf("%v failed probes with cause auth, want them counted", probes())
	}
	if err := w.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "auth") || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("Ready: %v; want the cause (auth) and Redis's words", err)
	}
	nc := testenv.Conn(t, ns)
	if _, err := request(t, nc, joinBody("u", "g"), time.Now().Add(5*time.Second)); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to the misconfigured worker: %v, want no responders", err)
	}
	testenv.WantValue(t, reg, 0, "joingate_worker_queue_group_member")
	testenv.WantValue(t, reg, 0, "joingate_worker_queue_group_transitions_total", joinedGroup)
}

// The queue group follows the store: a worker leaves while Redis is down
// (requests then find no responders), rejoins once Redis has answered for
// RejoinAfter, and a worker started while Redis is down joins when it comes.
func TestQueueGroupFollowsStore(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	w, reg, _ := startWorker(t, ns, ratelimit.NewRedis(srv.Client), testPolicy(t, perApplicant(100)), func(o *Options) {
		o.BreakerFailures, o.ProbeInterval, o.RejoinAfter = 3, 10*time.Millisecond, 100*time.Millisecond
	})
	nc := testenv.Conn(t, ns)
	ask := func() (answer, error) {
		m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(5*time.Second))
		if err != nil {
			return answer{}, err
		}
		return decode(t, m), nil
	}
	if a, err := ask(); err != nil || a.NextCode != 0 {
		t.Fatalf("with Redis up: %+v, %v", a, err)
	}
	srv.Stop()
	// Until the worker has left, answers are on_store_error (allow); then
	// there is nobody to answer. Never a timeout.
	var last error
	if !testenv.Eventually(5*time.Second, func() bool {
		a, err := ask()
		if err == nil && a.NextCode != 0 {
			t.Fatalf("store down answered %+v, want allow", a)
		}
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("store down: %v, want an answer or no responders", err)
		}
		last = err
		return errors.Is(err, nats.ErrNoResponders)
	}) {
		t.Fatalf("the worker stayed in the queue group with Redis down (last: %v)", last)
	}
	// The server may act on the first UNSUB before leave says so.
	if !testenv.Eventually(5*time.Second, func() bool {
		err := w.Ready(context.Background())
		return err != nil && strings.Contains(err.Error(), "out of the queue group")
	}) {
		t.Fatalf("Ready with Redis down: %v", w.Ready(context.Background()))
	}
	testenv.WantValue(t, reg, 0, "joingate_worker_queue_group_member")
	testenv.WantValue(t, reg, 1, "joingate_worker_queue_group_transitions_total", leftGroup)
	testenv.WantValue(t, reg, 1, "joingate_worker_store_breaker_state")

	srv.Start(t)
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) == nil }) {
		t.Fatalf("not back in the queue group after Redis came back: %v", w.Ready(context.Background()))
	}
	if a, err := ask(); err != nil || a.NextCode != 0 {
		t.Fatalf("after Redis came back: %+v, %v", a, err)
	}
	testenv.WantValue(t, reg, 2, "joingate_worker_decisions_total", callback.JoinGroupCommand, "allow", "passed")
	testenv.WantValue(t, reg, 2, "joingate_worker_queue_group_transitions_total", joinedGroup)
	testenv.WantValue(t, reg, 0, "joingate_worker_store_breaker_state")

	// Started while Redis is down: out until it comes.
	srv.Stop()
	late, _, _ := runWorker(t, ns, ratelimit.NewRedis(srv.Client), testPolicy(t), func(o *Options) { o.ProbeInterval = 10 * time.Millisecond })
	if !testenv.Eventually(5*time.Second, func() bool {
		err := late.Ready(context.Background())
		return err != nil && strings.Contains(err.Error(), "store failing")
	}) {
		t.Fatalf("worker started with Redis down: Ready %v", late.Ready(context.Background()))
	}
	srv.Start(t)
	if !testenv.Eventually(5*time.Second, func() bool { return late.Ready(context.Background()) == nil }) {
		t.Fatalf("worker started with Redis down did not join when it came: %v", late.Ready(context.Background()))
	}
}

// Rejoining waits for RejoinAfter of good probes, twice as long for each
// leave soon after a rejoin (a flapping store), and base again once the
// worker has stayed in.
func TestHysteresis(t *testing.T) {
	const base = time.Second
	h := hysteresis{base: base}
	now := time.Unix(1000, 0)
	step := func(d time.Duration) time.Time { now = now.Add(d); return now }
	if !h.probed(true, now) {
		t.Fatal("a new worker did not join at its first good probe")
	}
	h.joined(now)
	wantHold := func(hold time.Duration) {
		t.Helper()
		h.probed(false, step(time.Millisecond))
		start := step(time.Millisecond)
		if h.probed(true, start) && hold > 0 {
			t.Fatalf("rejoined at the first good probe, want after %s", hold)
		}
		if h.probed(true, step(hold-time.Millisecond)) {
			t.Fatalf("rejoined %s after the first good probe, before %s", hold-time.Millisecond, hold)
		}
		h.probed(false, step(time.Millisecond)) // a failure starts the wait again
		h.probed(true, step(time.Millisecond))
		if h.probed(true, step(hold-time.Millisecond)) {
			t.Fatal("a failed probe did not restart the wait")
		}
		if !h.probed(true, step(time.Millisecond)) {
			t.Fatalf("not rejoined after %s of good probes", hold)
		}
		h.joined(now)
	}
	h.left(step(time.Hour)) // first leave: base
	wantHold(base)
	for _, want := range []time.Duration{2 * base, 4 * base, 8 * base, 16 * base, maxRejoinAfter, maxRejoinAfter} {
		h.left(step(10 * time.Second)) // within flapWindow of the rejoin
		wantHold(want)
	}
	h.left(step(flapWindow)) // stayed in: base again
	wantHold(base)
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

// failing is a store whose decisions all fail; it counts them.
type failing struct {
	Store
	calls *atomic.Int64
}

func (f failing) Decide(context.Context, *ratelimit.Query, *ratelimit.Answer) error {
	f.calls.Add(1)
	return fmt.Errorf("%w: dial tcp 127.0.0.1:6379: connect: %w", ratelimit.ErrStore, syscall.ECONNREFUSED)
}

// While the store fails, the breaker opens after BreakerFailures decisions,
// and then decisions answer at once without calling the store; the worker
// leaves the queue group. Probes are out of the way here (one an hour),
// so only decisions count.
func TestStoreBreaker(t *testing.T) {
	ns := testenv.NATS(t)
	calls := new(atomic.Int64)
	w, reg, _ := startWorker(t, ns, failing{ratelimit.NewMemory(), calls}, testPolicy(t, perApplicant(100)), func(o *Options) {
		o.BreakerFailures, o.BreakerCooldown, o.ProbeInterval = 3, time.Hour, time.Hour
	})
	nc := testenv.Conn(t, ns)
	for i := range 3 {
		m, err := request(t, nc, joinBody("u", "g"), time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatalf("decision %d: %v", i+1, err)
		}
		if a := decode(t, m); a.NextCode != 0 {
			t.Fatalf("store down answered %+v, want allow", a)
		}
	}
	testenv.WantValue(t, reg, 3, "joingate_worker_store_errors_total", callDecide, redisconn.CauseRefused)
	testenv.WantValue(t, reg, 1, "joingate_worker_store_breaker_state")
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) != nil }) {
		t.Fatal("the worker stayed in the queue group with its breaker open")
	}
	if _, err := request(t, nc, joinBody("u", "g"), time.Now().Add(5*time.Second)); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request with the only worker out: %v, want no responders", err)
	}
	// What reaches the worker while it leaves is answered without a store call.
	var q ratelimit.Query
	for range 5 {
		if err := w.store.Decide(context.Background(), &q, &ratelimit.Answer{}); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("decision with the breaker open: %v, want ErrOpen", err)
		}
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("%d store calls, want 3: the open breaker let calls through", got)
	}
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
		msg := framed(callback.JoinGroupCommand, joinBody(fmt.Sprint("u", i), "g"), time.Now().Add(10*time.Second))
		msg.Reply = fmt.Sprint(inbox, ".", i)
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
// answered it already. In every form.
func TestExpiredGetsNoReply(t *testing.T) {
	past := time.Now().Add(-time.Millisecond)
	withHeaders := nats.NewMsg("joingate." + callback.JoinGroupCommand)
	withHeaders.Data = []byte(joinBody("u", "g"))
	natsconn.SetDeadline(withHeaders, past)
	for name, msg := range map[string]*nats.Msg{
		"tagged":  tagged(callback.JoinGroupCommand, joinBody("u", "g"), 1, past),
		"framed":  framed(callback.JoinGroupCommand, joinBody("u", "g"), past),
		"headers": withHeaders,
	} {
		t.Run(name, func(t *testing.T) {
			ns := testenv.NATS(t)
			mem := ratelimit.NewMemory()
			_, reg, _ := startWorker(t, ns, mem, testPolicy(t, perApplicant(1)), nil)
			nc := testenv.Conn(t, ns)
			if m, err := nc.RequestMsg(msg, 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
				t.Fatalf("expired request: reply %v, error %v; want no reply", m, err)
			}
			// The reply's timeout is no bound on when the worker counts it.
			if !testenv.Eventually(5*time.Second, func() bool {
				return testenv.Value(t, reg, "joingate_worker_requests_total", outcomeExpired) == 1
			}) {
				t.Fatalf("requests_total{expired} = %v, want 1", testenv.Value(t, reg, "joingate_worker_requests_total", outcomeExpired))
			}
			if mem.Len() != 0 {
				t.Fatal("an expired request reached the store")
			}
		})
	}
}

// Requests with headers, as gateways before the framed form sent them (and
// as one made by hand, without any), are decided as framed ones: workers
// upgraded first keep deciding for the gateways not yet upgraded.
func TestDecidesRequestsWithHeaders(t *testing.T) {
	ns := testenv.NATS(t)
	_, reg, _ := startWorker(t, ns, ratelimit.NewMemory(), testPolicy(t, perApplicant(2)), nil)
	nc := testenv.Conn(t, ns)
	withHeaders := nats.NewMsg("joingate." + callback.JoinGroupCommand)
	withHeaders.Data = []byte(joinBody("u1", "g1"))
	withHeaders.Header.Set(natsconn.HeaderOperationID, "op-old")
	natsconn.SetDeadline(withHeaders, time.Now().Add(5*time.Second))
	byHand := &nats.Msg{Subject: "joingate." + callback.JoinGroupCommand, Data: []byte(joinBody("u1", "g1"))}
	for i, msg := range []*nats.Msg{withHeaders, framed(callback.JoinGroupCommand, joinBody("u1", "g1"), time.Now().Add(5*time.Second)), byHand} {
		m, err := nc.RequestMsg(msg, 5*time.Second)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		// Two a period for u1, whatever the form: the third is refused.
		if refused := decode(t, m).NextCode == 1; refused != (i == 2) {
			t.Fatalf("request %d (%s): %s", i+1, msg.Subject, m.Data)
		}
	}
	testenv.WantValue(t, reg, 3, "joingate_worker_requests_total", outcomeDecided)
}

// A tagged request, as gateways send it, gets its tag back in front of the
// answer and counts against the quota the other forms count against; one
// its frame does not describe gets a failure behind its tag (a tag of 0
// when it is too short to hold one) and reaches no store.
func TestTaggedRequests(t *testing.T) {
	ns := testenv.NATS(t)
	mem := ratelimit.NewMemory()
	_, reg, _ := startWorker(t, ns, mem, testPolicy(t, perApplicant(2)), nil)
	nc := testenv.Conn(t, ns)
	reply := func(m *nats.Msg) (uint64, answer) {
		t.Helper()
		tag, data, ok := natsconn.ParseReply(m.Data)
		if !ok {
			t.Fatalf("reply %q has no tag", m.Data)
		}
		return tag, decode(t, &nats.Msg{Data: data})
	}
	deadline := time.Now().Add(5 * time.Second)
	for i, msg := range []*nats.Msg{
		tagged(callback.JoinGroupCommand, joinBody("u1", "g1"), 0xfeed, deadline),
		framed(callback.JoinGroupCommand, joinBody("u1", "g1"), deadline),
		tagged(callback.JoinGroupCommand, joinBody("u1", "g1"), 1<<63|7, deadline),
	} {
		m, err := nc.RequestMsg(msg, 5*time.Second)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		var a answer
		switch i {
		case 1:
			a = decode(t, m)
		default:
			tag, got := reply(m)
			if want := binary.BigEndian.Uint64(msg.Data); tag != want {
				t.Fatalf("request %d: reply tagged %x, want %x", i+1, tag, want)
			}
			a = got
		}
		// Two a period for u1, whatever the form: the third is refused.
		if refused := a.NextCode == 1; refused != (i == 2) {
			t.Fatalf("request %d (%s): %+v", i+1, msg.Subject, a)
		}
	}
	good := tagged(callback.JoinGroupCommand, joinBody("u", "g"), 0xabc, deadline).Data
	for i, c := range []struct {
		data []byte
		tag  uint64
	}{{nil, 0}, {good[:7], 0}, {good[:16], 0xabc}, {append(good[:16:16], 0x7f, 'x'), 0xabc}} {
		m, err := nc.Request(natsconn.TaggedSubject("joingate", callback.JoinGroupCommand), c.data, 5*time.Second)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if tag, a := reply(m); tag != c.tag || a.ActionCode != 1 || !strings.Contains(a.ErrMsg, "framed request") {
			t.Fatalf("frame %d answered %x %+v, want a failure that says why behind tag %x", i, tag, a, c.tag)
		}
	}
	testenv.WantValue(t, reg, 3, "joingate_worker_requests_total", outcomeDecided)
	testenv.WantValue(t, reg, 4, "joingate_worker_requests_total", outcomeInvalid)
	if mem.Len() != 1 {
		t.Fatalf("%d keys in the store, want u1's alone", mem.Len())
	}
}

// A framed request that its frame does not describe is answered with a
// failure, counted invalid, and reaches no store.
func TestMalformedFrame(t *testing.T) {
	ns := testenv.NATS(t)
	mem := ratelimit.NewMemory()
	_, reg, _ := startWorker(t, ns, mem, testPolicy(t, perApplicant(1)), nil)
	nc := testenv.Conn(t, ns)
	good := framed(callback.JoinGroupCommand, joinBody("u", "g"), time.Now().Add(5*time.Second)).Data
	for i, data := range [][]byte{nil, good[:8], append(good[:8:8], 0x7f, 'x')} {
		m, err := nc.Request(natsconn.FramedSubject("joingate", callback.JoinGroupCommand), data, 5*time.Second)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if a := decode(t, m); a.ActionCode != 1 || !strings.Contains(a.ErrMsg, "framed request") {
			t.Fatalf("frame %d answered %s, want a failure that says why", i, m.Data)
		}
	}
	testenv.WantValue(t, reg, 3, "joingate_worker_requests_total", outcomeInvalid)
	if mem.Len() != 0 {
		t.Fatal("a malformed frame reached the store")
	}
}

// pings is a store whose probes fail while down is set.
type pings struct {
	Store
	down *atomic.Bool
}

func (p pings) Ping(ctx context.Context) error {
	if p.down.Load() {
		return fmt.Errorf("%w: ping: %w", ratelimit.ErrStore, syscall.ECONNREFUSED)
	}
	return p.Store.Ping(ctx)
}

// A worker that leaves the queue group while NATS is away is not a member
// once NATS is back: requests find no responders instead of waiting for a
// subscriber that drops them.
func TestLeaveWhileNATSIsAway(t *testing.T) {
	port := testenv.FreePort(t)
	serve := func() *server.Server {
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats server did not start")
		}
		t.Cleanup(ns.Shutdown)
		return ns
	}
	ns := serve()
	down := new(atomic.Bool)
	nc, err := natsconn.Connect(ns.ClientURL(), nil, "worker", natsconn.Security{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w, reg, _ := startWorker(t, ns, pings{ratelimit.NewMemory(), down}, testPolicy(t), func(o *Options) {
		o.Conn, o.ProbeInterval, o.BreakerFailures, o.RejoinAfter = nc, 10*time.Millisecond, 2, time.Hour
	})
	ns.Shutdown()
	if !testenv.Eventually(5*time.Second, func() bool { return !nc.IsConnected() }) {
		t.Fatal("still connected after the server stopped")
	}
	down.Store(true)
	if !testenv.Eventually(5*time.Second, func() bool { return testenv.Value(t, reg, "joingate_worker_queue_group_member") == 0 }) {
		t.Fatal("the worker did not leave the queue group")
	}
	ns = serve()
	if !testenv.Eventually(10*time.Second, nc.IsConnected) {
		t.Fatal("the worker did not reconnect")
	}
	client := testenv.Conn(t, ns)
	if _, err := request(t, client, joinBody("u", "g"), time.Now().Add(5*time.Second)); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after NATS came back: %v, want no responders: the server still counts the worker a member", err)
	}
	if err := w.Ready(context.Background()); err == nil {
		t.Fatal("worker ready while its store fails")
	}
}

// A NATS connection closed for good (nats.go gives up after the same
// authentication error twice) ends Run with an error: only a restart
// brings the worker back, and an orchestrator restarts a process that
// exits, not one that waits.
func TestRunEndsWhenNATSClosed(t *testing.T) {
	ns := testenv.NATS(t)
	nc := testenv.Conn(t, ns)
	opts := DefaultOptions()
	opts.Conn, opts.Store, opts.Policy, opts.ProbeInterval = nc, ratelimit.NewMemory(), testPolicy(t), 10*time.Millisecond
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- w.Run(ctx) }()
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) == nil }) {
		t.Fatal("worker not ready")
	}
	nc.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "nats connection closed") {
			t.Fatalf("Run returned %v, want the closed connection", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after its NATS connection closed")
	}
}
