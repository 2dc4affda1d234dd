// Package redisconn builds the Redis client of the limiter store from
// configuration, with every timeout set and context deadlines honoured, so
// that a slow or absent Redis costs a decision its budget and no more.
package redisconn

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// New returns a client for url (redis://, rediss:// or unix://). timeout
// bounds each dial, read and write; poolSize bounds connections, and should
// match the decisions made at once.
func New(url string, timeout time.Duration, poolSize int) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	opts.DialTimeout = timeout
	opts.ReadTimeout = timeout
	opts.WriteTimeout = timeout
	opts.PoolTimeout = timeout
	// A request's deadline cuts a Redis call short; a retry after it is
	// pointless, so one retry at most, quickly.
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = 1
	opts.MinRetryBackoff = time.Millisecond
	opts.MaxRetryBackoff = 10 * time.Millisecond
	opts.PoolSize = poolSize
	opts.ClientName = "joingate"
	return redis.NewClient(opts), nil
}
