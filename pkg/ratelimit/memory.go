package ratelimit

import (
	"context"
	"slices"
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
	flags     map[string]struct{}
	lists     map[string]map[string]struct{}
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
	return &Memory{
		now:   time.Now,
		tats:  make(map[string]int64),
		flags: make(map[string]struct{}),
		lists: make(map[string]map[string]struct{}),
	}
}

// Decide answers q as the Redis script does, atomically.
func (m *Memory) Decide(ctx context.Context, q *Query, a *Answer) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	a.reset(q)
	now := m.now().UnixMicro()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, g := range q.Guards {
		if _, ok := m.flags[g]; ok {
			a.Guard = i
			return nil
		}
	}
	if q.Mode == GuardsOnly {
		return nil
	}
	var tats [8]int64
	newTATs := tats[:0]
	for i := range q.Checks {
		var next int64
		a.Results[i], next = gcra(q.Checks[i].Limit, m.tats[q.Checks[i].Key], now)
		newTATs = append(newTATs, next)
	}
	if q.Mode == Consume && a.Admitted(q) {
		for i := range q.Checks {
			if a.Results[i].Allowed {
				m.tats[q.Checks[i].Key] = newTATs[i]
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

// Reset forgets the keys' counters: their limits start afresh.
func (m *Memory) Reset(ctx context.Context, keys ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		delete(m.tats, k)
	}
	return nil
}

// ListAdd puts member on the list named index and sets its guard key flag.
func (m *Memory) ListAdd(ctx context.Context, index, member, flag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lists[index] == nil {
		m.lists[index] = make(map[string]struct{})
	}
	m.lists[index][member] = struct{}{}
	m.flags[flag] = struct{}{}
	return nil
}

// ListRemove takes member off the list and clears its flag.
func (m *Memory) ListRemove(ctx context.Context, index, member, flag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.lists[index], member)
	delete(m.flags, flag)
	return nil
}

// ListMembers returns the list's members, sorted.
func (m *Memory) ListMembers(ctx context.Context, index string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	members := make([]string, 0, len(m.lists[index]))
	for id := range m.lists[index] {
		members = append(members, id)
	}
	slices.Sort(members)
	return members, nil
}

// Ping always succeeds: memory is always reachable.
func (m *Memory) Ping(context.Context) error { return nil }

// Len returns the number of counters held, expired or not.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tats)
}
