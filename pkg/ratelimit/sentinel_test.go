package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/testenv"
)

// TestSentinel runs the conformance suite through a failover client: the
// master that a sentinel names decides every query in one script, as a
// standalone Redis does.
func TestSentinel(t *testing.T) {
	s := testenv.StartSentinel(t)
	if NewRedis(s.Client).cluster {
		t.Fatal("a failover client was taken for a cluster client")
	}
	testStore(t, func(t *testing.T) store {
		if err := s.Client.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		return NewRedis(s.Client)
	})

	// The client was given only the sentinel's address; the counters are
	// on the master it named.
	ctx := context.Background()
	c := Check{Key: "via-sentinel", Limit: Limit{Rate: 1, Period: time.Hour, Burst: 1}}
	decide(t, NewRedis(s.Client), Query{Checks: []Check{c}})
	master := redis.NewClient(&redis.Options{Addr: s.MasterAddr})
	defer master.Close()
	if n, err := master.Exists(ctx, c.Key).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS %s on the master = %d, %v; want 1", c.Key, n, err)
	}
}
