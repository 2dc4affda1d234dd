package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/testenv"
)

// The oracle: go-redis/redis_rate, whose GCRA joingate's follows. Both run
// on one redis-server and read its clock; every request goes to redis_rate
// and then, at once, to our store on its own key, so the two see the same
// instants give or take the time between the calls (tens of µs).
//
// Deliberate differences, which the comparison allows for:
//   - Arithmetic: redis_rate computes in float seconds since 2017 and keeps
//     the emission interval Period/Rate exact; ours computes in integer µs
//     and rounds the interval down to a whole µs (for 3 per 100ms: 33333µs
//     instead of 33333.3µs, a rate faster by one part in 10^5). Decisions
//     agree away from the instants where a request becomes due.
//   - Remaining: both report floor((now - allow_at) / interval), but
//     redis_rate's float subtraction of two numbers near 3*10^8 s loses a
//     few tenths of a µs and can land just under a whole number: it may
//     report one less than ours (never more).
//   - RetryAfter: redis_rate reports -1 when it admits, ours 0; when both
//     refuse they agree to within the time between two calls.
//   - Key TTL: redis_rate expires keys after whole seconds (EX), ours after
//     the TAT (PX); a key past its TAT decides like an absent one in both.
//
// The comparison is exact: requests are sent in bursts at instants chosen
// half an emission interval away from any instant where a request becomes
// due (read from our stored TAT), so no pair of calls can straddle one. If
// the machine stalls a request past half that margin, the rest of that case
// is compared with a tolerance: either limiter may be one request ahead
// (and Remaining one apart), and the next disagreement must undo it; one
// request too many per burst still fails on the second burst (see
// TestOracleCatchesOneTooMany).
func TestGCRAAgainstRedisRate(t *testing.T) {
	srv := testenv.StartRedis(t)
	cases := []struct {
		name  string
		limit Limit
		// Waits before each paced burst, in emission intervals after our
		// limiter's next due instant (so k=1 finds one request due,
		// k>burst a full burst).
		waits []int
	}{
		{"5 per s burst 5", Limit{Rate: 5, Period: time.Second, Burst: 5}, []int{1, 2, 1, 4, 7}},
		{"10 per min burst 3", Limit{Rate: 10, Period: time.Minute, Burst: 3}, nil},
		{"1 per s burst 10", Limit{Rate: 1, Period: time.Second, Burst: 10}, []int{1, 2}},
		{"3 per 100ms burst 1", Limit{Rate: 3, Period: 100 * time.Millisecond, Burst: 1}, []int{1, 1, 2, 1, 3, 1, 5, 1}},
		{"10 per s burst 20", Limit{Rate: 10, Period: time.Second, Burst: 20}, []int{1, 3, 22}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := newOracleRun(srv.Client, c.name, c.limit, c.limit)
			o.run(c.waits)
			for i, p := range o.problems {
				if i == 10 {
					t.Errorf("and %d more", len(o.problems)-i)
					break
				}
				t.Error(p)
			}
			t.Logf("%d requests, %d admitted; redis_rate's Remaining one lower %d times; %s",
				o.steps, o.admitted, o.remainingLower, o.mode())
		})
	}
}

// TestOracleCatchesOneTooMany shows that the comparison has teeth: a
// limiter that admits one request too many per burst is caught, even by
// the tolerance of a late run (three full bursts put it three ahead).
func TestOracleCatchesOneTooMany(t *testing.T) {
	srv := testenv.StartRedis(t)
	lim := Limit{Rate: 5, Period: 250 * time.Millisecond, Burst: 5}
	loose := lim
	loose.Burst++
	o := newOracleRun(srv.Client, "mutant", lim, loose)
	o.late = true
	o.run([]int{7, 7})
	for _, p := range o.problems {
		if strings.Contains(p, "ours now +2") {
			t.Logf("caught: %s", p)
			return
		}
	}
	t.Fatalf("a burst of %d against redis_rate's %d went unnoticed: %q", loose.Burst, lim.Burst, o.problems)
}

// oracleRun drives redis_rate and our store in lock step on one key each.
type oracleRun struct {
	rdb   *redis.Client
	their *redis_rate.Limiter
	ours  *Redis
	key   string
	tl    redis_rate.Limit
	check Check

	steps, admitted, remainingLower int
	// maxGap is the longest time between the two calls of one request.
	// When a request finds a key idle, each limiter's clock starts from its
	// own call, so their due instants can differ by up to one gap.
	maxGap time.Duration
	// lead is how many more requests ours admitted than redis_rate.
	lead int
	// deadline ends the safe part of the current burst: until then no
	// request can become due for either limiter.
	deadline time.Time
	// late is set once a request came after its burst's deadline: from
	// then on, either limiter may admit one request more than the other.
	late     bool
	problems []string
}

func newOracleRun(rdb *redis.Client, name string, theirs, ours Limit) *oracleRun {
	return &oracleRun{
		rdb:   rdb,
		their: redis_rate.NewLimiter(rdb),
		ours:  NewRedis(rdb),
		key:   "oracle:" + name,
		tl:    redis_rate.Limit{Rate: theirs.Rate, Burst: theirs.Burst, Period: theirs.Period},
		check: Check{Key: "ours:" + name, Limit: ours},
	}
}

func (o *oracleRun) mode() string {
	if o.late {
		return "a burst ran late: tolerant from then on"
	}
	return "every burst on time: exact"
}

func (o *oracleRun) fail(format string, args ...any) {
	o.problems = append(o.problems, fmt.Sprintf("request %d: ", o.steps)+fmt.Sprintf(format, args...))
}

// run sends a first burst at once, then a burst after each wait, and
// compares every decision.
func (o *oracleRun) run(waits []int) {
	interval := time.Duration(o.check.Limit.interval()) * time.Microsecond
	// From a fresh key the first due instant is one interval away.
	o.burst(time.Now(), interval/2)
	for _, k := range waits {
		tat, err := o.rdb.Get(context.Background(), o.check.Key).Int64()
		if err != nil {
			o.fail("read our TAT: %v", err)
			return
		}
		// The next request is due at tat - (burst-1) intervals; aim half an
		// interval after the k-th due instant from there.
		due := time.UnixMicro(tat - int64(o.check.Limit.Burst-1)*o.check.Limit.interval())
		at := due.Add(time.Duration(k-1)*interval + interval/2)
		time.Sleep(time.Until(at))
		o.burst(at, interval/4)
	}
}

// burst sends requests until both limiters refuse one (at most burst+2).
// Each must come within margin of start (half the time to the next due
// instant); a later one might straddle a due instant.
func (o *oracleRun) burst(start time.Time, margin time.Duration) {
	o.deadline = start.Add(margin)
	for range o.check.Limit.Burst + 2 {
		if o.step() {
			break
		}
	}
}

// step sends one request to both and compares; it reports whether both
// refused.
func (o *oracleRun) step() bool {
	ctx := context.Background()
	o.steps++
	t0 := time.Now()
	theirs, err := o.their.Allow(ctx, o.key, o.tl)
	if err != nil {
		o.fail("redis_rate: %v", err)
		return true
	}
	q := Query{Checks: []Check{o.check}}
	var a Answer
	if err := o.ours.Decide(ctx, &q, &a); err != nil {
		o.fail("ours: %v", err)
		return true
	}
	now := time.Now()
	o.maxGap = max(o.maxGap, now.Sub(t0))
	// Each limiter's clock may have started up to maxGap apart.
	if now.Add(o.maxGap).After(o.deadline) {
		o.late = true
	}
	ours := a.Results[0]
	theirsAllowed := theirs.Allowed == 1
	if ours.Allowed {
		o.admitted++
	}

	switch {
	case ours.Allowed != theirsAllowed:
		if ours.Allowed {
			o.lead++
		} else {
			o.lead--
		}
		// Late, a due instant between the calls, or between the two
		// limiters' clocks, puts one of them a request ahead; the next
		// disagreement must undo it.
		if !o.late || o.lead < -1 || o.lead > 1 {
			o.fail("ours allowed=%v, redis_rate allowed=%v (ours now %+d)", ours.Allowed, theirsAllowed, o.lead)
		}
	case ours.Allowed:
		if theirs.RetryAfter != -1 || ours.RetryAfter != 0 {
			o.fail("admitted with RetryAfter %v (ours) and %v (redis_rate), want 0 and -1", ours.RetryAfter, theirs.RetryAfter)
		}
		switch d := ours.Remaining - theirs.Remaining; {
		case d == 1:
			o.remainingLower++
		case d == -1 && o.late:
		case d != 0:
			o.fail("Remaining %d (ours) and %d (redis_rate)", ours.Remaining, theirs.Remaining)
		}
	default:
		// The two waits differ by the calls' gaps: this one (ours is asked
		// later) and the one that started the clocks (see maxGap); 1ms
		// covers the rounding of either.
		d := theirs.RetryAfter - ours.RetryAfter
		if d < -o.maxGap-time.Millisecond || d > o.maxGap+time.Millisecond {
			o.fail("RetryAfter %v (ours) and %v (redis_rate), calls up to %v apart", ours.RetryAfter, theirs.RetryAfter, o.maxGap)
		}
		if ours.Remaining != 0 || theirs.Remaining != 0 {
			o.fail("refused with Remaining %d (ours) and %d (redis_rate)", ours.Remaining, theirs.Remaining)
		}
	}
	return !ours.Allowed && !theirsAllowed
}
