package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Refusals answers from memory the queries its store is bound to refuse,
// so that a flood of refused applications costs no store call.
//
// GCRA says exactly how long a refused key stays refused: a refused request
// consumes nothing, so the key's TAT cannot move back, and the same cost on
// it is not admitted until RetryAfter has passed (a smaller one may be:
// refusals are remembered per cost). Refusals keeps, per key
// and limit, the instant it refuses until (the local time the query was sent
// plus RetryAfter: never later than the store's), and, per guard key (the
// dynamic lists), that the key was absent. An admission teaches it too: a
// check that takes what is left of a key's burst says how long the same
// cost will now be refused (Result.Then). With HoldLists it holds the lists
// whole instead of guard keys one by one. A query in Consume mode whose
// guards are all known absent and one of whose enforcing checks is known to
// refuse is refused without asking the store; one whose guard is a held
// list entry is decided by it. It never refuses what the
// store would admit, with one exception it cannot see: an operator's change
// to the store (a quota reset, a list entry added) makes a refusal it
// remembers wrong. Whoever changes the store calls Clear, on every process
// that keeps Refusals (joingate broadcasts it over NATS).
//
// A refusal from memory names only the checks known to refuse: Results of
// the others read Allowed, and RetryAfter is what the store said, less the
// time since (memory refuses for at most maxRemembered of it). The store
// might have named an earlier rule that refuses too, or a longer wait.
// Shadow checks never refuse from memory; a query
// with one is answered from memory only when that check is remembered
// refusing too, so that shadow refusals are reported as the store would.
// Peek and GuardsOnly queries always go to the store.
//
// Memory is bounded: past size entries (refusals and guards together; held
// lists apart, and only up to size entries),
// expired ones are dropped, then arbitrary others (counted as evictions).
// Guards are remembered for guardTTL, refusals at most maxRemembered.
//
// Not for Redis Cluster: a query split across hash slots consumes in one
// slot before another refuses, then refunds (Redis.decideSplit); a refusal
// seen in between would be remembered past the refund.
type Refusals struct {
	store Decider
	size  int
	epoch time.Time // the monotonic clock's origin
	// unguarded holds the copies of queries sent to the store without
	// their guards (*Query): one per decision would be an allocation.
	unguarded sync.Pool

	mu      sync.Mutex
	refused map[refusedKey]refusal
	absent  map[string]int64 // guard key -> known absent until, ns since epoch
	gen     uint64           // incremented by Clear

	// The dynamic lists held whole (HoldLists): the guard keys that exist,
	// nil while not loaded; when the load began; whether one is running,
	// and when a failed one may be tried again.
	load      ListLoader
	held      map[string]struct{}
	heldAt    int64
	loading   bool
	loadAfter int64

	hits, evictions atomic.Uint64
	// slack, set by tests only, lengthens every refusal remembered: the
	// differential test proves it notices.
	slack time.Duration
}

// Decider is the store Refusals asks.
type Decider interface {
	Decide(ctx context.Context, q *Query, a *Answer) error
}

// refusal is what is remembered of one: until when memory refuses (capped
// at maxRemembered), and when the store said the key would admit again (a
// lower bound: others may consume meanwhile), which the answer reports.
// Both are ns since the epoch.
type refusal struct{ until, retryAt int64 }

// refusedKey is what a refusal is remembered by: a refusal of cost n says
// nothing of a smaller cost, which GCRA may admit sooner.
type refusedKey struct {
	key   string
	limit Limit
	cost  int64
}

// guardTTL is how long a guard key is remembered absent, and
// maxRemembered the longest a refusal is: a list changed behind joingate's
// back (redis-cli), or a Redis clock that jumps ahead (NTP, a failover to a
// replica whose clock is ahead), misleads the memory for at most that long.
// A minute covers the waits of per-minute limits whole (10 s cost a flood
// of 5 a minute per applicant a Redis call per applicant every 12 s, and
// one for every guard key every 10 s: a quarter of the flood's Redis calls
// in the bench suite's window).
const (
	guardTTL      = time.Minute
	maxRemembered = time.Minute
)

// DefaultRefusalsSize is the number of entries Refusals keeps by default:
// some 10 MB.
const DefaultRefusalsSize = 100_000

// NewRefusals returns a memory of refusals in front of store, keeping at
// most size entries (DefaultRefusalsSize when size < 1).
func NewRefusals(store Decider, size int) *Refusals {
	if size < 1 {
		size = DefaultRefusalsSize
	}
	return &Refusals{
		store:   store,
		size:    size,
		epoch:   time.Now(),
		refused: make(map[refusedKey]refusal),
		absent:  make(map[string]int64),
	}
}

func (r *Refusals) now() int64 { return int64(time.Since(r.epoch)) }

// ListLoader returns the guard keys that exist now: the key of every
// dynamic list entry.
type ListLoader func(ctx context.Context) ([]string, error)

// HoldLists makes r hold the dynamic lists whole, from load: a guard key
// among those it returned decides a query from memory as the store would
// (no check is evaluated, nothing consumed), and one not among them is
// known absent without asking. They are loaded in the background at the
// first query, again after every Clear (until then r asks the store about
// guards, as without HoldLists) and every guardTTL, which bounds how long a
// list changed behind joingate's back misleads it. Lists of more than size
// entries are not held. Call it before the first Decide.
func (r *Refusals) HoldLists(load ListLoader) { r.load = load }

// loadLists starts loading the lists when they are due. r.mu is held.
func (r *Refusals) loadLists(now int64) {
	if r.load == nil || r.loading || now < r.loadAfter || (r.held != nil && now-r.heldAt < int64(guardTTL)) {
		return
	}
	r.loading = true
	go r.reload(r.gen, now)
}

// reload loads the lists and holds them, unless a Clear came meanwhile:
// they may predate the change.
func (r *Refusals) reload(gen uint64, started int64) {
	ctx, cancel := context.WithTimeout(context.Background(), listLoadTimeout)
	keys, err := r.load(ctx)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loading = false
	switch {
	case err != nil:
		r.loadAfter = r.now() + int64(time.Second)
	case len(keys) > r.size:
		r.held, r.loadAfter = nil, r.now()+int64(guardTTL)
	case r.gen == gen:
		r.held, r.heldAt = make(map[string]struct{}, len(keys)), started
		for _, k := range keys {
			r.held[k] = struct{}{}
		}
	}
}

// listsHeld reports whether the lists are held and fresh: loaded within
// two guardTTLs (reloads that keep failing do not make old lists last).
// r.mu is held.
func (r *Refusals) listsHeld(now int64) bool {
	return r.held != nil && now-r.heldAt < 2*int64(guardTTL)
}

// listLoadTimeout bounds one load of the lists.
const listLoadTimeout = 5 * time.Second

// Decide answers q from memory when the store is bound to refuse it, and
// asks the store otherwise, remembering what its answer tells.
func (r *Refusals) Decide(ctx context.Context, q *Query, a *Answer) error {
	if q.Mode != Consume {
		return r.store.Decide(ctx, q, a)
	}
	sent, gen, hit, unguarded := r.lookup(q, a)
	if hit {
		return nil
	}
	asked := q
	if unguarded && len(q.Guards) > 0 {
		// The held lists say no guard exists: the store need not look. The
		// store is done with the copy when Decide returns (a Batcher
		// touches an abandoned call's query no more).
		stripped, _ := r.unguarded.Get().(*Query)
		if stripped == nil {
			stripped = new(Query)
		}
		*stripped = *q
		stripped.Guards = nil
		asked = stripped
	}
	err := r.store.Decide(ctx, asked, a)
	if asked != q {
		*asked = Query{}
		r.unguarded.Put(asked)
	}
	if err != nil {
		return err
	}
	if a.Guard >= 0 {
		return nil // a list decided: nothing to learn of the limits
	}
	// What the answer says is refused from now on: a refusing check (it
	// consumed nothing), and, when the query was admitted (every check that
	// admitted consumed), an admitted check whose cost the key cannot give
	// again for a while (Result.Then). Either lasts at least that long:
	// TATs only move forward.
	// A key checked twice in one query (under two limits) is stored by the
	// last check that consumed it, so the other's Then may not hold: only a
	// key checked once teaches anything from an admission. (Policies give
	// every rule keys of its own; only hand-made queries share them.)
	admitted := a.Admitted(q)
	refusedFor := func(i int) time.Duration {
		res := &a.Results[i]
		if !res.Allowed {
			return res.RetryAfter
		}
		if admitted && res.Then > 0 && onlyOnce(q.Checks, i) {
			return res.Then
		}
		return 0
	}
	learnt := false
	for i := range a.Results {
		learnt = learnt || refusedFor(i) > time.Microsecond
	}
	if !learnt {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen {
		// Cleared while the store answered: the answer may predate the
		// change.
		return nil
	}
	for _, g := range q.Guards {
		if r.listsHeld(sent) {
			break // known without remembering them
		}
		if _, ok := r.absent[g]; !ok {
			r.makeRoom()
		}
		r.absent[g] = sent + int64(guardTTL)
	}
	for i := range q.Checks {
		c, wait := &q.Checks[i], refusedFor(i)
		if wait <= time.Microsecond {
			continue
		}
		k := refusedKey{c.Key, c.Limit, c.cost()}
		if _, ok := r.refused[k]; !ok {
			r.makeRoom()
		}
		// The wait counts from the store's instant, which is after
		// sent; a microsecond off for the store's rounding. Nothing is
		// remembered longer than maxRemembered.
		old := r.refused[k]
		r.refused[k] = refusal{
			until:   max(old.until, sent+int64(min(wait-time.Microsecond, maxRemembered)+r.slack)),
			retryAt: max(old.retryAt, sent+int64(wait-time.Microsecond+r.slack)),
		}
	}
	return nil
}

// Recall answers q from memory, as Decide would when the store is bound to
// refuse it or a held list decides it, and reports whether it did; it
// never asks the store. A worker answers from it where it may not wait on
// the store.
func (r *Refusals) Recall(q *Query, a *Answer) bool {
	if q.Mode != Consume {
		return false
	}
	_, _, hit, _ := r.lookup(q, a)
	return hit
}

// lookup is recall at the present instant, under r.mu, counting a hit: it
// also returns that instant, the generation it was made in and whether,
// not a hit, the lists held say that none of q's guards exists.
func (r *Refusals) lookup(q *Query, a *Answer) (now int64, gen uint64, hit, unguarded bool) {
	now = r.now()
	r.mu.Lock()
	r.loadLists(now)
	gen = r.gen
	hit = r.recall(q, a, now)
	unguarded = r.listsHeld(now)
	r.mu.Unlock()
	if hit {
		r.hits.Add(1)
	}
	return now, gen, hit, unguarded
}

// onlyOnce reports whether checks[i]'s key is checked by no other check.
func onlyOnce(checks []Check, i int) bool {
	for j := range checks {
		if j != i && checks[j].Key == checks[i].Key {
			return false
		}
	}
	return true
}

// recall fills a with what memory says the store would answer q at now: a
// held list entry's guard decides it, or an enforcing check is remembered
// refusing, and so is every shadow check (whose refusals the caller
// reports: one not known to refuse might, so the store is asked). r.mu is
// held.
func (r *Refusals) recall(q *Query, a *Answer, now int64) bool {
	held := r.listsHeld(now)
	if held {
		for i, g := range q.Guards {
			if _, ok := r.held[g]; ok {
				a.reset(q)
				a.Guard = i
				return true
			}
		}
	}
	if len(r.refused) == 0 {
		return false
	}
	for _, g := range q.Guards {
		if !held && r.absent[g] <= now {
			return false
		}
	}
	enforced := false
	for i := range q.Checks {
		c := &q.Checks[i]
		refusing := r.refused[refusedKey{c.Key, c.Limit, c.cost()}].until > now
		if c.Shadow && !refusing {
			return false
		}
		enforced = enforced || refusing && !c.Shadow
	}
	if !enforced {
		return false
	}
	a.reset(q)
	for i := range q.Checks {
		c := &q.Checks[i]
		if known := r.refused[refusedKey{c.Key, c.Limit, c.cost()}]; known.until > now {
			a.Results[i] = Result{RetryAfter: time.Duration(known.retryAt - now)}
		} else {
			a.Results[i].Allowed = true
		}
	}
	return true
}

// makeRoom makes room for a new entry when memory is full: it drops the
// expired entries, and when that frees less than an eighth of the memory,
// arbitrary others up to that eighth, so that the cost of a sweep is
// spread over the inserts it makes room for. r.mu is held.
func (r *Refusals) makeRoom() {
	if len(r.refused)+len(r.absent) < r.size {
		return
	}
	now := r.now()
	for k, known := range r.refused {
		if known.until <= now {
			delete(r.refused, k)
		}
	}
	for k, until := range r.absent {
		if until <= now {
			delete(r.absent, k)
		}
	}
	target := r.size - max(r.size/8, 1)
	for k := range r.refused {
		if len(r.refused)+len(r.absent) <= target {
			break
		}
		delete(r.refused, k)
		r.evictions.Add(1)
	}
	for k := range r.absent {
		if len(r.refused)+len(r.absent) <= target {
			break
		}
		delete(r.absent, k)
		r.evictions.Add(1)
	}
}

// Clear forgets everything: the store changed in a way a remembered
// refusal cannot tell (a quota reset, a list changed, a new policy).
// Answers the store gives to queries sent before Clear are not remembered.
func (r *Refusals) Clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	clear(r.refused)
	clear(r.absent)
	r.held = nil
}

// RefusalStats are a Refusals' counters, for metrics.
type RefusalStats struct {
	Hits      uint64 // queries refused from memory
	Entries   int    // refusals, guards and held list entries remembered
	Evictions uint64 // entries dropped before they expired, for room
}

// Stats returns the counters.
func (r *Refusals) Stats() RefusalStats {
	r.mu.Lock()
	n := len(r.refused) + len(r.absent) + len(r.held)
	r.mu.Unlock()
	return RefusalStats{Hits: r.hits.Load(), Entries: n, Evictions: r.evictions.Load()}
}
