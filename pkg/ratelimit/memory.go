package ratelimit

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// Memory is a Store in process memory with the same semantics as Redis: for
// a single process (`joingate all` without Redis) and tests. Keys expire when
// their TAT has passed. Counters are spread over shards, and one shard is
// swept per sweepEvery/shards, so that every key is looked at once per
// sweepEvery however many there are, a little at a time.
type Memory struct {
	now  func() time.Time
	seed maphash.Seed

	mu        sync.Mutex
	tats      [shards]map[string]int64 // key -> TAT in µs since the Unix epoch
	flags     map[string]struct{}
	lists     map[string]map[string]struct{}
	nextSweep int64
	sweepNext int // the shard swept next
}

const (
	shards     = 64
	sweepEvery = int64(time.Second / time.Microsecond)
)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	m := &Memory{
		now:   time.Now,
		seed:  maphash.MakeSeed(),
		flags: make(map[string]struct{}),
		lists: make(map[string]map[string]struct{}),
	}
	for i := range m.tats {
		m.tats[i] = make(map[string]int64)
	}
	return m
}

func (m *Memory) shard(key string) map[string]int64 {
	return m.tats[maphash.String(m.seed, key)%shards]
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
		c := &q.Checks[i]
		a.Results[i], next = gcra(c.Limit, c.cost(), m.shard(c.Key)[c.Key], now)
		newTATs = append(newTATs, next)
	}
	if q.Mode == Consume && a.Admitted(q) {
		for i := range q.Checks {
			if a.Results[i].Allowed {
				m.shard(q.Checks[i].Key)[q.Checks[i].Key] = newTATs[i]
			}
		}
	}
	if now >= m.nextSweep {
		m.sweep(now)
	}
	return nil
}

// sweep deletes the expired counters of the next shard.
func (m *Memory) sweep(now int64) {
	m.nextSweep = now + sweepEvery/shards
	for k, tat := range m.tats[m.sweepNext] {
		if tat <= now {
			delete(m.tats[m.sweepNext], k)
		}
	}
	m.sweepNext = (m.sweepNext + 1) % shards
}

// Reset forgets the keys' counters: their limits start afresh.
func (m *Memory) Reset(ctx context.Context, keys ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		delete(m.shard(k), k)
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
	n := 0
	for _, shard := range m.tats {
		n += len(shard)
	}
	return n
}
