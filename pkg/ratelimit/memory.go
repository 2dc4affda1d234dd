package ratelimit

import (
	"context"
	"sync"
	"time"
)

// Memory is a Store in process memory with the same semantics as Redis: for
// a single process (`joingate all` without Redis) and tests. Keys expire when
// their TAT has passed; expired keys are swept incrementally.
type Memory struct {
	now func() time.Time

	mu        sync.Mutex
	tats      map[string]int64 // key -> TAT in µs since the Unix epoch
	nextSweep int64
}

// sweepEvery and sweepBudget bound the cost of expiry: at most one sweep a
// second, visiting at most sweepBudget keys (Go's random map order spreads
// successive sweeps over the whole map).
const (
	sweepEvery  = int64(time.Second / time.Microsecond)
	sweepBudget = 10000
)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{now: time.Now, tats: make(map[string]int64)}
}

// Allow evaluates every check and, if all enforcing checks allow, records
// the request on every check that allowed it.
func (m *Memory) Allow(ctx context.Context, checks []Check, results []Result) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	now := m.now().UnixMicro()
	m.mu.Lock()
	defer m.mu.Unlock()
	var tats [8]int64
	newTATs := tats[:0]
	for i := range checks {
		tat := m.tats[checks[i].Key]
		if tat < now {
			tat = 0 // expired
		}
		var next int64
		results[i], next = gcra(checks[i].Limit, tat, now)
		newTATs = append(newTATs, next)
	}
	if Admitted(checks, results) {
		for i := range checks {
			if results[i].Allowed {
				m.tats[checks[i].Key] = newTATs[i]
			}
		}
	}
	if now >= m.nextSweep {
		m.sweep(now)
	}
	return nil
}

func (m *Memory) sweep(now int64) {
	m.nextSweep = now + sweepEvery
	n := 0
	for k, tat := range m.tats {
		if tat <= now {
			delete(m.tats, k)
		}
		if n++; n == sweepBudget {
			return
		}
	}
}

// Ping always succeeds: memory is always reachable.
func (m *Memory) Ping(context.Context) error { return nil }

// Len returns the number of keys held, expired or not.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tats)
}
