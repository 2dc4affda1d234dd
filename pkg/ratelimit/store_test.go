package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/testenv"
)

// store is what the conformance suite needs of either store.
type store interface {
	Decide(ctx context.Context, q *Query, a *Answer) error
	Reset(ctx context.Context, keys ...string) error
	ListAdd(ctx context.Context, index, member, flag string) error
	ListRemove(ctx context.Context, index, member, flag string) error
	ListMembers(ctx context.Context, index string) ([]string, error)
	Ping(ctx context.Context) error
}

// decide runs q and returns the answer.
func decide(t *testing.T, s store, q Query) Answer {
	t.Helper()
	var a Answer
	if err := s.Decide(context.Background(), &q, &a); err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return a
}

// TestStores runs one conformance suite against both stores, so the
// in-memory store of `joingate all` decides exactly as Redis does.
func TestStores(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		testStore(t, func(t *testing.T) store { return NewMemory() })
	})
	t.Run("redis", func(t *testing.T) {
		srv := testenv.StartRedis(t)
		testStore(t, func(t *testing.T) store {
			// An empty database per case keeps cases apart without restarts.
			if err := srv.Client.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			return NewRedis(srv.Client)
		})
	})
}

func testStore(t *testing.T, newStore func(t *testing.T) store) {
	ctx := context.Background()
	allow := func(t *testing.T, s store, checks ...Check) []Result {
		t.Helper()
		return decide(t, s, Query{Checks: checks}).Results
	}
	hourly := func(key string, rate, burst int) Check {
		return Check{Key: key, Limit: Limit{Rate: rate, Period: time.Hour, Burst: burst}}
	}

	t.Run("burst then refuse", func(t *testing.T) {
		s := newStore(t)
		c := hourly("k", 3, 3)
		for want := 2; want >= 0; want-- {
			r := allow(t, s, c)[0]
			if !r.Allowed || r.Remaining != want || r.RetryAfter != 0 {
				t.Fatalf("request with %d left: got %+v", want+1, r)
			}
			// The admission that takes the last one says how long the
			// next will be refused: what RetryAfter will say.
			if (want > 0) != (r.Then == 0) || r.Then > 20*time.Minute || (want == 0 && r.Then <= 19*time.Minute) {
				t.Fatalf("request with %d left: Then %v, want 0 while some are left, just under 20m for the last", want+1, r.Then)
			}
		}
		r := allow(t, s, c)[0]
		if r.Allowed || r.Remaining != 0 {
			t.Fatalf("4th request: got %+v, want refused", r)
		}
		// One request is emitted every 20 minutes; the next is due then.
		if r.RetryAfter <= 19*time.Minute || r.RetryAfter > 20*time.Minute {
			t.Fatalf("RetryAfter %v, want just under 20m", r.RetryAfter)
		}
	})

	t.Run("burst larger than rate", func(t *testing.T) {
		s := newStore(t)
		c := hourly("k", 1, 5)
		for i := range 5 {
			if r := allow(t, s, c)[0]; !r.Allowed {
				t.Fatalf("request %d refused within burst 5: %+v", i+1, r)
			}
		}
		if r := allow(t, s, c)[0]; r.Allowed || r.RetryAfter <= 59*time.Minute {
			t.Fatalf("6th request: %+v, want refused for about an hour", r)
		}
	})

	t.Run("cost counts that many requests at once", func(t *testing.T) {
		s := newStore(t)
		c := hourly("k", 6, 5) // one request every 10 minutes, burst 5
		c.Cost = 3
		if r := allow(t, s, c)[0]; !r.Allowed || r.Remaining != 2 {
			t.Fatalf("3 of 5: %+v, want admitted with 2 left", r)
		}
		// 3 more do not fit in the 2 left: refused whole, nothing taken,
		// until one more request has been emitted.
		r := allow(t, s, c)[0]
		if r.Allowed || r.RetryAfter <= 9*time.Minute || r.RetryAfter > 10*time.Minute {
			t.Fatalf("3 more with 2 left: %+v, want refused for just under 10m", r)
		}
		c.Cost = 2
		if r := allow(t, s, c)[0]; !r.Allowed || r.Remaining != 0 {
			t.Fatalf("2 with 2 left: %+v, want admitted with 0 left", r)
		}
		c.Cost = 6
		if r := allow(t, s, hourly("other", 6, 5), c)[1]; r.Allowed || !r.Never || r.RetryAfter != 0 {
			t.Fatalf("a cost above the burst: %+v, want refused, never to be admitted", r)
		}
		// Even a cost that would overflow the arithmetic.
		huge := Check{Key: "huge", Limit: Limit{Rate: 1, Period: 720 * time.Hour, Burst: 10}, Cost: 4_000_000}
		if r := allow(t, s, huge)[0]; r.Allowed || !r.Never {
			t.Fatalf("a cost of 4,000,000 on burst 10: %+v, want never admitted", r)
		}
	})

	t.Run("keys are independent", func(t *testing.T) {
		s := newStore(t)
		allow(t, s, hourly("a", 1, 1))
		if r := allow(t, s, hourly("b", 1, 1))[0]; !r.Allowed {
			t.Fatalf("key b refused after key a was used: %+v", r)
		}
	})

	t.Run("all or nothing", func(t *testing.T) {
		s := newStore(t)
		tight, loose := hourly("tight", 1, 1), hourly("loose", 10, 10)
		res := allow(t, s, tight, loose)
		if !res[0].Allowed || !res[1].Allowed || res[1].Remaining != 9 {
			t.Fatalf("first request: %+v", res)
		}
		for range 3 {
			res = allow(t, s, tight, loose)
			if res[0].Allowed || !res[1].Allowed {
				t.Fatalf("second request: %+v, want tight refusing and loose allowing", res)
			}
			if res[1].Remaining != 8 {
				t.Fatalf("loose reports %d remaining, want 8 (a refused request must not count)", res[1].Remaining)
			}
		}
		// The refused requests consumed nothing of the loose limit.
		if r := allow(t, s, loose)[0]; !r.Allowed || r.Remaining != 8 {
			t.Fatalf("loose alone after refusals: %+v, want 8 remaining", r)
		}
	})

	t.Run("shadow never refuses", func(t *testing.T) {
		s := newStore(t)
		shadow := hourly("shadow", 1, 1)
		shadow.Shadow = true
		real := hourly("real", 10, 10)
		allow(t, s, shadow, real)
		res := allow(t, s, shadow, real)
		if res[0].Allowed || !res[1].Allowed {
			t.Fatalf("got %+v, want shadow reporting a refusal and real allowing", res)
		}
		q := Query{Checks: []Check{shadow, real}}
		if a := (Answer{Guard: -1, Results: res}); !a.Admitted(&q) {
			t.Fatal("a shadow refusal refused the request")
		}
		// The request counted on the real limit: 10 - 2 = 8 left.
		if r := allow(t, s, real)[0]; r.Remaining != 7 {
			t.Fatalf("real limit after two admitted requests and this one: %d remaining, want 7", r.Remaining)
		}
	})

	t.Run("refills at the rate", func(t *testing.T) {
		s := newStore(t)
		c := Check{Key: "fast", Limit: Limit{Rate: 20, Period: time.Second, Burst: 1}}
		if r := allow(t, s, c)[0]; !r.Allowed {
			t.Fatalf("first: %+v", r)
		}
		r := allow(t, s, c)[0]
		if r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > 50*time.Millisecond {
			t.Fatalf("second: %+v, want refused with RetryAfter in (0, 50ms]", r)
		}
		if !testenv.Eventually(2*time.Second, func() bool { return allow(t, s, c)[0].Allowed }) {
			t.Fatal("limit of 20/s did not admit again within 2s")
		}
	})

	t.Run("concurrent requests never exceed the burst", func(t *testing.T) {
		s := newStore(t)
		c := hourly("hot", 50, 50)
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				var a Answer
				q := Query{Checks: []Check{c}}
				for range 25 {
					if err := s.Decide(ctx, &q, &a); err != nil {
						t.Error(err)
						return
					}
					if a.Results[0].Allowed {
						allowed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if got := allowed.Load(); got != 50 {
			t.Fatalf("%d of 200 concurrent requests allowed, want exactly 50", got)
		}
	})

	t.Run("guards decide first and consume nothing", func(t *testing.T) {
		s := newStore(t)
		c := hourly("k", 1, 1)
		if err := s.ListAdd(ctx, "deny-index", "u1", "deny:u1"); err != nil {
			t.Fatal(err)
		}
		if err := s.ListAdd(ctx, "allow-index", "u1", "allow:u1"); err != nil {
			t.Fatal(err)
		}
		// The first guard that exists wins, in the caller's order.
		q := Query{Guards: []string{"allow:u1", "deny:u1", "deny:g"}, Checks: []Check{c}}
		for range 3 {
			if a := decide(t, s, q); a.Guard != 0 || a.Admitted(&q) {
				t.Fatalf("allow-listed: %+v, want guard 0", a)
			}
		}
		q.Guards = []string{"allow:u2", "deny:u1"}
		if a := decide(t, s, q); a.Guard != 1 {
			t.Fatalf("deny-listed: %+v, want guard 1", a)
		}
		// None of the guarded requests consumed the limit of 1.
		if r := allow(t, s, c)[0]; !r.Allowed {
			t.Fatalf("limit consumed by guarded requests: %+v", r)
		}
		members, err := s.ListMembers(ctx, "deny-index")
		if err != nil || len(members) != 1 || members[0] != "u1" {
			t.Fatalf("ListMembers = %q, %v", members, err)
		}
		if err := s.ListRemove(ctx, "deny-index", "u1", "deny:u1"); err != nil {
			t.Fatal(err)
		}
		if a := decide(t, s, Query{Guards: []string{"deny:u1"}, Mode: GuardsOnly}); a.Guard != -1 {
			t.Fatalf("removed entry still guards: %+v", a)
		}
		if members, _ := s.ListMembers(ctx, "deny-index"); len(members) != 0 {
			t.Fatalf("members after remove: %q", members)
		}
	})

	t.Run("guards only evaluates no check", func(t *testing.T) {
		s := newStore(t)
		c := hourly("k", 1, 1)
		q := Query{Guards: []string{"none"}, Checks: []Check{c}, Mode: GuardsOnly}
		for range 3 {
			if a := decide(t, s, q); a.Guard != -1 || a.Results[0].Allowed {
				t.Fatalf("guards-only answer %+v", a)
			}
		}
		if r := allow(t, s, c)[0]; !r.Allowed {
			t.Fatal("guards-only queries consumed quota")
		}
	})

	t.Run("peek records nothing", func(t *testing.T) {
		s := newStore(t)
		c := hourly("k", 2, 2)
		allow(t, s, c)
		for range 3 {
			a := decide(t, s, Query{Checks: []Check{c}, Mode: Peek})
			if r := a.Results[0]; !r.Allowed || r.Remaining != 0 {
				t.Fatalf("peek: %+v, want allowed with 0 left after it", r)
			}
		}
		allow(t, s, c)
		a := decide(t, s, Query{Checks: []Check{c}, Mode: Peek})
		if r := a.Results[0]; r.Allowed || r.RetryAfter <= 29*time.Minute {
			t.Fatalf("peek when exhausted: %+v", r)
		}
	})

	t.Run("reset", func(t *testing.T) {
		s := newStore(t)
		c := hourly("k", 1, 1)
		allow(t, s, c)
		if allow(t, s, c)[0].Allowed {
			t.Fatal("limit of 1 admitted twice")
		}
		if err := s.Reset(ctx, "k", "absent"); err != nil {
			t.Fatal(err)
		}
		if !allow(t, s, c)[0].Allowed {
			t.Fatal("reset key still refused")
		}
	})

	t.Run("no checks", func(t *testing.T) {
		s := newStore(t)
		if a := decide(t, s, Query{}); a.Guard != -1 || len(a.Results) != 0 {
			t.Fatalf("empty query answered %+v", a)
		}
	})

	t.Run("cancelled context", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := s.Decide(cctx, &Query{Checks: []Check{hourly("k", 1, 1)}}, &Answer{})
		if !errors.Is(err, ErrStore) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Allow on a cancelled context: %v, want ErrStore wrapping context.Canceled", err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

func TestRedisKeysExpire(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := NewRedis(srv.Client)
	ctx := context.Background()
	checks := []Check{
		{Key: "slow", Limit: Limit{Rate: 1, Period: time.Hour, Burst: 3}},
		{Key: "fast", Limit: Limit{Rate: 100, Period: time.Second, Burst: 1}},
	}
	if err := s.Decide(ctx, &Query{Checks: checks}, &Answer{}); err != nil {
		t.Fatal(err)
	}
	ttl, err := srv.Client.PTTL(ctx, "slow").Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("PTTL slow = %v, %v; want about one emission interval (1h)", ttl, err)
	}
	// After a whole burst the key must live until the TAT, 3 intervals
	// ahead: expiring earlier would hand out the burst again.
	for range 2 {
		if err := s.Decide(ctx, &Query{Checks: checks[:1]}, &Answer{}); err != nil {
			t.Fatal(err)
		}
	}
	ttl, err = srv.Client.PTTL(ctx, "slow").Result()
	if err != nil || ttl <= 179*time.Minute || ttl > 3*time.Hour {
		t.Fatalf("PTTL slow after the burst = %v, %v; want about 3h", ttl, err)
	}
	// The fast key's TAT is 10ms ahead, so it is gone soon after.
	if !testenv.Eventually(2*time.Second, func() bool {
		return srv.Client.Exists(ctx, "fast").Val() == 0
	}) {
		t.Fatal("key of a 100/s limit still exists after 2s")
	}
}

func TestRedisDown(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := NewRedis(srv.Client)
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.Decide(ctx, &Query{Checks: []Check{{Key: "k", Limit: Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}, &Answer{})
	if !errors.Is(err, ErrStore) {
		t.Fatalf("Allow with Redis down: %v, want ErrStore", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, ErrStore) {
		t.Fatalf("Ping with Redis down: %v, want ErrStore", err)
	}
}

// Every counter is looked at once per second, in slices, however fast keys
// arrive: the store holds about the live keys, not everything ever seen.
func TestMemorySweepsExpiredKeys(t *testing.T) {
	m := NewMemory()
	now := time.Unix(1_700_000_000, 0)
	m.now = func() time.Time { return now }
	var a Answer
	// 20 new applicants every millisecond for 60s of fake time, each key
	// living 12s: about 240,000 live keys at any moment.
	n := 0
	for step := 0; step < 60_000; step++ {
		now = now.Add(time.Millisecond)
		for range 20 {
			n++
			c := Check{Key: fmt.Sprint("k", n), Limit: Limit{Rate: 5, Period: time.Minute, Burst: 1}}
			if err := m.Decide(context.Background(), &Query{Checks: []Check{c}}, &a); err != nil {
				t.Fatal(err)
			}
		}
	}
	const live = 12 * 20_000
	if got := m.Len(); got > live*11/10 {
		t.Fatalf("store holds %d keys after 60s, want about %d live ones", got, live)
	}
}

func TestLimitValidate(t *testing.T) {
	f := func(l Limit, ok bool) {
		t.Helper()
		if err := l.Validate(); (err == nil) != ok {
			t.Fatalf("Validate(%+v) = %v, want ok=%v", l, err, ok)
		}
	}
	f(Limit{Rate: 5, Period: time.Minute, Burst: 5}, true)
	f(Limit{Rate: 0, Period: time.Minute, Burst: 5}, false)
	f(Limit{Rate: 5, Period: 0, Burst: 5}, false)
	f(Limit{Rate: 5, Period: time.Minute, Burst: 0}, false)
	f(Limit{Rate: 1_000_000_000, Period: time.Second, Burst: 1}, false)
	f(Limit{Rate: 1, Period: 24 * time.Hour, Burst: 50_000}, true)    // 137 years
	f(Limit{Rate: 1, Period: 24 * time.Hour, Burst: 60_000}, false)   // 164 years: past exact doubles
	f(Limit{Rate: 1, Period: 720 * time.Hour, Burst: 1 << 40}, false) // would overflow
}

func BenchmarkMemoryAllow(b *testing.B) {
	m := NewMemory()
	checks := []Check{
		{Key: "applicant:u1", Limit: Limit{Rate: 1 << 30, Period: time.Hour, Burst: 1 << 30}},
		{Key: "group:g1", Limit: Limit{Rate: 1 << 30, Period: time.Hour, Burst: 1 << 30}},
	}
	q := Query{Checks: checks}
	var a Answer
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Decide(context.Background(), &q, &a); err != nil {
			b.Fatal(err)
		}
	}
}

// The two stores decide alike on the same random sequence of queries.
func TestStoresAgree(t *testing.T) {
	srv := testenv.StartRedis(t)
	mem, red := NewMemory(), NewRedis(srv.Client)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range []store{mem, red} {
		if err := s.ListAdd(context.Background(), "idx", "x", "g1"); err != nil {
			t.Fatal(err)
		}
	}
	for step := range 2000 {
		q := randomQuery(rng)
		a, b := decide(t, mem, q), decide(t, red, q)
		if err := sameAnswer(&q, &a, &b); err != nil {
			t.Fatalf("step %d %+v: memory %+v, redis %+v: %v", step, q, a, b, err)
		}
	}
}

// randomQuery draws a query for the agreement tests: one to four checks on
// six keys under hourly and minutely limits, some shadow, guards (of which
// "g1" is set) one time in ten, and every mode.
func randomQuery(rng *rand.Rand) Query {
	limits := []Limit{
		{Rate: 3, Period: time.Hour, Burst: 3},
		{Rate: 1, Period: time.Hour, Burst: 5},
		{Rate: 10, Period: time.Minute, Burst: 2},
		{Rate: 60, Period: time.Hour, Burst: 1},
	}
	var q Query
	for range 1 + rng.IntN(4) {
		q.Checks = append(q.Checks, Check{
			Key:    fmt.Sprint("k", rng.IntN(6)),
			Limit:  limits[rng.IntN(len(limits))],
			Shadow: rng.IntN(4) == 0,
			Cost:   []int{0, 1, 1, 2, 3}[rng.IntN(5)],
		})
	}
	if rng.IntN(10) == 0 {
		q.Guards = []string{"g0", "g1"}[:1+rng.IntN(2)]
	}
	q.Mode = []Mode{Consume, Consume, Consume, Peek, GuardsOnly}[rng.IntN(5)]
	return q
}

// sameAnswer says how two stores' answers to q differ, if they do: limits
// of minutes and hours make the microseconds between the two calls
// irrelevant to all but RetryAfter, allowed a second.
func sameAnswer(q *Query, a, b *Answer) error {
	if a.Guard != b.Guard || a.Admitted(q) != b.Admitted(q) {
		return fmt.Errorf("guard %d, %d; admitted %v, %v", a.Guard, b.Guard, a.Admitted(q), b.Admitted(q))
	}
	for i := range a.Results {
		ra, rb := a.Results[i], b.Results[i]
		if ra.Allowed != rb.Allowed || ra.Remaining != rb.Remaining || (ra.RetryAfter-rb.RetryAfter).Abs() > time.Second || (ra.Then-rb.Then).Abs() > time.Second {
			return fmt.Errorf("check %d %+v: %+v, %+v", i, q.Checks[i], ra, rb)
		}
	}
	return nil
}
