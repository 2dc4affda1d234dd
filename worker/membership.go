package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/joingate/joingate/pkg/breaker"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/redisconn"
)

// Queue-group membership is a worker's readiness. A worker that cannot
// decide (its store failing, its breaker open) would answer
// worker.on_store_error for its share of the callbacks while its peers
// enforce the limits; out of the group, the peers take the whole load, and
// when no worker is left the gateway gets "no responders" and answers
// gateway.fallback at once.

const (
	// flapWindow: a worker that must leave again within this time of
	// rejoining waits twice as long before the next rejoin.
	flapWindow = time.Minute
	// maxRejoinAfter caps that wait.
	maxRejoinAfter = 30 * time.Second
)

// hysteresis decides when a worker out of the queue group rejoins: once
// every probe for hold has succeeded. hold starts at 0 (a new worker joins
// at its first good probe), is base after a leave, and doubles, up to
// maxRejoinAfter, for each leave within flapWindow of the rejoin before
// it, so that a flapping Redis does not churn subscriptions.
type hysteresis struct {
	base, hold time.Duration
	okSince    time.Time // zero while the last probe failed
	joinedAt   time.Time
}

// probed records a probe made while out and reports whether to rejoin.
func (h *hysteresis) probed(ok bool, now time.Time) bool {
	if !ok {
		h.okSince = time.Time{}
		return false
	}
	if h.okSince.IsZero() {
		h.okSince = now
	}
	return now.Sub(h.okSince) >= h.hold
}

func (h *hysteresis) joined(now time.Time) { h.joinedAt = now }

func (h *hysteresis) left(now time.Time) {
	h.okSince = time.Time{}
	if !h.joinedAt.IsZero() && now.Sub(h.joinedAt) < flapWindow && h.hold > 0 {
		h.hold = min(2*h.hold, max(maxRejoinAfter, h.base))
	} else {
		h.hold = h.base
	}
}

// status is what Ready reports: nil while in the queue group.
type status struct{ out error }

// errDraining is the status once Run has been told to stop.
var errDraining = errors.New("draining: out of the queue group")

// keepMembership probes the store every ProbeInterval and joins or leaves
// the queue group (handler takes its messages) until ctx is done; it
// returns the subscriptions in force then, or nil.
func (w *Worker) keepMembership(ctx context.Context, handler nats.MsgHandler) ([]*nats.Subscription, error) {
	h := hysteresis{base: w.opts.RejoinAfter}
	tick := time.NewTicker(w.opts.ProbeInterval)
	defer tick.Stop()
	var (
		sub       []*nats.Subscription
		lastCause string // of the last failed probe, "" after a good one
	)
	for {
		if sub != nil && w.breaker.State() == breaker.Open {
			w.leave(sub, "store failing")
			sub = nil
			h.left(time.Now())
		}
		err := w.probe()
		cause := ""
		if err != nil {
			cause = causeOf(err)
		}
		if cause != lastCause {
			w.logProbe(cause, err)
			lastCause = cause
		}
		if w.opts.Conn.IsClosed() {
			// nats.go gives up after the same authentication error twice;
			// only a restart (with the cause fixed) brings the worker back.
			return sub, fmt.Errorf("nats connection closed: %v", w.opts.Conn.LastError())
		}
		if sub == nil {
			rejoin := h.probed(err == nil, time.Now())
			switch {
			case !w.opts.Conn.IsConnected():
				w.setStatus(errors.New("waiting for NATS: out of the queue group"))
			case rejoin:
				if sub, err = w.join(handler); err != nil {
					return nil, err
				}
				h.joined(time.Now())
			case err != nil:
				w.setStatus(fmt.Errorf("store failing (%s): out of the queue group: %w", cause, err))
			default:
				w.setStatus(fmt.Errorf("store answers again: rejoining the queue group after %s of good probes", h.hold))
			}
		}
		select {
		case <-ctx.Done():
			w.setStatus(errDraining)
			return sub, nil
		case <-tick.C:
		case <-w.tripped:
		}
	}
}

// probe pings the store within the store budget. While the breaker is
// closed (in the group, and before the first join), its outcome counts
// like a decision's, so that an idle worker notices a failing store too.
func (w *Worker) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.StoreBudget)
	defer cancel()
	err := w.opts.Store.Ping(ctx)
	if err != nil {
		w.metrics.storeErrors.WithLabelValues(callProbe, causeOf(err)).Inc()
	}
	if w.breaker.State() == breaker.Closed {
		w.breaker.Done(err != nil)
	}
	return err
}

// logProbe says when the probes start failing, change cause, or recover:
// once per change, at ERROR for what an operator must fix.
func (w *Worker) logProbe(cause string, err error) {
	switch {
	case cause == "":
		w.log.Info("store answers")
	case redisconn.NeedsOperator(cause):
		w.log.Error("store refuses joingate: fix the configuration (redis.url, redis.tls)", "cause", cause, "err", err)
	default:
		w.log.Warn("store not answering", "cause", cause, "err", err)
	}
}

// subjects are the worker's subscriptions: three per command it decides,
// one for each form of request (natsconn), so that NATS permissions and
// monitoring can tell the commands apart.
func (w *Worker) subjects() []string {
	subjects := make([]string, 0, 3*len(callback.Commands))
	for _, c := range callback.Commands {
		subjects = append(subjects, natsconn.TaggedSubject(w.opts.Subject, c), natsconn.FramedSubject(w.opts.Subject, c), w.prefix+c)
	}
	return subjects
}

func (w *Worker) join(handler nats.MsgHandler) ([]*nats.Subscription, error) {
	w.breaker.Reset()
	var subs []*nats.Subscription
	for _, subject := range w.subjects() {
		sub, err := w.opts.Conn.QueueSubscribe(subject, w.opts.Queue, handler)
		if err == nil {
			// Beyond these, NATS drops requests (slow consumer) and their
			// gateways fall back; the backlog is useless long before.
			err = sub.SetPendingLimits(100_000, 64<<20)
			subs = append(subs, sub)
		}
		if err != nil {
			unsubscribe(subs)
			return nil, fmt.Errorf("subscribe %s: %w", subject, err)
		}
	}
	// The subscription must reach the server before readiness says so.
	if err := w.opts.Conn.FlushTimeout(time.Second); err != nil {
		w.log.Warn("flush after subscribe", "err", err)
	}
	w.metrics.member.Set(1)
	w.metrics.memberships.WithLabelValues(joinedGroup).Inc()
	w.setStatus(nil)
	w.log.Info("joined the queue group", "subjects", w.subjects(), "queue", w.opts.Queue)
	return subs, nil
}

func unsubscribe(subs []*nats.Subscription) {
	for _, sub := range subs {
		sub.Unsubscribe()
	}
}

// leave drains sub: what NATS has delivered is still answered (the breaker
// is open: worker.on_store_error, at once), nothing more arrives. While
// NATS is away it unsubscribes instead: nats.go holds a drain's UNSUB back
// during a reconnect and sends the SUB again on reconnecting, which would
// leave the server a queue member whose messages the client drops.
func (w *Worker) leave(subs []*nats.Subscription, why string) {
	for _, sub := range subs {
		if !w.opts.Conn.IsConnected() || sub.Drain() != nil {
			sub.Unsubscribe()
		}
	}
	// As in join: when readiness says out, the server has the UNSUBs.
	if w.opts.Conn.IsConnected() {
		if err := w.opts.Conn.FlushTimeout(time.Second); err != nil {
			w.log.Warn("flush after leaving", "err", err)
		}
	}
	w.metrics.member.Set(0)
	w.metrics.memberships.WithLabelValues(leftGroup).Inc()
	w.setStatus(fmt.Errorf("%s: out of the queue group", why))
	w.log.Warn("left the queue group: " + why + "; peers take the load, the gateway falls back when none is left")
}

func (w *Worker) setStatus(out error) { w.status.Store(&status{out: out}) }

// causeOf names a store failure for the metric: the breaker's refusal, or
// what Redis said.
func causeOf(err error) string {
	if errors.Is(err, breaker.ErrOpen) {
		return causeBreakerOpen
	}
	return redisconn.Cause(err)
}

// logLevel is the level of a store failure's log line.
func logLevel(cause string) slog.Level {
	if redisconn.NeedsOperator(cause) {
		return slog.LevelError
	}
	return slog.LevelWarn
}
