package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/joingate/joingate/pkg/ratelimit"
)

// The worker's memory of refusals (ratelimit.Refusals, Options.
// RefusalMemory) is kept true to the store across workers: every change an
// operator makes (joingate ctl: lists, quota resets) and every policy
// reload is followed by Invalidate, which clears it on every worker at
// once, through a NATS broadcast on <Subject>_invalidate (outside the
// queue group's <Subject>.>).
//
// "At once": the broadcast is received on a synchronous subscription that
// the worker looks at before each decision. On one NATS server, whatever
// a worker receives after the broadcast was flushed (a callback sent after
// the operator's ctl command returned) is read from its socket after the
// broadcast, so the decision sees it (on a NATS cluster a route may
// reorder them: deploy/OPERATIONS.md, "Refusals from memory"). A worker
// that was disconnected may have missed one: it clears its memory when it
// sees that it reconnected.

// flushTimeout bounds how long Invalidate waits for NATS to have the
// broadcast.
const flushTimeout = 5 * time.Second

// InvalidateSubject is the subject of the broadcast for a subject prefix.
func InvalidateSubject(subject string) string { return subject + "_invalidate" }

// memory is a worker's memory of refusals and what keeps it true.
type memory struct {
	*ratelimit.Refusals
	store ratelimit.Decider // behind it
	// off is set when the broadcast cannot be received (the NATS user may
	// not subscribe to it): a memory that cannot be cleared is not used.
	off        atomic.Bool
	nc         *nats.Conn
	subject    string                            // of the broadcast
	sub        atomic.Pointer[nats.Subscription] // set by Run
	reconnects atomic.Uint64                     // as last seen
	clears     *prometheus.CounterVec
	// catching serialises catching up with broadcasts (see catchUp).
	catching sync.Mutex
	// afterClear, set by tests only, runs in catchUp between the Clear and
	// the drain: what another goroutine or the network may do there.
	afterClear func()
}

func newMemory(store ratelimit.Decider, size int, nc *nats.Conn, subject string, reg prometheus.Registerer) *memory {
	m := &memory{Refusals: ratelimit.NewRefusals(store, size), store: store, nc: nc, subject: InvalidateSubject(subject)}
	m.reconnects.Store(nc.Stats().Reconnects)
	f := promauto.With(reg)
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "joingate_worker_refusal_memory_hits_total",
		Help: "Callbacks answered from the worker's memory of refusals, without a store call (worker.refusal_memory): refusals, and decisions of a dynamic list entry it holds.",
	}, func() float64 { return float64(m.Stats().Hits) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "joingate_worker_refusal_memory_entries",
		Help: "Refusals, list keys known absent and dynamic list entries that the worker's memory of refusals holds.",
	}, func() float64 { return float64(m.Stats().Entries) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "joingate_worker_refusal_memory_evictions_total",
		Help: "Entries dropped from the memory of refusals before they expired, for room: worker.refusal_memory is too small for the keys refused.",
	}, func() float64 { return float64(m.Stats().Evictions) })
	m.clears = f.NewCounterVec(prometheus.CounterOpts{
		Name: "joingate_worker_refusal_memory_clears_total",
		Help: "Times the memory of refusals was cleared, by cause: broadcast (an operator's change or a reload, made on any worker), reconnect (a broadcast may have been missed), change (an operator's change or a reload made through this worker).",
	}, []string{"cause"})
	for _, c := range []string{"broadcast", "reconnect", "change"} {
		m.clears.WithLabelValues(c)
	}
	return m
}

// listen subscribes to the broadcast; the subscription lasts as long as
// the connection, in the queue group or out.
func (m *memory) listen() error {
	sub, err := m.nc.SubscribeSync(m.subject)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", m.subject, err)
	}
	m.sub.Store(sub)
	return nil
}

// refused turns the memory off for good when NATS refuses this worker's
// subscription to the broadcast (its NATS user may not subscribe), which
// NATS says asynchronously, whenever it subscribes: at start, or after a
// reconnect. A memory nothing can clear must not answer.
func (m *memory) refused(err error, log *slog.Logger) {
	if !permissionViolation(err, "subscription", m.subject) || m.off.Swap(true) {
		return
	}
	log.Error("memory of refusals off: this worker's NATS user may not subscribe to "+m.subject+
		", so operators' changes could not clear it; allow it (deploy/nats/nats.conf) or set worker.refusal_memory: 0", "err", err)
}

// permissionViolation reports whether err is NATS refusing an operation
// (subscription, publish) on subject.
func permissionViolation(err error, op, subject string) bool {
	if err == nil {
		return false
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "permissions violation for "+op) && strings.Contains(err.Error(), `"`+subject+`"`)
}

// Decide answers from memory unless the memory is off.
func (m *memory) Decide(ctx context.Context, q *ratelimit.Query, a *ratelimit.Answer) error {
	if m.off.Load() {
		return m.store.Decide(ctx, q, a)
	}
	return m.Refusals.Decide(ctx, q, a)
}

// catchUp clears the memory when a broadcast arrived or the connection was
// lost since the last decision. It clears before it drains the broadcast
// (or records the reconnect), so that a decision that finds nothing
// pending finds the memory cleared already; and it drains only the
// broadcasts it counted before the Clear, one goroutine at a time, so that
// one arriving after the Clear stays pending and clears again (drained
// unseen, what was learnt since the Clear would outlive its change).
func (m *memory) catchUp() {
	if n := m.nc.Stats().Reconnects; n != m.reconnects.Load() {
		m.clear("reconnect")
		m.reconnects.Store(n)
	}
	sub := m.sub.Load()
	if sub == nil {
		return
	}
	if n, _, _ := sub.Pending(); n == 0 {
		return
	}
	m.catching.Lock()
	defer m.catching.Unlock()
	n, _, _ := sub.Pending()
	if n == 0 {
		return // another goroutine caught up meanwhile
	}
	m.clear("broadcast")
	if m.afterClear != nil {
		m.afterClear()
	}
	for range n {
		if _, err := sub.NextMsg(0); err != nil {
			break
		}
	}
}

func (m *memory) clear(cause string) {
	m.Clear()
	m.clears.WithLabelValues(cause).Inc()
}

// broadcast tells every worker's memory that the store or a policy
// changed, and returns once NATS has the broadcast. NATS refuses a publish
// it does not permit only asynchronously, before the flush's answer: that
// shows as a new last error.
func broadcast(ctx context.Context, nc *nats.Conn, subject string) error {
	subject = InvalidateSubject(subject)
	before := nc.LastError()
	if err := nc.Publish(subject, nil); err != nil {
		return fmt.Errorf("broadcast to %s: %w", subject, err)
	}
	// Flush needs a deadline; ctx may bring an earlier one.
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("broadcast to %s: %w", subject, err)
	}
	if err := nc.LastError(); err != before && permissionViolation(err, "publish", subject) {
		return fmt.Errorf("broadcast to %s: this worker's NATS user may not publish it (deploy/nats/nats.conf): %w", subject, err)
	}
	return nil
}
