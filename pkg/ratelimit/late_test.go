package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/redisconn"
	"github.com/joingate/joingate/pkg/testenv"
)

// busyScript keeps Redis's one thread busy for ARGV[1] µs: what a slow
// command of another client does to every other one.
const busyScript = `
local t = redis.call("TIME")
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
repeat
  t = redis.call("TIME")
until tonumber(t[1]) * 1000000 + tonumber(t[2]) - start > tonumber(ARGV[1])
return 0`

// A query that Redis runs after its caller's deadline consumes nothing:
// while another client's command keeps Redis busy, the caller gives up
// (and its gateway has answered); the query still reaches Redis when it is
// free, and runs. Alone and through the Batcher.
func TestLateQueryConsumesNothing(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	other := func(timeout time.Duration) *redis.Client {
		t.Helper()
		c, err := redisconn.New(srv.URL, timeout, 2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	busy, probe := other(5*time.Second), other(20*time.Millisecond)
	for _, v := range []struct {
		name string
		s    store
	}{{"redis", NewRedis(srv.Client)}, {"batcher", newBatcher(t, srv.Client, false, 0)}} {
		t.Run(v.name, func(t *testing.T) {
			q := Query{Checks: []Check{{Key: "late:" + v.name, Limit: Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}
			// A query in time is decided and charged, as usual.
			if a := decide(t, v.s, Query{Checks: []Check{{Key: "on-time:" + v.name, Limit: q.Checks[0].Limit}}}); !a.Results[0].Allowed {
				t.Fatalf("on time: %+v", a)
			}
			before := scriptCalls(t, probe)
			done := make(chan error, 1)
			go func() { done <- busy.Eval(ctx, busyScript, nil, 600_000).Err() }()
			// Redis is busy when a PING gets no answer within 20ms.
			if !testenv.Eventually(5*time.Second, func() bool { return probe.Ping(ctx).Err() != nil }) {
				t.Fatal("Redis never got busy")
			}
			short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			err := v.s.Decide(short, &q, &Answer{})
			if busyErr := <-done; busyErr != nil {
				t.Fatal(busyErr)
			}
			// The call's deadline cut it short (go-redis says "i/o timeout"
			// when it ends a read at the deadline).
			if !errors.Is(err, ErrStore) {
				t.Fatalf("Decide while Redis is busy: %v, want ErrStore", err)
			}
			// The query ran once Redis was free (so it would have charged)...
			if !testenv.Eventually(5*time.Second, func() bool { return scriptCalls(t, probe) > before }) {
				t.Fatalf("the late query never ran (EVALSHA calls %d before, %d now): the test proves nothing", before, scriptCalls(t, probe))
			}
			// ...and consumed nothing.
			if n, err := srv.Client.Exists(ctx, q.Checks[0].Key).Result(); err != nil || n != 0 {
				t.Fatalf("EXISTS %s = %d, %v: the late query was charged", q.Checks[0].Key, n, err)
			}
		})
	}
}

// scriptCalls is the number of EVALSHA commands Redis has run (with the
// one of the on-time query, and the busy script's EVAL not counted).
func scriptCalls(t *testing.T, c *redis.Client) int {
	t.Helper()
	var info string
	if !testenv.Eventually(5*time.Second, func() bool {
		var err error
		info, err = c.Info(context.Background(), "commandstats").Result()
		return err == nil
	}) {
		t.Fatal("INFO commandstats: no answer")
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return n
		}
	}
	return 0
}
