package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// decideScript is Memory.Decide in Redis, for one or more queries decided in
// order, with Redis's own clock so that workers on several machines agree.
// Every key is read with MGET before any query is decided, and every TAT a
// query consumes is kept in a table that the next queries read, then written
// once at the end: a batch of n queries costs one script call, one TIME, one
// MGET per 1,000 keys and one PSETEX per changed key, instead of n scripts.
//
// A query carries its caller's deadline: one that runs after it by Redis's
// clock (it waited behind a slow command, or in a socket buffer while Redis
// was busy, while its caller gave up) decides and consumes nothing, so that
// a request the gateway has already answered is not charged.
//
// KEYS are, query after query, its guards then its checks' keys. ARGV is
// built by scriptCall: the number of queries, the number of limits, four
// numbers per limit (emission interval in µs, burst, cost: the requests
// counted at once, shadow 0/1: a batch's queries share a few limits, each
// sent and parsed once), then per query: its number of guards, its number of
// checks, its mode ("c" consume, "p" peek, "g" guards only, with no checks),
// its deadline (µs since the epoch; 0: none), then per check the 1-based
// number of its limit. The reply is, per query,
// 2 + 3 × its checks numbers: guard (the 1-based index of the first existing
// guard, 0 for none, -1 when the deadline had passed), admitted, then
// allowed, remaining, retry_after_us per check (zeros when a guard decided;
// retry_after_us -1: a cost above the burst, never admitted; for an
// admitted check, how long the same cost is refused once it is consumed,
// Result.Then).
// Numbers are integers of microseconds, exact in Lua's doubles up to 2^53 µs
// (year 2255). What Redis spends on a call was counted with callgrind
// (instructions, repeatable): every number the script hands Redis is
// formatted with %d first (Redis 7.0 formats a Lua number with printf's
// %.17g, several times slower), and the library functions are locals.
var decideScript = redis.NewScript(`
local tonumber, floor, max, ceil, format = tonumber, math.floor, math.max, math.ceil, string.format
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = {}
for i = 1, #KEYS, 1000 do
  local j = math.min(i + 999, #KEYS)
  local vals = redis.call("MGET", unpack(KEYS, i, j))
  for n = i, j do
    cur[KEYS[n]] = vals[n - i + 1]
  end
end
local nlimits = tonumber(ARGV[2])
local interval, burst, cost, shadow = {}, {}, {}, {}
for l = 1, nlimits do
  local b = 4 * l - 1
  interval[l], burst[l], cost[l] = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  shadow[l] = ARGV[b + 3] == "1"
end
local dirty = {}
local out = {}
local tats = {}
local k, a = 1, 3 + 4 * nlimits
for q = 1, tonumber(ARGV[1]) do
  local nguards, nchecks, mode = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
  local deadline = tonumber(ARGV[a + 3])
  a = a + 4
  local guard = 0
  if deadline > 0 and now > deadline then
    guard = -1
  else
    for i = nguards, 1, -1 do
      if cur[KEYS[k + i - 1]] then guard = i end
    end
  end
  k = k + nguards
  local o = #out
  out[o + 1] = guard
  out[o + 2] = 0
  if guard == 0 and mode ~= "g" then
    out[o + 2] = 1
    for j = 0, nchecks - 1 do
      local l = tonumber(ARGV[a + j])
      local iv, c, b = interval[l], cost[l], burst[l]
      local tat = tonumber(cur[KEYS[k + j]]) or 0
      if tat < now then tat = now end
      local new_tat = tat + iv * c
      local diff = now - (new_tat - iv * b)
      local r = o + 3 + 3 * j
      tats[j] = false
      if c > b then
        if not shadow[l] then out[o + 2] = 0 end
        out[r], out[r + 1], out[r + 2] = 0, 0, -1
      elseif diff < 0 then
        if not shadow[l] then out[o + 2] = 0 end
        out[r], out[r + 1], out[r + 2] = 0, 0, -diff
      else
        tats[j] = new_tat
        out[r], out[r + 1], out[r + 2] = 1, floor(diff / iv), max(iv * c - diff, 0)
      end
    end
    if mode == "c" and out[o + 2] == 1 then
      for j = 0, nchecks - 1 do
        if tats[j] then
          cur[KEYS[k + j]] = tats[j]
          dirty[KEYS[k + j]] = true
        end
      end
    end
  else
    for r = o + 3, o + 2 + 3 * nchecks do out[r] = 0 end
  end
  k = k + nchecks
  a = a + nchecks
end
for key in pairs(dirty) do
  local tat = cur[key]
  redis.call("PSETEX", key, format("%d", ceil((tat - now) / 1000)), format("%d", tat))
end
return out
`)

// refundScript takes ARGV[i] µs (a check's emission interval times its
// cost) back from each key:
// the undo of a consumed request, for Redis Cluster where one request's keys
// live on several shards and cannot be decided in one script.
var refundScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call("GET", key))
  if tat then
    local back = tat - tonumber(ARGV[i])
    if back <= now then
      redis.call("DEL", key)
    else
      redis.call("SET", key, string.format("%.0f", back), "PX", math.ceil((back - now) / 1000))
    end
  end
end
return 0
`)

// rediser is what Redis needs of a go-redis client (Client, ClusterClient,
// a failover client or UniversalClient).
type rediser interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
	TxPipeline() redis.Pipeliner
	Process(ctx context.Context, cmd redis.Cmder) error
	Time(ctx context.Context) *redis.TimeCmd
	Ping(ctx context.Context) *redis.StatusCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	SMembers(ctx context.Context, key string) *redis.StringSliceCmd
}

// Redis is a Store in Redis. On a standalone or Sentinel-managed Redis
// every query is one script call: atomic and all-or-nothing. On Redis
// Cluster a query whose keys live in several hash slots runs one script per
// slot in one pipelined round trip; when the request is not admitted, what
// the other slots consumed is refunded in a second round trip (see README).
type Redis struct {
	client  rediser
	cluster bool
}

// NewRedis returns a store on client.
func NewRedis(client rediser) *Redis {
	_, cluster := client.(*redis.ClusterClient)
	return &Redis{client: client, cluster: cluster}
}

// Decide answers q.
func (r *Redis) Decide(ctx context.Context, q *Query, a *Answer) error {
	a.reset(q)
	if len(q.Guards) == 0 && (len(q.Checks) == 0 || q.Mode == GuardsOnly) {
		return nil
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if r.cluster {
		if parts := slotParts(q); len(parts) > 1 {
			return r.decideSplit(ctx, q, a, parts, deadlineArg(ctx))
		}
	}
	keys, args := scriptArgs(q, nil, deadlineArg(ctx))
	vals, err := decideScript.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	return readOne(vals, q, nil, a)
}

// part is the subset of a query whose keys share one hash slot (tag):
// guards and checks by their index in the query.
type part struct {
	tag    string
	guards []int
	checks []int
	// Set while reading the part's reply.
	guardHit, failed bool
}

// deadlineArg is ctx's deadline as the script takes it: µs since the epoch,
// or 0 for none.
func deadlineArg(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return d.UnixMicro()
	}
	return 0
}

// errLate is a query that Redis ran after its deadline: it decided and
// consumed nothing. It is the error of a call cut short by its deadline.
var errLate = fmt.Errorf("%w: the query reached Redis after its deadline: %w", ErrStore, context.DeadlineExceeded)

// scriptCall builds one call of decideScript for the queries added to it,
// reused from call to call: its arguments point into its own arrays, so
// that building a call allocates nothing once they have grown.
type scriptCall struct {
	keys []string
	// head: the number of keys, of queries, of limits.
	head [3]int64
	// limits: interval, burst and cost per limit; shadows: its flag.
	limits  []int64
	shadows []any
	// queries: per query its numbers of guards and of checks and its
	// deadline, then its checks' limit numbers; modes: its mode.
	queries []int64
	modes   []any
	args    []any
}

// maxShared is how many of a call's limits a new check is compared with
// to share one: a batch uses the policy's few limits, and a check with
// another one sends it again rather than search further.
const maxShared = 32

// reset empties c for the next call, dropping its references to the
// callers' key strings.
func (c *scriptCall) reset() {
	clear(c.keys)
	c.keys, c.limits, c.shadows, c.queries, c.modes = c.keys[:0], c.limits[:0], c.shadows[:0], c.queries[:0], c.modes[:0]
	c.head = [3]int64{}
}

// add appends q, or the part of q that p names when p is not nil, with its
// caller's deadline (deadlineArg), and returns the number of checks the
// script evaluates for it: where its reply ends (queryReplyLen).
func (c *scriptCall) add(q *Query, p *part, deadline int64) int {
	guards, checks := allIndexes(len(q.Guards), p, true), allIndexes(len(q.Checks), p, false)
	if q.Mode == GuardsOnly {
		// The script evaluates no check, so their keys stay out: on Redis
		// Cluster they may be in other slots than the guards (CROSSSLOT).
		checks = nil
	}
	c.head[1]++
	for _, g := range guards {
		c.keys = append(c.keys, q.Guards[g])
	}
	c.queries = append(c.queries, int64(len(guards)), int64(len(checks)), deadline)
	c.modes = append(c.modes, modeArg(q.Mode))
	for _, i := range checks {
		ch := &q.Checks[i]
		c.keys = append(c.keys, ch.Key)
		c.queries = append(c.queries, c.limit(ch.Limit.interval(), int64(ch.Limit.Burst), ch.cost(), shadowArg(ch.Shadow)))
	}
	return len(checks)
}

// limit returns the 1-based number of the limit (interval, burst, cost,
// shadow) among c's, added when it is not among the first maxShared.
func (c *scriptCall) limit(interval, burst, cost int64, shadow any) int64 {
	for l := range min(len(c.shadows), maxShared) {
		if v := c.limits[3*l:]; v[0] == interval && v[1] == burst && v[2] == cost && c.shadows[l] == shadow {
			return int64(l + 1)
		}
	}
	c.limits = append(c.limits, interval, burst, cost)
	c.shadows = append(c.shadows, shadow)
	return int64(len(c.shadows))
}

// argv returns the script's ARGV for the queries added.
func (c *scriptCall) argv() []any {
	c.head[0], c.head[2] = int64(len(c.keys)), int64(len(c.shadows))
	c.args = append(c.args[:0], &c.head[1], &c.head[2])
	for l := range c.shadows {
		c.args = append(c.args, &c.limits[3*l], &c.limits[3*l+1], &c.limits[3*l+2], c.shadows[l])
	}
	for n, m := 0, 0; n < len(c.queries); m++ {
		nchecks := int(c.queries[n+1])
		c.args = append(c.args, &c.queries[n], &c.queries[n+1], c.modes[m], &c.queries[n+2])
		for i := range nchecks {
			c.args = append(c.args, &c.queries[n+3+i])
		}
		n += 3 + nchecks
	}
	return c.args
}

// scriptArgs returns the script's keys and arguments for q alone, or for
// the part of q that p names when p is not nil, with deadline.
func scriptArgs(q *Query, p *part, deadline int64) ([]string, []any) {
	var c scriptCall
	c.add(q, p, deadline)
	return c.keys, c.argv()
}

// modeArg is a query's mode in the script's arguments.
func modeArg(m Mode) any {
	switch m {
	case Peek:
		return "p"
	case GuardsOnly:
		return "g"
	}
	return "c"
}

// shadowArg is a check's shadow flag in the script's arguments (constants
// in an interface: not allocated).
func shadowArg(shadow bool) any {
	if shadow {
		return "1"
	}
	return "0"
}

func allIndexes(n int, p *part, guards bool) []int {
	if p != nil {
		if guards {
			return p.guards
		}
		return p.checks
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// readOne folds a script reply that holds one query, q or its part p, into a.
func readOne(vals []int64, q *Query, p *part, a *Answer) error {
	nchecks := len(q.Checks)
	if p != nil {
		nchecks = len(p.checks)
	}
	if q.Mode == GuardsOnly {
		nchecks = 0
	}
	this, rest, err := splitReply(vals, nchecks)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("%w: script returned %d values more than asked for", ErrStore, len(rest))
	}
	if err != nil {
		return err
	}
	return readAnswer(this, q, p, a)
}

// queryReplyLen is the length of the script's reply to one query with
// nchecks checks: guard, admitted, three numbers per check.
func queryReplyLen(nchecks int) int { return 2 + 3*nchecks }

// splitReply takes the reply of a query with nchecks checks off the front of
// a script's reply: this, for readAnswer, and the rest.
func splitReply(vals []int64, nchecks int) (this, rest []int64, err error) {
	n := queryReplyLen(nchecks)
	if len(vals) < n {
		return nil, nil, fmt.Errorf("%w: script returned %d values, want at least %d", ErrStore, len(vals), n)
	}
	this, rest = vals[:n], vals[n:]
	if this[0] != 0 {
		this = this[:2] // a guard decided, or the deadline had passed: no verdicts
	}
	return this, rest, nil
}

// readAnswer folds one query's reply (from splitReply) for q, or its part p,
// into a.
func readAnswer(vals []int64, q *Query, p *part, a *Answer) error {
	guards, checks := allIndexes(len(q.Guards), p, true), allIndexes(len(q.Checks), p, false)
	if len(vals) < 2 {
		return fmt.Errorf("%w: script returned %d values", ErrStore, len(vals))
	}
	if vals[0] < 0 {
		return errLate
	}
	if g := vals[0]; g > 0 {
		if int(g) > len(guards) {
			return fmt.Errorf("%w: script named guard %d of %d", ErrStore, g, len(guards))
		}
		if idx := guards[g-1]; a.Guard < 0 || idx < a.Guard {
			a.Guard = idx
		}
		if p != nil {
			p.guardHit = true
		}
		return nil
	}
	if len(vals) == 2 {
		return nil // guards only
	}
	if len(vals) != 2+3*len(checks) {
		return fmt.Errorf("%w: script returned %d values for %d checks", ErrStore, len(vals), len(checks))
	}
	for j, i := range checks {
		v := vals[2+3*j:]
		wait := time.Duration(max(v[2], 0)) * time.Microsecond
		if v[0] == 1 {
			a.Results[i] = Result{Allowed: true, Remaining: int(v[1]), Then: wait}
		} else {
			a.Results[i] = Result{Remaining: int(v[1]), RetryAfter: wait, Never: v[2] < 0}
		}
	}
	return nil
}

// hashTag returns what Redis Cluster hashes of key: the text between the
// first "{" and the next "}", when not empty, else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slotParts splits q by hash tag, in the order tags first appear (guards
// first, so the allow-list's part is first).
func slotParts(q *Query) []*part {
	var parts []*part
	find := func(key string) *part {
		tag := hashTag(key)
		for _, p := range parts {
			if p.tag == tag {
				return p
			}
		}
		p := &part{tag: tag}
		parts = append(parts, p)
		return p
	}
	for i, g := range q.Guards {
		p := find(g)
		p.guards = append(p.guards, i)
	}
	if q.Mode != GuardsOnly {
		for i := range q.Checks {
			p := find(q.Checks[i].Key)
			p.checks = append(p.checks, i)
		}
	}
	return parts
}

// decideSplit runs one script per slot in one pipeline, then refunds what
// was consumed if the request as a whole is not admitted: a guard fired
// somewhere, or a check refused somewhere. Between the two round trips
// other requests may see the refunded quota as used: a brief, conservative
// over-count, never an over-admission.
func (r *Redis) decideSplit(ctx context.Context, q *Query, a *Answer, parts []*part, deadline int64) error {
	pipe := r.client.Pipeline()
	cmds := make([]*redis.Cmd, len(parts))
	keys := make([][]string, len(parts))
	args := make([][]any, len(parts))
	for i, p := range parts {
		keys[i], args[i] = scriptArgs(q, p, deadline)
		cmds[i] = decideScript.EvalSha(ctx, pipe, keys[i], args[i]...)
	}
	pipe.Exec(ctx) // errors are read per command
	var errs []error
	for i, p := range parts {
		vals, err := cmds[i].Int64Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			vals, err = decideScript.Run(ctx, r.client, keys[i], args[i]...).Int64Slice()
		}
		if err == nil {
			err = readOne(vals, q, p, a)
		}
		if err != nil {
			p.failed = true
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 || (q.Mode == Consume && !a.Admitted(q)) {
		// A refund that fails leaves the quota over-counted until the keys'
		// TATs pass (at most one emission interval per rule): the decision,
		// already made, stands. Only a part that failed is an error.
		r.refund(ctx, q, a, parts)
	}
	if a.Guard >= 0 {
		// As from one script: no check has a verdict when a guard decided
		// (parts without the guard evaluated theirs; refund needed them).
		clear(a.Results)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrStore, errors.Join(errs...))
	}
	return nil
}

// refund gives back one request on every check that its part's script
// recorded: in a part that ran, whose guards did not fire and whose
// enforcing checks all admitted (each part's script is all-or-nothing).
func (r *Redis) refund(ctx context.Context, q *Query, a *Answer, parts []*part) error {
	if q.Mode != Consume {
		return nil
	}
	pipe := r.client.Pipeline()
	n := 0
	for _, p := range parts {
		if p.failed || p.guardHit {
			continue
		}
		admitted := true
		for _, i := range p.checks {
			admitted = admitted && (q.Checks[i].Shadow || a.Results[i].Allowed)
		}
		if !admitted {
			continue
		}
		var keys []string
		var args []any
		for _, i := range p.checks {
			if a.Results[i].Allowed {
				keys = append(keys, q.Checks[i].Key)
				args = append(args, q.Checks[i].Limit.interval()*q.Checks[i].cost())
			}
		}
		if len(keys) > 0 {
			refundScript.Eval(ctx, pipe, keys, args...)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("refund: %w", err)
	}
	return nil
}

// Reset forgets the keys' counters: their limits start afresh.
func (r *Redis) Reset(ctx context.Context, keys ...string) error {
	pipe := r.client.Pipeline()
	for _, k := range keys {
		pipe.Del(ctx, k) // one key per command: keys may be on several shards
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w: reset: %w", ErrStore, err)
	}
	return nil
}

// ListAdd puts member on the list named index (a set, for listing) and sets
// its guard key, which the decision script checks.
func (r *Redis) ListAdd(ctx context.Context, index, member, flag string) error {
	pipe := r.listPipeline()
	pipe.Set(ctx, flag, "1", 0)
	pipe.SAdd(ctx, index, member)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w: list add: %w", ErrStore, err)
	}
	return nil
}

// listPipeline writes a list entry's guard key and index together: in one
// transaction (MULTI), so that a worker holding the lists from their
// indexes (Refusals.HoldLists) never sees one without the other; on Redis
// Cluster, where the two live in different slots and the memory is off, a
// pipeline.
func (r *Redis) listPipeline() redis.Pipeliner {
	if r.cluster {
		return r.client.Pipeline()
	}
	return r.client.TxPipeline()
}

// ListRemove takes member off the list and deletes its guard key.
func (r *Redis) ListRemove(ctx context.Context, index, member, flag string) error {
	pipe := r.listPipeline()
	pipe.Del(ctx, flag)
	pipe.SRem(ctx, index, member)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w: list remove: %w", ErrStore, err)
	}
	return nil
}

// ListMembers returns the list's members, sorted.
func (r *Redis) ListMembers(ctx context.Context, index string) ([]string, error) {
	members, err := r.client.SMembers(ctx, index).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: list members: %w", ErrStore, err)
	}
	slices.Sort(members)
	return members, nil
}

// ClockOffset is how far Redis's clock is ahead of this host's (negative:
// behind), within half a round trip. The script compares each request's
// deadline, set by the gateway's clock, with Redis's.
func (r *Redis) ClockOffset(ctx context.Context) (time.Duration, error) {
	before := time.Now()
	t, err := r.client.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("%w: time: %w", ErrStore, err)
	}
	after := time.Now()
	return t.Sub(before.Add(after.Sub(before) / 2)), nil
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: ping: %w", ErrStore, err)
	}
	return nil
}
