package worker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
)

// Two workers with their memory of refusals, and one without, share one
// Redis: a refused
// applicant is refused again from memory, without a store call, and an
// operator's change made through one worker (allow-listing the applicant,
// or resetting its quota) followed by Invalidate is seen by the very next
// callback, whichever worker takes it. Ten rounds, so that both workers
// answer from memory and take the callback after the change.
func TestRefusalMemoryAcrossWorkers(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	red := ratelimit.NewRedis(srv.Client)
	p := testPolicy(t, perApplicant(1))
	withMemory := func(o *Options) { o.RefusalMemory = 1000 }
	a, regA, _ := startWorker(t, ns, red, p, withMemory)
	_, regB, _ := startWorker(t, ns, red, p, withMemory)
	// A worker without a memory (worker.refusal_memory 0) broadcasts the
	// changes made through it all the same.
	c, _, _ := startWorker(t, ns, red, p, func(o *Options) { o.RefusalMemory = 0 })
	nc := testenv.Conn(t, ns)
	ctx := context.Background()
	join := func(applicant string) answer { t.Helper(); return joinG1(t, nc, applicant) }
	hits := func() float64 {
		return testenv.Value(t, regA, "joingate_worker_refusal_memory_hits_total") +
			testenv.Value(t, regB, "joingate_worker_refusal_memory_hits_total")
	}
	for round := range 10 {
		applicant := fmt.Sprint("flooder-", round)
		if got := join(applicant); got.ErrCode != 0 {
			t.Fatalf("round %d: first application refused: %+v", round, got)
		}
		for i := range 12 {
			if got := join(applicant); got.ErrCode != 5001 {
				t.Fatalf("round %d: application %d: %+v, want 5001", round, i+2, got)
			}
		}
		if round%2 == 0 {
			keys := p.Keys()
			if err := red.ListAdd(ctx, keys.Index(policy.ListAllowApplicants), applicant, keys.Flag(policy.ListAllowApplicants, applicant)); err != nil {
				t.Fatal(err)
			}
		} else {
			check, err := p.JoinGroup.Rule("per-applicant", applicant, "")
			if err != nil {
				t.Fatal(err)
			}
			if err := red.Reset(ctx, check.Key); err != nil {
				t.Fatal(err)
			}
		}
		through := a
		if round%3 == 2 {
			through = c
		}
		if err := through.Invalidate(ctx); err != nil {
			t.Fatal(err)
		}
		if got := join(applicant); got.ErrCode != 0 {
			t.Fatalf("round %d: refused after the operator's change was broadcast: %+v", round, got)
		}
	}
	// Of 120 refusals, the workers with a memory take about 80 and ask
	// Redis once a round each: about 60 come from memory.
	if n := hits(); n < 30 {
		t.Fatalf("%v refusals from memory of 120", n)
	}
	// B clears when it next decides after a broadcast (pending broadcasts
	// together): at most once per broadcast, at least once.
	if n := testenv.Value(t, regB, "joingate_worker_refusal_memory_clears_total", "broadcast"); n < 1 || n > 10 {
		t.Fatalf("worker B cleared its memory %v times on 10 broadcasts", n)
	}
}

// A worker with its memory holds the dynamic lists whole: a deny-listed
// applicant is refused from memory, the list entry's key never asked of
// Redis, and taking the entry off (through the store, then Invalidate, as
// the admin API does) is seen by the very next callback, every time.
func TestHeldListsDecideFromMemory(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	red := ratelimit.NewRedis(srv.Client)
	p := testPolicy(t, perApplicant(1000))
	w, reg, _ := startWorker(t, ns, red, p, func(o *Options) { o.RefusalMemory = 1000 })
	nc := testenv.Conn(t, ns)
	ctx := context.Background()
	k := p.Keys()
	join := func(applicant string) answer { t.Helper(); return joinG1(t, nc, applicant) }
	hits := func() float64 { return testenv.Value(t, reg, "joingate_worker_refusal_memory_hits_total") }
	deny := policy.ListDenyApplicants
	for round := range 5 {
		troll := fmt.Sprint("troll-", round)
		if err := red.ListAdd(ctx, k.Index(deny), troll, k.Flag(deny, troll)); err != nil {
			t.Fatal(err)
		}
		if err := w.Invalidate(ctx); err != nil {
			t.Fatal(err)
		}
		before := hits()
		// The lists load in the background after a change: Redis answers
		// until they are held, then memory does.
		if !testenv.Eventually(5*time.Second, func() bool {
			if got := join(troll); got.ErrCode != 5002 {
				t.Fatalf("round %d: deny-listed %s: %+v, want 5002", round, troll, got)
			}
			return hits() > before
		}) {
			t.Fatalf("round %d: the deny list was never answered from memory", round)
		}
		if err := red.ListRemove(ctx, k.Index(deny), troll, k.Flag(deny, troll)); err != nil {
			t.Fatal(err)
		}
		if err := w.Invalidate(ctx); err != nil {
			t.Fatal(err)
		}
		if got := join(troll); got.ErrCode != 0 {
			t.Fatalf("round %d: %s right after leaving the deny list: %+v, want allowed", round, troll, got)
		}
	}
}

// The held lists are every dynamic list of every command: an entry of
// each is among the keys the memory loads, under the key a decision asks.
func TestHeldListsAreEveryList(t *testing.T) {
	ns := testenv.NATS(t)
	red := ratelimit.NewRedis(testenv.StartRedis(t).Client)
	p := testPolicy(t)
	w, _, _ := startWorker(t, ns, red, p, func(o *Options) { o.RefusalMemory = 1000 })
	ctx := context.Background()
	k := p.Keys()
	want := map[string]bool{}
	for _, list := range policy.Lists {
		id := "id-" + list
		if err := red.ListAdd(ctx, k.Index(list), id, k.Flag(list, id)); err != nil {
			t.Fatal(err)
		}
		want[k.Flag(list, id)] = true
	}
	keys, err := w.listKeys(red)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, key := range keys {
		got[key] = true
	}
	if !maps.Equal(got, want) || len(keys) != len(policy.Lists) {
		t.Fatalf("held list keys %q, want one per list: %v", keys, slices.Sorted(maps.Keys(want)))
	}
}

// joinG1 asks for applicant's application to g1 and returns the answer.
func joinG1(t *testing.T, nc *nats.Conn, applicant string) answer {
	t.Helper()
	m, err := request(t, nc, joinBody(applicant, "g1"), time.Now().Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, m)
}

// A worker's memory refuses nothing a shadow rule or a dry run would
// refuse, and without RefusalMemory there is none.
func TestRefusalMemoryNeverShadow(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	shadow := perApplicant(1)
	shadow.Shadow = true
	_, reg, _ := startWorker(t, ns, ratelimit.NewRedis(srv.Client), testPolicy(t, shadow), func(o *Options) { o.RefusalMemory = 1000 })
	nc := testenv.Conn(t, ns)
	for i := range 5 {
		m, err := request(t, nc, joinBody("u1", "g1"), time.Now().Add(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, m); got.ErrCode != 0 {
			t.Fatalf("application %d under a shadow rule: %+v", i+1, got)
		}
	}
	// The shadow rule's refusals may be remembered (to be reported beside an
	// enforcing refusal from memory); none answered a callback.
	if n := testenv.Value(t, reg, "joingate_worker_refusal_memory_hits_total"); n != 0 {
		t.Fatalf("%v callbacks answered from memory under a shadow rule", n)
	}
}

// A worker whose NATS user may not subscribe to the broadcast could never
// clear its memory: it turns the memory off, says so, and asks Redis for
// every decision. One that may not publish it fails the operator's change
// rather than report a broadcast nobody got.
func TestRefusalMemoryOffWithoutPermission(t *testing.T) {
	ns := testenv.NATSWith(t, server.Options{
		Users: []*server.User{
			{Username: "worker", Password: "pw", Permissions: &server.Permissions{
				Subscribe: &server.SubjectPermission{Allow: []string{"joingate.>", "_INBOX.>"}},
				Publish:   &server.SubjectPermission{Allow: []string{"joingate.>", "_INBOX.>"}},
			}},
			// May hear the broadcast, not send it.
			{Username: "listener", Password: "pw", Permissions: &server.Permissions{
				Subscribe: &server.SubjectPermission{Allow: []string{"joingate.>", "_INBOX.>", "joingate_invalidate"}},
				Publish:   &server.SubjectPermission{Allow: []string{"joingate.>", "_INBOX.>"}},
			}},
		},
	})
	connectAs := func(user string) *nats.Conn {
		url := strings.Replace(ns.ClientURL(), "nats://", "nats://"+user+":pw@", 1)
		nc, err := natsconn.Connect(url, nil, "test", natsconn.Security{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	connect := func() *nats.Conn { return connectAs("worker") }
	log, logs := testenv.NewLogger(t)
	srv := testenv.StartRedis(t)
	reg := prometheus.NewRegistry()
	opts := DefaultOptions()
	opts.Conn, opts.Store, opts.Policy, opts.Registerer = connect(), ratelimit.NewRedis(srv.Client), testPolicy(t, perApplicant(1)), reg
	opts.RefusalMemory, opts.Logger = 1000, log
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, w.Run)
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) == nil }) {
		t.Fatalf("worker not ready: %v", w.Ready(context.Background()))
	}
	// NATS refuses the subscription asynchronously; the worker says so.
	if !testenv.Eventually(5*time.Second, func() bool { return len(logs.Lines("memory of refusals off", "joingate_invalidate")) == 1 }) {
		t.Fatal("no error line says the memory is off and why")
	}
	nc := connect()
	for i := range 5 {
		m, err := request(t, nc, joinBody("u1", "g1"), time.Now().Add(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, m); (got.ErrCode == 5001) != (i > 0) {
			t.Fatalf("application %d: %+v", i+1, got)
		}
	}
	if n := testenv.Value(t, reg, "joingate_worker_refusal_memory_hits_total"); n != 0 {
		t.Fatalf("%v refusals from a memory that cannot be cleared", n)
	}

	// A worker that may not send the broadcast says so to the operator's
	// change instead of reporting success.
	opts.Conn, opts.Registerer, opts.Logger = connectAs("listener"), prometheus.NewRegistry(), nil
	listener, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := listener.Invalidate(context.Background()); err == nil || !strings.Contains(err.Error(), "may not publish") {
		t.Fatalf("Invalidate by a worker that may not publish the broadcast: %v", err)
	}
}

// catchUpMemory is a memory listening for broadcasts on "jg", its Redis,
// and a function that sends a broadcast (as an operator's change does) and
// returns once the memory has it pending.
func catchUpMemory(t *testing.T) (*memory, *ratelimit.Redis, func()) {
	ns := testenv.NATS(t)
	red := ratelimit.NewRedis(testenv.StartRedis(t).Client)
	ctl := testenv.Conn(t, ns)
	m := newMemory(red, 100, testenv.Conn(t, ns), "jg", prometheus.NewRegistry())
	if err := m.listen(); err != nil {
		t.Fatal(err)
	}
	// The subscription is sent asynchronously: a broadcast from another
	// connection before NATS has it would be lost. (A worker has the same
	// order through the flush after its queue subscription.)
	if err := m.nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	bcast := func() {
		sub := m.sub.Load()
		before, _, _ := sub.Pending()
		if err := broadcast(context.Background(), ctl, "jg"); err != nil {
			t.Fatal(err)
		}
		if !testenv.Eventually(5*time.Second, func() bool { n, _, _ := sub.Pending(); return n > before }) {
			t.Fatal("broadcast not received")
		}
	}
	return m, red, bcast
}

// A broadcast that arrives between catchUp's Clear and its drain is not
// drained with the one before: it clears again, so that what the memory
// learnt in between (here, from a decision made concurrently) does not
// survive the operator's change behind it.
func TestCatchUpKeepsLaterBroadcast(t *testing.T) {
	m, red, bcast := catchUpMemory(t)
	ctx := context.Background()
	q := ratelimit.Query{Checks: []ratelimit.Check{{Key: "k", Limit: ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}
	decide := func() (ratelimit.Answer, uint64) {
		var a ratelimit.Answer
		if err := m.Decide(ctx, &q, &a); err != nil {
			t.Fatal(err)
		}
		return a, m.Stats().Hits
	}
	change := func() { // an operator's quota reset, then its broadcast
		if err := red.Reset(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		bcast()
	}
	decide() // admitted: memory learns that k refuses for an hour
	change() // B1
	m.afterClear = func() {
		m.afterClear = nil
		decide() // a concurrent decision: admitted, learnt again
		change() // B2: arrives before the drain
	}
	m.catchUp() // clears for B1, drains B1 and B2
	m.catchUp() // nothing pending
	a, hits := decide()
	var truth ratelimit.Answer
	peek := q
	peek.Mode = ratelimit.Peek
	if err := red.Decide(ctx, &peek, &truth); err != nil {
		t.Fatal(err)
	}
	if hits > 0 && !a.Admitted(&q) && truth.Admitted(&peek) {
		t.Fatalf("refused from memory after the reset's broadcast (B2 drained without a Clear); Redis admits: %+v", truth)
	}
}

// The same window with the lists held: a load started by a decision made
// between the Clear and the drain reads the lists before the operator's
// next change; that change's broadcast clears them again, so the removed
// deny entry decides nothing.
func TestCatchUpKeepsLaterBroadcastHeldLists(t *testing.T) {
	m, red, bcast := catchUpMemory(t)
	p := testPolicy(t, perApplicant(1000))
	w := &Worker{}
	w.policy.Store(p)
	m.HoldLists(w.listKeys(red))
	ctx := context.Background()
	k := p.Keys()
	deny := policy.ListDenyApplicants
	q := ratelimit.Query{Guards: []string{k.Flag(deny, "x")}}
	q.Checks = []ratelimit.Check{{Key: "c", Limit: ratelimit.Limit{Rate: 1000, Period: time.Hour, Burst: 1000}}}
	decide := func() ratelimit.Answer {
		var a ratelimit.Answer
		if err := m.Decide(ctx, &q, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	if err := red.ListAdd(ctx, k.Index(deny), "x", k.Flag(deny, "x")); err != nil { // C1
		t.Fatal(err)
	}
	bcast() // B1
	m.afterClear = func() {
		m.afterClear = nil
		decide() // a concurrent decision starts the load, which sees x
		if !testenv.Eventually(5*time.Second, func() bool { return m.Stats().Entries > 0 }) {
			t.Fatal("lists never held")
		}
		if err := red.ListRemove(ctx, k.Index(deny), "x", k.Flag(deny, "x")); err != nil { // C2
			t.Fatal(err)
		}
		bcast() // B2, before the drain
	}
	m.catchUp()
	m.catchUp()
	if a := decide(); a.Guard == 0 {
		t.Fatalf("x decided by the deny list from memory after its removal was broadcast; Redis admits it")
	}
}

// slowFor holds the store calls that check the applicant slow until
// release is closed: a Redis that takes long over some calls.
type slowFor struct {
	Store
	entered chan struct{}
	release chan struct{}
}

func (s slowFor) Decide(ctx context.Context, q *ratelimit.Query, a *ratelimit.Answer) error {
	for _, c := range q.Checks {
		if strings.Contains(c.Key, "slow") {
			s.entered <- struct{}{}
			select {
			case <-s.release:
			case <-ctx.Done():
				return ctx.Err()
			}
			break
		}
	}
	return s.Store.Decide(ctx, q, a)
}

// What the memory of refusals knows is answered while every deciding
// goroutine waits on the store: a flood's known refusals do not queue
// behind a slow Redis, and the decision that waits still gets its answer.
func TestMemoryAnswersWhileStoreIsBusy(t *testing.T) {
	ns := testenv.NATS(t)
	red := ratelimit.NewRedis(testenv.StartRedis(t).Client)
	store := slowFor{Store: red, entered: make(chan struct{}, 1), release: make(chan struct{})}
	_, reg, _ := startWorker(t, ns, store, testPolicy(t, perApplicant(1)), func(o *Options) {
		o.RefusalMemory, o.Concurrency, o.StoreBudget = 1000, 1, time.Minute
	})
	var once sync.Once
	release := func() { once.Do(func() { close(store.release) }) }
	t.Cleanup(release) // before the worker stops: a failure does not wait out the budget
	nc := testenv.Conn(t, ns)
	if got := joinG1(t, nc, "flooder"); got.ErrCode != 0 {
		t.Fatalf("first application refused: %+v", got)
	}
	if got := joinG1(t, nc, "flooder"); got.ErrCode != 5001 {
		t.Fatalf("second application: %+v, want 5001", got)
	}

	slow := make(chan error, 1)
	go func() {
		m, err := request(t, nc, joinBody("slow", "g1"), time.Now().Add(time.Minute))
		if err == nil && decode(t, m).ErrCode != 0 {
			err = fmt.Errorf("refused: %s", m.Data)
		}
		slow <- err
	}()
	select {
	case <-store.entered: // the worker's one deciding goroutine waits
	case <-time.After(5 * time.Second):
		t.Fatal("the slow applicant's decision never reached the store")
	}
	hits := testenv.Value(t, reg, "joingate_worker_refusal_memory_hits_total")
	for i := range 5 {
		if got := joinG1(t, nc, "flooder"); got.ErrCode != 5001 {
			t.Fatalf("application %d while the store was busy: %+v, want 5001", i+3, got)
		}
	}
	if n := testenv.Value(t, reg, "joingate_worker_refusal_memory_hits_total") - hits; n != 5 {
		t.Fatalf("%v of 5 refusals from memory while the store was busy", n)
	}
	release()
	if err := <-slow; err != nil {
		t.Fatalf("the decision that waited on the store: %v", err)
	}
}
