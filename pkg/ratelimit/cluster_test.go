package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/testenv"
)

// TestCluster runs the store on a three-master Redis Cluster: the
// conformance suite, whose keys ("tight", "loose", "allow:u1", ...) carry no
// hash tag and so fall in different slots, which sends most of its queries
// down the split path (one script per slot, refund on refusal); then tests
// aimed at that path with keys shaped like joingate's, placed on three
// different masters.
func TestCluster(t *testing.T) {
	c := testenv.StartCluster(t)
	ctx := context.Background()
	if !NewRedis(c.Client).cluster {
		t.Fatal("NewRedis does not recognise the cluster client: the split path would never run")
	}
	fresh := func(t *testing.T) *Redis {
		c.FlushAll(t)
		return NewRedis(c.Client)
	}

	t.Run("conformance", func(t *testing.T) {
		testStore(t, func(t *testing.T) store { return fresh(t) })
	})

	app, grp, glob := spreadKeys(t, c.Client)
	hourly := func(key string, rate, burst int) Check {
		return Check{Key: key, Limit: Limit{Rate: rate, Period: time.Hour, Burst: burst}}
	}
	guards := []string{app.flag("allow"), app.flag("deny"), grp.flag("deny")}
	peek := func(t *testing.T, s *Redis, checks ...Check) []Result {
		t.Helper()
		return decide(t, s, Query{Checks: checks, Mode: Peek}).Results
	}
	exists := func(t *testing.T, key string) bool {
		t.Helper()
		n, err := c.Client.Exists(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	// Whichever slot refuses (first, middle or last part of the query), the
	// parts that admitted give their quota back.
	for refuser := range 3 {
		t.Run(fmt.Sprint("refusal in part ", refuser, " refunds the other parts"), func(t *testing.T) {
			s := fresh(t)
			checks := []Check{hourly(app.rule(), 1, 1), hourly(grp.rule(), 1, 1), hourly(glob.rule(), 1, 1)}
			// Use up the refusing check on its own.
			if r := decide(t, s, Query{Checks: checks[refuser : refuser+1]}).Results[0]; !r.Allowed {
				t.Fatalf("first use of %s: %+v", checks[refuser].Key, r)
			}
			q := Query{Guards: guards, Checks: checks}
			for range 3 {
				a := decide(t, s, q)
				if a.Admitted(&q) {
					t.Fatalf("admitted with %s exhausted: %+v", checks[refuser].Key, a)
				}
				for i, r := range a.Results {
					if (i == refuser) == r.Allowed {
						t.Fatalf("check %d: %+v (refuser %d)", i, r, refuser)
					}
				}
			}
			// The refunds left the other keys as they were: never used.
			for i := range checks {
				if i != refuser && exists(t, checks[i].Key) {
					t.Fatalf("%s still holds quota after its request was refused", checks[i].Key)
				}
			}
			others := make([]Check, 0, 2)
			for i := range checks {
				if i != refuser {
					others = append(others, checks[i])
				}
			}
			// A limit of 1 each: this admits only if nothing was consumed.
			oq := Query{Guards: guards, Checks: others}
			if a := decide(t, s, oq); !a.Admitted(&oq) {
				t.Fatalf("the other limits after refunds: %+v, want admitted", a)
			}
			if a := decide(t, s, oq); a.Admitted(&oq) {
				t.Fatalf("limits of 1 admitted twice: %+v", a)
			}
		})
	}

	t.Run("refund keeps quota used by others", func(t *testing.T) {
		s := fresh(t)
		loose, tight := hourly(app.rule(), 5, 5), hourly(grp.rule(), 1, 1)
		for range 2 {
			decide(t, s, Query{Checks: []Check{loose}})
		}
		decide(t, s, Query{Checks: []Check{tight}})
		q := Query{Checks: []Check{loose, tight}}
		for range 3 {
			a := decide(t, s, q)
			if a.Admitted(&q) || !a.Results[0].Allowed || a.Results[0].Remaining != 2 {
				t.Fatalf("got %+v, want refused by the tight limit, loose with 2 left after it", a)
			}
		}
		// Two requests used the loose limit; the refused ones did not.
		if r := peek(t, s, loose)[0]; !r.Allowed || r.Remaining != 2 {
			t.Fatalf("loose limit after refunds: %+v, want 2 left after a third request", r)
		}
	})

	t.Run("refund gives back a check's whole cost", func(t *testing.T) {
		s := fresh(t)
		loose, tight := hourly(app.rule(), 10, 10), hourly(grp.rule(), 1, 1)
		loose.Cost = 4
		decide(t, s, Query{Checks: []Check{tight}})
		q := Query{Checks: []Check{loose, tight}}
		for range 3 {
			if a := decide(t, s, q); a.Admitted(&q) || !a.Results[0].Allowed || a.Results[0].Remaining != 6 {
				t.Fatalf("got %+v, want refused by the tight limit, loose with 6 left after its 4", a)
			}
		}
		if r := peek(t, s, hourly(app.rule(), 10, 10))[0]; !r.Allowed || r.Remaining != 9 {
			t.Fatalf("loose limit after refunds: %+v, want all 10 there (9 left after one more)", r)
		}
	})

	t.Run("a refusing part gives back nothing of its own", func(t *testing.T) {
		s := fresh(t)
		// Two rules of one applicant share a slot (as applicant and
		// applicant_group rules do): their part's script consumed nothing
		// when one of them refused, so nothing of it may be refunded.
		loose := hourly("jg:{"+string(app)+"}:rl:loose", 5, 5)
		tight := hourly("jg:{"+string(app)+"}:rl:tight", 1, 1)
		other := hourly(grp.rule(), 5, 5)
		decide(t, s, Query{Checks: []Check{loose}})
		decide(t, s, Query{Checks: []Check{loose}})
		decide(t, s, Query{Checks: []Check{tight}})
		q := Query{Checks: []Check{loose, tight, other}}
		for range 3 {
			a := decide(t, s, q)
			if a.Admitted(&q) || !a.Results[0].Allowed || a.Results[1].Allowed || !a.Results[2].Allowed {
				t.Fatalf("got %+v, want refused by the tight limit alone", a)
			}
		}
		if r := peek(t, s, loose, other); r[0].Remaining != 2 || r[1].Remaining != 4 {
			t.Fatalf("after refusals: %+v, want 2 and 4 left after one more (2 and 0 used)", r)
		}
	})

	t.Run("guard in one slot, checks in others: nothing consumed", func(t *testing.T) {
		s := fresh(t)
		checks := []Check{hourly(app.rule(), 1, 1), hourly(grp.rule(), 1, 1), hourly(glob.rule(), 1, 1)}
		q := Query{Guards: guards, Checks: checks}
		wantGuard := func(want int) {
			t.Helper()
			for range 3 {
				a := decide(t, s, q)
				if a.Guard != want || a.Admitted(&q) {
					t.Fatalf("answer %+v, want guard %d", a, want)
				}
				// As on one server: no check's verdict when a guard decides.
				for i, r := range a.Results {
					if r != (Result{}) {
						t.Fatalf("check %d has a verdict %+v although guard %d decided", i, r, want)
					}
				}
			}
		}
		// Deny-listed group: its flag is on the group's master, the
		// applicant's and global checks elsewhere.
		if err := s.ListAdd(ctx, "{lists}:deny_groups", "g", grp.flag("deny")); err != nil {
			t.Fatal(err)
		}
		wantGuard(2)
		// The allow-list (an earlier guard, on the applicant's master) wins.
		if err := s.ListAdd(ctx, "{lists}:allow_applicants", "u", app.flag("allow")); err != nil {
			t.Fatal(err)
		}
		wantGuard(0)
		for _, ch := range checks {
			if exists(t, ch.Key) {
				t.Fatalf("%s holds quota after guarded requests", ch.Key)
			}
		}
		if err := s.ListRemove(ctx, "{lists}:allow_applicants", "u", app.flag("allow")); err != nil {
			t.Fatal(err)
		}
		if err := s.ListRemove(ctx, "{lists}:deny_groups", "g", grp.flag("deny")); err != nil {
			t.Fatal(err)
		}
		if a := decide(t, s, q); !a.Admitted(&q) {
			t.Fatalf("after the lists were emptied: %+v, want admitted (limits of 1 untouched)", a)
		}
	})

	t.Run("peek and guards-only consume nothing", func(t *testing.T) {
		s := fresh(t)
		checks := []Check{hourly(app.rule(), 2, 2), hourly(grp.rule(), 3, 3), hourly(glob.rule(), 4, 4)}
		for range 5 {
			a := decide(t, s, Query{Guards: guards, Checks: checks, Mode: Peek})
			if a.Guard != -1 {
				t.Fatalf("peek: %+v", a)
			}
			for i, r := range a.Results {
				if want := checks[i].Limit.Burst - 1; !r.Allowed || r.Remaining != want {
					t.Fatalf("peek check %d: %+v, want allowed with %d left", i, r, want)
				}
			}
			a = decide(t, s, Query{Guards: guards, Checks: checks, Mode: GuardsOnly})
			if a.Guard != -1 || a.Results[0].Allowed || a.Results[1].Allowed || a.Results[2].Allowed {
				t.Fatalf("guards only: %+v", a)
			}
		}
		for _, ch := range checks {
			if exists(t, ch.Key) {
				t.Fatalf("%s holds quota after peeks", ch.Key)
			}
		}
		// Exhaust the applicant's limit, then peek at a refusal: nothing to
		// refund, nothing consumed elsewhere.
		q := Query{Checks: checks}
		decide(t, s, q)
		decide(t, s, q)
		for range 3 {
			a := decide(t, s, Query{Checks: checks, Mode: Peek})
			if a.Results[0].Allowed || !a.Results[1].Allowed || a.Results[1].Remaining != 0 || a.Results[2].Remaining != 1 {
				t.Fatalf("peek with the applicant exhausted: %+v", a)
			}
		}
		if r := peek(t, s, checks[1], checks[2]); r[0].Remaining != 0 || r[1].Remaining != 1 {
			t.Fatalf("group and global after peeks: %+v, want 0 and 1 left after one more", r)
		}
	})

	t.Run("late parts consume nothing", func(t *testing.T) {
		s := fresh(t)
		q := Query{Guards: guards, Checks: []Check{hourly(app.rule(), 2, 2), hourly(grp.rule(), 3, 3), hourly(glob.rule(), 4, 4)}}
		parts := slotParts(&q)
		if len(parts) < 3 {
			t.Fatalf("%d parts: the keys are not spread", len(parts))
		}
		// Every part's script runs with a deadline long past by Redis's
		// clock, as when a busy shard runs them after the worker gave up.
		var a Answer
		a.reset(&q)
		err := s.decideSplit(ctx, &q, &a, parts, 1)
		if !errors.Is(err, ErrStore) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("late parts: %v; want ErrStore wrapping context.DeadlineExceeded", err)
		}
		for _, ch := range q.Checks {
			if exists(t, ch.Key) {
				t.Fatalf("%s holds quota after a late request", ch.Key)
			}
		}
		// The same request in time is decided and charged.
		if a := decide(t, s, q); !a.Admitted(&q) {
			t.Fatalf("in time: %+v", a)
		}
	})

	t.Run("concurrent requests across slots never exceed the tightest limit", func(t *testing.T) {
		s := fresh(t)
		checks := []Check{hourly(app.rule(), 30, 30), hourly(grp.rule(), 20, 20), hourly(glob.rule(), 50, 50)}
		const workers, each = 16, 20
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				q := Query{Guards: guards, Checks: checks}
				var a Answer
				for range each {
					if err := s.Decide(ctx, &q, &a); err != nil {
						t.Error(err)
						return
					}
					if a.Admitted(&q) {
						admitted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		n := int(admitted.Load())
		// Refunds in flight may refuse a request the limits would have
		// taken (a brief over-count), never admit one too many.
		if n < 1 || n > 20 {
			t.Fatalf("%d of %d concurrent requests admitted, want 1 to 20", n, workers*each)
		}
		t.Logf("%d of %d admitted", n, workers*each)
		// Every refund has landed: each limit holds exactly the admitted
		// requests, no refused request's quota and no refund too many.
		for i, r := range peek(t, s, checks...) {
			if want := checks[i].Limit.Burst - n - 1; r.Remaining != want && !(want < 0 && !r.Allowed) {
				t.Errorf("%s after %d admitted: %+v, want %d left after one more", checks[i].Key, n, r, want)
			}
		}
		// And the rest of the tightest limit is still there.
		q := Query{Checks: checks}
		more := 0
		for {
			if a := decide(t, s, q); !a.Admitted(&q) {
				break
			}
			more++
		}
		if n+more != 20 {
			t.Fatalf("%d admitted concurrently and %d after, want 20 in all", n, more)
		}
	})
}

// tagged builds keys that share one hash tag, as pkg/policy names them.
type tagged string

func (k tagged) rule() string            { return "jg:{" + string(k) + "}:rl:r" }
func (k tagged) flag(list string) string { return "jg:{" + string(k) + "}:" + list }

// spreadKeys finds an applicant and a group whose keys live on different
// masters from each other and from the global keys, so that a query with
// all three is split across three shards.
func spreadKeys(t *testing.T, c *redis.ClusterClient) (app, grp, glob tagged) {
	t.Helper()
	ctx := context.Background()
	master := func(k tagged) string {
		m, err := c.MasterForKey(ctx, k.rule())
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr
	}
	glob = "global"
	used := map[string]bool{master(glob): true}
	find := func(prefix string) tagged {
		for i := range 1000 {
			k := tagged(fmt.Sprint(prefix, i))
			if m := master(k); !used[m] {
				used[m] = true
				return k
			}
		}
		t.Fatalf("no %s key on a third master", prefix)
		return ""
	}
	return find("a:u"), find("g:g"), glob
}
