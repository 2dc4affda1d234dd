package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/testenv"
)

// refusalsRun is the differential test of Refusals: two workers, each with
// its memory of refusals, and one without (a worker of an older version),
// share one Redis; random queries on four keys under limits of 100 ms to an
// hour interleave with an operator's changes (list entries added and
// removed, quotas reset), each followed by the broadcast (Clear on every
// worker) unless the run leaves it out. Every answer given from memory is
// checked at once against Redis (Peek): no guard may exist, and every check
// it says refuses must refuse there too, for at least as long; when the
// workers hold the lists (HoldLists), a guard it says decides must be the
// one that decides there, and an answer Redis gave (to a query the held
// lists may have stripped of its guards) must have been decided by the
// guard that exists, if one does. The clock of
// a claim is the instant before the call, that of Redis's verdict the
// instant after the Peek, so the check holds whatever the scheduling: a
// claim is wrong only if it outlasts what Redis says.
type refusalsRun struct {
	t         *testing.T
	red       *Redis
	workers   []*Refusals
	rng       *rand.Rand
	broadcast bool
	hits      int
	guardHits int // answers from memory that a held list entry decided
	wrong     []string
}

// guardKeys are the run's list entries' keys (guards).
var guardKeys = []string{"allow", "deny0", "deny1", "deny2"}

func newRefusalsRun(t *testing.T, srv *testenv.Redis, seed uint64, slack time.Duration, broadcast, hold bool) *refusalsRun {
	if err := srv.Client.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	red := NewRedis(srv.Client)
	r := &refusalsRun{t: t, red: red, rng: rand.New(rand.NewPCG(seed, 7)), broadcast: broadcast}
	for range 2 {
		w := NewRefusals(red, 12) // small: evictions happen
		w.slack = slack
		if hold {
			w.HoldLists(func(ctx context.Context) ([]string, error) {
				var exist []string
				for _, k := range guardKeys {
					n, err := srv.Client.Exists(ctx, k).Result()
					if err != nil {
						return nil, err
					}
					if n == 1 {
						exist = append(exist, k)
					}
				}
				return exist, nil
			})
		}
		r.workers = append(r.workers, w)
	}
	return r
}

var refusalLimits = []Limit{
	{Rate: 2, Period: 100 * time.Millisecond, Burst: 1},
	{Rate: 5, Period: 300 * time.Millisecond, Burst: 2},
	{Rate: 3, Period: time.Hour, Burst: 3},
}

func (r *refusalsRun) query() Query {
	q := Query{Guards: []string{"allow", fmt.Sprint("deny", r.rng.IntN(3))}}
	for i := range 1 + r.rng.IntN(3) {
		q.Checks = append(q.Checks, Check{
			Key:    fmt.Sprint("k", r.rng.IntN(4)),
			Limit:  refusalLimits[(i+r.rng.IntN(2))%len(refusalLimits)],
			Shadow: r.rng.IntN(6) == 0,
			Cost:   []int{1, 1, 1, 2}[r.rng.IntN(4)],
		})
	}
	return q
}

func (r *refusalsRun) step(i int) {
	ctx := context.Background()
	switch n := r.rng.IntN(100); {
	case n < 3: // an operator's change
		var err error
		switch r.rng.IntN(3) {
		case 0:
			err = r.red.ListAdd(ctx, "idx", "x", guardKeys[r.rng.IntN(4)])
		case 1:
			err = r.red.ListRemove(ctx, "idx", "x", guardKeys[r.rng.IntN(4)])
		default:
			err = r.red.Reset(ctx, fmt.Sprint("k", r.rng.IntN(4)))
		}
		if err != nil {
			r.t.Fatal(err)
		}
		if r.broadcast {
			for _, w := range r.workers {
				w.Clear()
			}
		}
	case n < 13: // the worker without memory
		q := r.query()
		var a Answer
		if err := r.red.Decide(ctx, &q, &a); err != nil {
			r.t.Fatal(err)
		}
	default:
		w := r.workers[r.rng.IntN(len(r.workers))]
		q := r.query()
		var a Answer
		hits := w.Stats().Hits
		before := time.Now()
		if err := w.Decide(ctx, &q, &a); err != nil {
			r.t.Fatal(err)
		}
		peek := q
		peek.Mode = Peek
		var truth Answer
		if err := r.red.Decide(ctx, &peek, &truth); err != nil {
			r.t.Fatal(err)
		}
		after := time.Now()
		if w.Stats().Hits == hits {
			// Asked of Redis, perhaps without the guards the held lists
			// say are absent: a guard that exists must have decided.
			if truth.Guard >= 0 && a.Guard != truth.Guard {
				r.wrong = append(r.wrong, fmt.Sprintf("step %d: guard %q exists, the store's answer says guard %d", i, q.Guards[truth.Guard], a.Guard))
			}
			return
		}
		r.hits++
		if a.Guard >= 0 {
			r.guardHits++
			if truth.Guard != a.Guard {
				r.wrong = append(r.wrong, fmt.Sprintf("step %d: guard %q decided from memory, Redis says guard %d", i, q.Guards[a.Guard], truth.Guard))
			}
			return
		}
		if truth.Guard >= 0 {
			r.wrong = append(r.wrong, fmt.Sprintf("step %d: refused from memory, but guard %q exists", i, q.Guards[truth.Guard]))
			return
		}
		refused := false
		for j, res := range a.Results {
			if res.Allowed {
				if q.Checks[j].Shadow {
					// Reported admitting though not asked: a shadow refusal
					// would go unreported.
					r.wrong = append(r.wrong, fmt.Sprintf("step %d: shadow check %+v answered from memory without being known", i, q.Checks[j]))
				}
				continue
			}
			refused = refused || !q.Checks[j].Shadow
			claim, real := before.Add(res.RetryAfter), after
			if !truth.Results[j].Allowed {
				real = after.Add(truth.Results[j].RetryAfter)
			}
			if claim.After(real) {
				r.wrong = append(r.wrong, fmt.Sprintf("step %d: check %+v refused from memory for %s, Redis says %+v", i, q.Checks[j], res.RetryAfter, truth.Results[j]))
			}
		}
		if !refused {
			r.wrong = append(r.wrong, fmt.Sprintf("step %d: a hit that refuses no enforcing check: %+v", i, a))
		}
	}
	if i%16 == 0 {
		time.Sleep(time.Duration(r.rng.IntN(3000)) * time.Microsecond) // let limits of 100 ms refill
	}
}

func (r *refusalsRun) run(steps int) {
	for i := range steps {
		r.step(i)
	}
}

// Refusals never refuses what Redis would admit, over random interleavings
// of workers with and without it and of operator changes broadcast; and it
// does answer from memory, often.
func TestRefusalsAgainstRedis(t *testing.T) {
	srv := testenv.StartRedis(t)
	for seed := range uint64(6) {
		hold := seed%2 == 1 // the lists held whole, or guards remembered absent
		r := newRefusalsRun(t, srv, seed, 0, true, hold)
		r.run(3000)
		for _, w := range r.wrong {
			t.Error(w)
		}
		if r.hits < 30 {
			t.Errorf("seed %d: %d answers from memory in 3000 steps: the test exercises nothing", seed, r.hits)
		}
		if hold && r.guardHits < 10 {
			t.Errorf("seed %d: %d answers decided by a held list entry: the lists were never held", seed, r.guardHits)
		}
		ev := r.workers[0].Stats().Evictions + r.workers[1].Stats().Evictions
		if ev == 0 {
			t.Errorf("seed %d: no eviction: memory was never full", seed)
		}
		t.Logf("seed %d (hold %v): %d answers from memory (%d by a list entry), %d evictions", seed, hold, r.hits, r.guardHits, ev)
	}
}

// The differential test notices a memory that refuses 50 ms too long, and
// one that misses the operator's broadcast.
func TestRefusalsTestCatchesBugs(t *testing.T) {
	srv := testenv.StartRedis(t)
	for _, c := range []struct {
		name            string
		slack           time.Duration
		broadcast, hold bool
	}{
		{"refusing 50ms too long", 50 * time.Millisecond, true, false},
		{"no broadcast", 0, false, false},
		{"no broadcast, lists held", 0, false, true},
	} {
		r := newRefusalsRun(t, srv, 1, c.slack, c.broadcast, c.hold)
		r.run(3000)
		if len(r.wrong) == 0 {
			t.Errorf("%s: no wrong answer noticed in %d answers from memory", c.name, r.hits)
		}
	}
}

// Shadow checks and Peek queries never answer from memory; memory stays
// within its size, counting what it evicts; Clear forgets, and an answer to
// a query sent before a Clear is not remembered.
func TestRefusalsBounds(t *testing.T) {
	red := NewRedis(testenv.StartRedis(t).Client)
	ctx := context.Background()
	w := NewRefusals(red, 16)
	hour := Limit{Rate: 1, Period: time.Hour, Burst: 1}
	refuse := func(key string, shadow bool) Query {
		q := Query{Guards: []string{"allow"}, Checks: []Check{{Key: key, Limit: hour, Shadow: shadow}}}
		var a Answer
		for range 2 { // the second is refused by Redis
			if err := w.Decide(ctx, &q, &a); err != nil {
				t.Fatal(err)
			}
		}
		return q
	}
	q := refuse("shadow", true)
	var a Answer
	// Its refusal is remembered (to report it beside an enforcing
	// refusal from memory), but never refuses on its own.
	if err := w.Decide(ctx, &q, &a); err != nil || w.Stats().Hits != 0 || !a.Admitted(&q) {
		t.Fatalf("a shadow check refused from memory: %+v, %+v, %v", a, w.Stats(), err)
	}
	w.Clear()
	q = refuse("enforcing", false)
	// The admission that took the key's one request taught memory that the
	// next is refused: the second was answered from memory.
	if w.Stats().Hits != 1 {
		t.Fatalf("after an admission that empties the key: %+v, want the next refused from memory", w.Stats())
	}
	peek := q
	peek.Mode = Peek
	if err := w.Decide(ctx, &peek, &a); err != nil || w.Stats().Hits != 1 {
		t.Fatalf("Peek answered from memory: %+v, %v", w.Stats(), err)
	}
	if err := w.Decide(ctx, &q, &a); err != nil || w.Stats().Hits != 2 || a.Admitted(&q) || a.Results[0].RetryAfter < 59*time.Minute {
		t.Fatalf("refused key: %+v, stats %+v, %v; want a refusal from memory that reports the store's wait (about an hour)", a, w.Stats(), err)
	}
	w.Clear()
	if err := w.Decide(ctx, &q, &a); err != nil || w.Stats().Hits != 2 {
		t.Fatalf("answered from memory after Clear: %+v", w.Stats())
	}
	for i := range 40 {
		refuse(fmt.Sprint("many", i), false)
		if n := w.Stats().Entries; n > 16 {
			t.Fatalf("%d entries, size 16", n)
		}
	}
	if w.Stats().Evictions == 0 {
		t.Fatal("no eviction counted for 41 refused keys in 16 entries")
	}

	// A Clear while the store answers: that answer is not remembered.
	slow := &clearing{Redis: red}
	w = NewRefusals(slow, 16)
	slow.during = func(*Query) { w.Clear() }
	q = refuse("cleared", false)
	if w.Stats().Entries != 0 {
		t.Fatalf("an answer that predates a Clear was remembered: %+v", w.Stats())
	}
}

// clearing is a store that runs during, with the query it was asked,
// while each Decide is in flight.
type clearing struct {
	*Redis
	during func(q *Query)
}

func (c *clearing) Decide(ctx context.Context, q *Query, a *Answer) error {
	c.during(q)
	return c.Redis.Decide(ctx, q, a)
}

// With the lists held, a query none of whose guards is listed reaches the
// store without them (Redis need not look), and the caller's query keeps
// its own.
func TestHeldListsSpareTheStoreTheGuards(t *testing.T) {
	var guards []int // of each query the store was asked
	store := &clearing{Redis: NewRedis(testenv.StartRedis(t).Client), during: func(q *Query) { guards = append(guards, len(q.Guards)) }}
	w := NewRefusals(store, 16)
	w.HoldLists(func(context.Context) ([]string, error) { return []string{"deny:other"}, nil })
	q := Query{Guards: []string{"allow:u", "deny:u"}, Checks: []Check{{Key: "k", Limit: Limit{Rate: 1000, Period: time.Hour, Burst: 1000}}}}
	var a Answer
	if !testenv.Eventually(5*time.Second, func() bool {
		if err := w.Decide(context.Background(), &q, &a); err != nil || !a.Admitted(&q) {
			t.Fatalf("%+v, %v; want admitted", a, err)
		}
		return guards[len(guards)-1] == 0
	}) {
		t.Fatalf("the store was asked %d times, with %d guards at last: never without them", len(guards), guards[len(guards)-1])
	}
	if len(guards) < 2 || guards[0] != 2 {
		t.Errorf("before the lists were held the store was asked with %v guards; want 2 at first", guards)
	}
	if len(q.Guards) != 2 {
		t.Errorf("the caller's query lost its guards: %v", q.Guards)
	}
}

// Held lists decide from memory while fresh; lists that could not be
// reloaded for two guardTTLs decide nothing (a list changed behind
// joingate's back misleads it for a bounded time).
func TestHeldListsGoStale(t *testing.T) {
	red := NewRedis(testenv.StartRedis(t).Client)
	ctx := context.Background()
	if err := red.ListAdd(ctx, "idx", "x", "deny"); err != nil {
		t.Fatal(err)
	}
	w := NewRefusals(red, 16)
	loads := 0
	w.HoldLists(func(context.Context) ([]string, error) {
		loads++
		if loads > 1 {
			return nil, errors.New("redis down")
		}
		return []string{"deny"}, nil
	})
	q := Query{Guards: []string{"deny"}, Checks: []Check{{Key: "k", Limit: Limit{Rate: 1000, Period: time.Hour, Burst: 1000}}}}
	var a Answer
	if !testenv.Eventually(5*time.Second, func() bool {
		if err := w.Decide(ctx, &q, &a); err != nil || a.Guard != 0 {
			t.Fatalf("a deny-listed query: %+v, %v", a, err)
		}
		return w.Stats().Hits > 0
	}) {
		t.Fatal("the held list never decided")
	}
	w.mu.Lock()
	w.heldAt -= 2 * int64(guardTTL) // as if every reload since had failed
	w.mu.Unlock()
	hits := w.Stats().Hits
	if err := w.Decide(ctx, &q, &a); err != nil || a.Guard != 0 || w.Stats().Hits != hits {
		t.Fatalf("stale lists: %+v, hits %d then %d, %v; want Redis to decide", a, hits, w.Stats().Hits, err)
	}
}
