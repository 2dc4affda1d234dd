// Package ratelimit admits requests against several GCRA limits at once,
// all or nothing, in Redis (one script call) or in process memory.
//
// GCRA ("generic cell rate algorithm", as in go-redis/redis_rate) keeps one
// number per key: the theoretical arrival time (TAT) of the next request. A
// limit of Rate per Period spaces requests Period/Rate apart and lets Burst
// of them arrive at once. Both stores compute in whole microseconds with the
// same formulas, so they decide alike.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limit is Rate requests per Period, with bursts of up to Burst requests.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// Validate reports a limit that cannot be enforced.
func (l Limit) Validate() error {
	switch {
	case l.Rate <= 0:
		return fmt.Errorf("limit must be positive, got %d", l.Rate)
	case l.Period < time.Millisecond:
		return fmt.Errorf("period must be at least 1ms, got %s", l.Period)
	case l.Burst <= 0:
		return fmt.Errorf("burst must be positive, got %d", l.Burst)
	case l.Period/time.Duration(l.Rate) < time.Microsecond:
		return fmt.Errorf("limit %d per %s is finer than one request per microsecond", l.Rate, l.Period)
	case l.interval() > maxSpan/int64(l.Burst):
		// Both stores compute in µs, Redis in Lua's doubles: exact below 2^53.
		return fmt.Errorf("burst %d of %d per %s spans more than 140 years", l.Burst, l.Rate, l.Period)
	}
	return nil
}

// maxSpan bounds, in µs, the time a burst spans (Validate), so that every
// TAT stays exact in a double.
const maxSpan = 1 << 52

// interval is the emission interval in microseconds: the spacing of
// requests at the sustained rate.
func (l Limit) interval() int64 {
	return max(l.Period.Microseconds()/int64(l.Rate), 1)
}

// Check asks for Cost requests at once on Key under Limit (0 counts as 1):
// an invitation of five users is five requests of its rules, admitted or
// refused together. A cost above the burst is never admitted (Result.Never).
// A Shadow check is evaluated and reported but never refuses the request.
type Check struct {
	Key    string
	Limit  Limit
	Shadow bool
	Cost   int
}

// cost is the number of requests c counts.
func (c *Check) cost() int64 { return max(int64(c.Cost), 1) }

// Result is one check's verdict. RetryAfter is set when it refuses: the wait
// until it would admit the check's cost, unless Never: a cost above the
// burst, which no wait admits. When it admits, Then is how long, once this
// check's cost is consumed, the same cost would be refused (0: it would be
// admitted at once): what the memory of refusals learns from an admission.
type Result struct {
	Allowed    bool
	Remaining  int
	RetryAfter time.Duration
	Then       time.Duration
	Never      bool
}

// Mode says what a Decide call may do.
type Mode int

const (
	// Consume evaluates the checks and, when every enforcing check admits,
	// records the request against every check that admitted it.
	Consume Mode = iota
	// Peek evaluates the checks and records nothing: what would happen.
	Peek
	// GuardsOnly looks at the guards and evaluates no check.
	GuardsOnly
)

// Query is one decision's worth of store work, done in one round trip.
//
// Guards are keys of list entries (allow-list, deny lists) in priority
// order: the first that exists decides the request, and then no check is
// evaluated and nothing is consumed.
type Query struct {
	Guards []string
	Checks []Check
	Mode   Mode
}

// Answer is the store's reply to a Query. Guard is the index of the first
// guard that exists, or -1; Results (one per check) are set only when Guard
// is -1 and the mode evaluates checks.
type Answer struct {
	Guard   int
	Results []Result
}

// reset prepares a for q, reusing its memory.
func (a *Answer) reset(q *Query) {
	a.Guard = -1
	if cap(a.Results) < len(q.Checks) {
		a.Results = make([]Result, len(q.Checks))
	}
	a.Results = a.Results[:len(q.Checks)]
	clear(a.Results)
}

// ErrStore is wrapped by errors from the backing store (Redis down, timeout,
// script error): the decision could not be made.
var ErrStore = errors.New("rate limit store")

// Admitted reports whether no guard decided and every enforcing
// (non-shadow) check allowed.
func (a *Answer) Admitted(q *Query) bool {
	if a.Guard >= 0 {
		return false
	}
	for i := range q.Checks {
		if !q.Checks[i].Shadow && !a.Results[i].Allowed {
			return false
		}
	}
	return true
}

// gcra evaluates one check of cost requests at time now (µs) against the
// stored TAT (0 when the key is absent). It returns the verdict and the TAT
// to store if the requests are admitted. Redis's script (redis.go) is the
// same arithmetic.
func gcra(l Limit, cost, tat, now int64) (Result, int64) {
	if cost > int64(l.Burst) {
		return Result{Never: true}, 0
	}
	interval := l.interval()
	tat = max(tat, now)
	newTAT := tat + interval*cost
	allowAt := newTAT - interval*int64(l.Burst)
	diff := now - allowAt
	if diff < 0 {
		return Result{RetryAfter: time.Duration(-diff) * time.Microsecond}, 0
	}
	// The next request of the same cost is refused until newTAT +
	// interval*(cost-burst): interval*cost-diff from now.
	return Result{Allowed: true, Remaining: int(diff / interval), Then: time.Duration(max(interval*cost-diff, 0)) * time.Microsecond}, newTAT
}

// ctxErr turns a context that ended before the store was asked into a store
// error, so callers see one kind of failure.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	return nil
}
