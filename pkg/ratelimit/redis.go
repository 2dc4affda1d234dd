package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// allowScript is gcra() for every key in one call, with Redis's own clock so
// that workers on several machines agree. KEYS are the checks' keys; ARGV
// holds three numbers per key: emission interval (µs), burst, shadow (0/1).
// It returns {admitted, then allowed, remaining, retry_after_us per key} and
// writes only when every enforcing check allows. Numbers are integers of
// microseconds, exact in Lua's doubles up to 2^53 µs (year 2255).
var allowScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i*3-2])
  local burst = tonumber(ARGV[i*3-1])
  local shadow = ARGV[i*3] == "1"
  local tat = tonumber(redis.call("GET", key)) or 0
  if tat < now then tat = now end
  local new_tat = tat + interval
  local diff = now - (new_tat - interval * burst)
  if diff < 0 then
    if not shadow then out[1] = 0 end
    table.insert(out, 0)
    table.insert(out, 0)
    table.insert(out, -diff)
  else
    tats[i] = new_tat
    table.insert(out, 1)
    table.insert(out, math.floor(diff / interval))
    table.insert(out, 0)
  end
end
if out[1] == 1 then
  for i, key in ipairs(KEYS) do
    local new_tat = tats[i]
    if new_tat then
      redis.call("SET", key, string.format("%.0f", new_tat), "PX", math.ceil((new_tat - now) / 1000))
    end
  end
end
return out
`)

// rediser is what Redis needs of a go-redis client (any of Client,
// ClusterClient, Ring or UniversalClient).
type rediser interface {
	redis.Scripter
	Ping(ctx context.Context) *redis.StatusCmd
}

// Redis is a Store in Redis: every request's checks are evaluated and
// recorded in one script call, so they are all-or-nothing and atomic.
type Redis struct {
	client rediser
}

// NewRedis returns a store on client.
func NewRedis(client rediser) *Redis {
	return &Redis{client: client}
}

// Allow evaluates every check in one round trip and, if all enforcing checks
// allow, records the request on every check that allowed it.
func (r *Redis) Allow(ctx context.Context, checks []Check, results []Result) error {
	if len(checks) == 0 {
		return nil
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	keys := make([]string, len(checks))
	args := make([]any, 0, 3*len(checks))
	for i := range checks {
		c := &checks[i]
		keys[i] = c.Key
		shadow := "0"
		if c.Shadow {
			shadow = "1"
		}
		args = append(args, c.Limit.interval(), c.Limit.Burst, shadow)
	}
	vals, err := allowScript.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	if len(vals) != 1+3*len(checks) {
		return fmt.Errorf("%w: script returned %d values for %d checks", ErrStore, len(vals), len(checks))
	}
	for i := range checks {
		v := vals[1+3*i:]
		results[i] = Result{
			Allowed:    v[0] == 1,
			Remaining:  int(v[1]),
			RetryAfter: time.Duration(v[2]) * time.Microsecond,
		}
	}
	return nil
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: ping: %w", ErrStore, err)
	}
	return nil
}
