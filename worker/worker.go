// Package worker decides callbacks that gateways publish on NATS. Workers
// share the requests through a NATS queue group, so ops add or remove them
// with no other change.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/breaker"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/throttle"
)

// Store keeps the dynamic lists and the limits the worker checks.
type Store interface {
	Decide(ctx context.Context, q *ratelimit.Query, a *ratelimit.Answer) error
	Ping(ctx context.Context) error
}

// Options configure a Worker. Conn, Policy and Store are required.
type Options struct {
	Conn *nats.Conn
	// Subject prefix: the worker takes <Subject>.<command>, and the same
	// behind the tokens of the framed and tagged forms (natsconn), for each
	// of callback.Commands, in queue group Queue.
	Subject string
	Queue   string
	// Concurrency bounds the decisions made at once that may wait on the
	// store. What the memory of refusals knows is decided beside them, on
	// the subscription's goroutine.
	Concurrency int
	Policy      *policy.Set
	Store       Store
	// MissingDeadline is the budget of a request that carries no deadline
	// header (a gateway of another version, a hand-made request).
	MissingDeadline time.Duration
	// DecisionTimeout only places a histogram bucket edge.
	DecisionTimeout time.Duration
	// StoreBudget bounds each store call (a decision, a probe), well inside
	// the gateway's decision timeout: a store that fails or hangs costs a
	// callback this much, and the answer is worker.on_store_error, given
	// while the gateway still waits.
	StoreBudget time.Duration
	// The store's circuit breaker: open after BreakerFailures failed calls
	// in a row, probe again after BreakerCooldown. An open breaker takes
	// the worker out of the queue group.
	BreakerFailures int
	BreakerCooldown time.Duration
	// ProbeInterval: how often the worker pings its store, in or out of
	// the queue group. Out, it rejoins once every probe for RejoinAfter
	// has succeeded (longer when it flaps: see hysteresis).
	ProbeInterval time.Duration
	RejoinAfter   time.Duration
	// RefusalMemory is how many refusals the worker keeps, to refuse again
	// without a store call while GCRA would (ratelimit.Refusals); 0 turns
	// it off. Changes to the store must be followed by Invalidate.
	RefusalMemory int
	// DrainTimeout bounds how long Run waits, once stopped, for requests
	// already received to be answered.
	DrainTimeout time.Duration
	// Logger nil discards the logs; Registerer nil registers the metrics
	// with a registry of the worker's own.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultOptions returns the options a worker runs with unless told
// otherwise: those of config.Default() (drained within shutdown_timeout,
// rejoining after breaker_cooldown), so that a default is written once.
// The caller sets Conn, Policy and Store.
func DefaultOptions() Options {
	c := config.Default()
	return Options{
		Subject:         c.NATS.Subject,
		Queue:           c.NATS.Queue,
		Concurrency:     c.Worker.Concurrency,
		MissingDeadline: time.Second,
		DecisionTimeout: c.Gateway.DecisionTimeout,
		DrainTimeout:    c.ShutdownTimeout,
		StoreBudget:     c.Redis.Timeout,
		BreakerFailures: c.Worker.BreakerFailures,
		BreakerCooldown: c.Worker.BreakerCooldown,
		ProbeInterval:   250 * time.Millisecond,
		RejoinAfter:     c.Worker.BreakerCooldown,
		RefusalMemory:   c.Worker.RefusalMemory,
	}
}

// validate reports what is wrong with o; it changes nothing.
func (o *Options) validate() error {
	var errs []error
	if o.Conn == nil {
		errs = append(errs, errors.New("no NATS connection"))
	}
	if o.Policy == nil {
		errs = append(errs, errors.New("no policy"))
	}
	if o.Store == nil {
		errs = append(errs, errors.New("no limiter store"))
	}
	if o.Subject == "" || o.Queue == "" {
		errs = append(errs, errors.New("subject and queue must be set"))
	}
	if o.RefusalMemory < 0 {
		errs = append(errs, fmt.Errorf("RefusalMemory must not be negative, got %d", o.RefusalMemory))
	}
	if o.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency must be at least 1, got %d", o.Concurrency))
	}
	if o.MissingDeadline <= 0 || o.DrainTimeout <= 0 || o.StoreBudget <= 0 || o.BreakerCooldown <= 0 || o.BreakerFailures < 1 ||
		o.ProbeInterval <= 0 || o.RejoinAfter < 0 {
		errs = append(errs, errors.New("MissingDeadline, DrainTimeout, StoreBudget, BreakerCooldown, BreakerFailures and ProbeInterval must be positive, RejoinAfter not negative"))
	}
	return errors.Join(errs...)
}

// Worker decides join-group callbacks.
type Worker struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	policy  atomic.Pointer[policy.Set]
	store   Store        // the store behind the breaker
	decider policy.Store // what decisions ask: store, or memory in front of it
	memory  *memory      // nil without RefusalMemory
	prefix  string       // "<subject>."

	// throttled logs per-request trouble that metrics count too (bad input,
	// store errors, shadow refusals) at most once a second per kind: an
	// outage or a hot rule must not flood the log.
	throttled *throttle.Throttle

	breaker *breaker.Breaker
	tripped chan struct{} // a send when the breaker opens: leave now
	status  atomic.Pointer[status]
}

// New checks opts and builds a worker; Run starts it.
func New(opts Options) (*Worker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("worker options: %w", err)
	}
	w := &Worker{
		opts:    opts,
		log:     opts.Logger.With("component", "worker"),
		metrics: newMetrics(opts.Registerer, opts.DecisionTimeout, opts.Policy.Rules(), opts.Conn),
		prefix:  opts.Subject + ".",
		tripped: make(chan struct{}, 1),
	}
	w.throttled = throttle.New(w.log, time.Second)
	w.setStatus(errors.New("starting: not yet in the queue group"))
	w.breaker = breaker.New(opts.BreakerFailures, opts.BreakerCooldown, func(from, to breaker.State) {
		w.metrics.breakerState.Set(float64(to))
		w.metrics.breakerTransitions.WithLabelValues(to.String()).Inc()
		w.log.Warn("store circuit breaker "+to.String(), "from", from.String())
		if to == breaker.Open {
			select {
			case w.tripped <- struct{}{}:
			default:
			}
		}
	})
	w.store = guardedStore{Store: opts.Store, breaker: w.breaker, hist: w.metrics.storeTime}
	w.decider = w.store
	if opts.RefusalMemory > 0 {
		w.memory = newMemory(w.store, opts.RefusalMemory, opts.Conn, opts.Subject, opts.Registerer)
		if ls, ok := opts.Store.(listStore); ok {
			w.memory.HoldLists(w.listKeys(ls))
		}
		w.decider = w.memory
		// NATS refuses a subscription asynchronously: watch its errors,
		// passing them on to the handler the connection had.
		next := opts.Conn.ErrorHandler()
		opts.Conn.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			w.memory.refused(err, w.log)
			if next != nil {
				next(nc, sub, err)
			}
		})
	}
	w.policy.Store(opts.Policy)
	w.metrics.concurrency.Set(float64(opts.Concurrency))
	return w, nil
}

// listStore is a store that can say what its dynamic lists hold.
type listStore interface {
	ListMembers(ctx context.Context, index string) ([]string, error)
}

// listKeys returns the loader of the memory's held lists: the guard key of
// every entry of every dynamic list, under the policy in force.
func (w *Worker) listKeys(ls listStore) ratelimit.ListLoader {
	return func(ctx context.Context) ([]string, error) {
		k := w.policy.Load().Keys()
		var keys []string
		for _, list := range policy.Lists {
			members, err := ls.ListMembers(ctx, k.Index(list))
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", list, err)
			}
			for _, m := range members {
				keys = append(keys, k.Flag(list, m))
			}
		}
		return keys, nil
	}
}

// Policy returns the policies in force.
func (w *Worker) Policy() *policy.Set { return w.policy.Load() }

// SetPolicy replaces the policies for the requests that follow. Counters
// of rules that keep their name carry on (see the README on reloads).
func (w *Worker) SetPolicy(p *policy.Set) {
	w.metrics.addRules(p.Rules())
	w.policy.Store(p)
}

// Invalidate tells every worker's memory of refusals, this one's too, that
// the store changed (a list entry, a quota reset) or a policy did (refusals
// are remembered by limit, so none is wrong under a new policy; a reload
// still starts every memory afresh): it
// returns once NATS has the broadcast, so that the callbacks sent after it
// are decided without what the memory held. A worker without a memory
// broadcasts all the same: the others may have one.
func (w *Worker) Invalidate(ctx context.Context) error {
	if w.memory != nil {
		w.memory.clear("change")
	}
	return broadcast(ctx, w.opts.Conn, w.opts.Subject)
}

// Run joins the queue group once the store answers, decides requests, and
// leaves and rejoins the group as the store fails and recovers
// (keepMembership), until ctx is done; then it drains: it stops taking new
// requests, answers the ones already received (within DrainTimeout) and
// returns.
func (w *Worker) Run(ctx context.Context) error {
	work := make(chan *nats.Msg, w.opts.Concurrency)
	stop := make(chan struct{})
	inline := sync.Pool{New: func() any { return &fromMemory{memory: w.memory} }}
	handler := func(m *nats.Msg) {
		if w.memory != nil {
			// What the memory knows is answered here, on the subscription's
			// goroutine: no hand-off, and no wait behind decisions that
			// wait on the store.
			f := inline.Get().(*fromMemory)
			done := w.decide(m, &f.s, f)
			inline.Put(f)
			if done {
				return
			}
		}
		select {
		case work <- m:
		case <-stop: // stopped after a drain timeout: the gateway falls back
		}
	}
	w.log.Info("worker started; joins the queue group once its store answers", "subjects", w.subjects(), "queue", w.opts.Queue,
		"concurrency", w.opts.Concurrency, "store_budget", w.opts.StoreBudget)

	var wg sync.WaitGroup
	for range w.opts.Concurrency {
		wg.Go(func() {
			var s scratch
			for {
				select {
				case m := <-work:
					w.handle(m, &s)
				case <-stop:
					for {
						select {
						case m := <-work:
							w.handle(m, &s)
						default:
							return
						}
					}
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
		w.log.Info("worker stopped")
	}()

	if w.memory != nil {
		if err := w.memory.listen(); err != nil {
			return err
		}
	}
	subs, err := w.keepMembership(ctx, handler)
	if err != nil || subs == nil {
		return err
	}
	w.log.Info("worker draining")
	w.metrics.member.Set(0)
	closed := make([]<-chan nats.SubStatus, len(subs))
	for i, sub := range subs {
		closed[i] = sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			w.log.Warn("drain subscription", "subject", sub.Subject, "err", err)
		}
	}
	// A drain cannot finish while NATS is down, and replies could not be
	// sent anyway: stop waiting then.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(w.opts.DrainTimeout)
	allClosed := make(chan struct{})
	go func() { // ends when the last one closes, drained or unsubscribed
		for _, c := range closed {
			<-c
		}
		close(allClosed)
	}()
	for {
		select {
		case <-allClosed:
			return nil
		case <-tick.C:
			valid := 0
			for _, sub := range subs {
				if sub.IsValid() {
					valid++
				}
			}
			if valid == 0 {
				return nil // closed before StatusChanged was asked
			}
			if !w.opts.Conn.IsConnected() {
				w.log.Warn("nats down while draining; unanswered requests fall back at their gateways")
				unsubscribe(subs)
				return nil
			}
		case <-timeout:
			w.log.Warn("drain timed out; unanswered requests fall back at their gateways", "timeout", w.opts.DrainTimeout)
			unsubscribe(subs)
			return nil
		}
	}
}

// Ready reports whether the worker takes requests: in the queue group and
// connected to NATS. Out of the group, the error says why (the store's
// failure and its cause, waiting for NATS, rejoining, draining).
func (w *Worker) Ready(context.Context) error {
	if out := w.status.Load().out; out != nil {
		return out
	}
	if !w.opts.Conn.IsConnected() {
		return errors.New("nats not connected")
	}
	return nil
}

// handle decides m and replies, on one of the Concurrency goroutines that
// in_flight counts.
func (w *Worker) handle(m *nats.Msg, s *scratch) {
	w.metrics.inFlight.Inc()
	w.decide(m, s, nil)
	w.metrics.inFlight.Dec()
}

// fromMemory is the store of a decision made from the memory of refusals
// alone: what the memory does not know, it leaves to the store (missed).
type fromMemory struct {
	*memory
	s      scratch
	missed bool
}

// scratch is a deciding goroutine's own memory, reused from decision to
// decision: the policy's, and the reply to a tagged request.
type scratch struct {
	policy.Scratch
	reply []byte
}

// errMissed: the memory does not know; the decision needs the store.
var errMissed = errors.New("not in the memory of refusals")

func (f *fromMemory) Decide(_ context.Context, q *ratelimit.Query, a *ratelimit.Answer) error {
	if f.off.Load() || !f.Recall(q, a) {
		f.missed = true
		return errMissed
	}
	return nil
}

// decide decides m and replies, asking the store when quick is nil. With
// quick it decides only what needs no store, and returns false, having
// answered and counted nothing, when the decision needs one.
func (w *Worker) decide(m *nats.Msg, s *scratch, quick *fromMemory) bool {
	start := time.Now()
	in, err := w.read(m)
	command, deadline, opID := in.command, in.deadline, in.opID
	if err != nil {
		w.metrics.requests.WithLabelValues(outcomeInvalid).Inc()
		if l, ok := w.throttled.Allow(slog.LevelWarn, "invalid request from a gateway", slog.String("subject", m.Subject)); ok {
			l.Log("bytes", len(m.Data), "err", err)
		}
		s.Body = callback.AppendFailure(s.Body[:0], err.Error())
		w.respond(m, &in, s)
		return true
	}
	if deadline.IsZero() {
		deadline = start.Add(w.opts.MissingDeadline)
	} else if !start.Before(deadline) {
		// The gateway has answered already; judging now would spend quota
		// on a call IMServer was told to let through.
		w.metrics.requests.WithLabelValues(outcomeExpired).Inc()
		w.log.Debug("request expired before it was judged", "operationID", opID, "late", start.Sub(deadline))
		return true
	}

	if !slices.Contains(callback.Commands, command) {
		w.metrics.requests.WithLabelValues(outcomeNoPolicy).Inc()
		s.Body = append(s.Body[:0], callback.AllowJSON...)
		w.respond(m, &in, s)
		return true
	}

	if w.memory != nil {
		w.memory.catchUp()
	}
	var d policy.Decision
	if quick != nil {
		quick.missed = false
		d, err = w.policy.Load().Decide(context.Background(), command, in.body, quick, &s.Scratch)
		if quick.missed {
			return false
		}
	} else {
		// The store budget ends the call before the gateway stops waiting,
		// so that a failing store still gets its answer (on_store_error)
		// through.
		storeBy := start.Add(w.opts.StoreBudget)
		if deadline.Before(storeBy) {
			storeBy = deadline
		}
		ctx, cancel := context.WithDeadline(context.Background(), storeBy)
		d, err = w.policy.Load().Decide(ctx, command, in.body, w.decider, &s.Scratch)
		cancel()
	}
	if errors.Is(err, callback.ErrMalformed) {
		w.metrics.requests.WithLabelValues(outcomeInvalid).Inc()
		if l, ok := w.throttled.Allow(slog.LevelWarn, "invalid callback body", slog.String("command", command)); ok {
			l.Log("operationID", opID, "err", err)
		}
		s.Body = callback.AppendFailure(s.Body[:0], err.Error())
		w.respond(m, &in, s)
		return true
	}
	if err != nil && !time.Now().Before(deadline) {
		// The store was too slow for this request's budget (go-redis says
		// "i/o timeout" when the deadline cuts a read): the gateway has
		// answered already, so no reply, and not a store failure (the
		// breaker still counts the slowness). A store that says the
		// deadline passed while this clock says it has not (Redis's clock
		// ahead of this host's) is a store failure, answered at once.
		w.metrics.requests.WithLabelValues(outcomeExpired).Inc()
		w.log.Debug("deadline passed during the store call", "operationID", opID)
		return true
	}
	if err != nil {
		cause := causeOf(err)
		w.metrics.storeErrors.WithLabelValues(callDecide, cause).Inc()
		if l, ok := w.throttled.Allow(logLevel(cause), "limiter store failed; answering worker.on_store_error", slog.String("cause", cause)); ok {
			l.Log("operationID", opID, "err", err)
		}
	}
	// Counted before the reply, so that whoever sees the answer sees it counted.
	w.metrics.decided.Inc()
	w.metrics.decision(command, d).Inc()
	if d.Rule != "" {
		w.metrics.ruleRefusal(command, d.Rule, false).Inc()
	}
	if !d.MuteUntil.IsZero() {
		w.metrics.probation.Add(float64(len(s.Users())))
	}
	for _, r := range s.Shadowed {
		w.metrics.ruleRefusal(command, r, true).Inc()
		if l, ok := w.throttled.Allow(slog.LevelInfo, "shadow rule would refuse", slog.String("rule", r)); ok {
			l.Log("operationID", opID, "command", command)
		}
	}
	w.respond(m, &in, s)
	w.metrics.decisionTime.Observe(time.Since(start).Seconds())
	if w.log.Enabled(context.Background(), slog.LevelDebug) {
		w.log.Debug("decided", "operationID", opID, "command", command, "decision", decisionLabel(d.Allowed), "reason", d.Reason, "rule", d.Rule)
	}
	return true
}

// incoming is what a gateway's message carries, in any of its forms
// (natsconn).
type incoming struct {
	command  string
	deadline time.Time // zero when the message carries none
	opID     operationID
	body     []byte
	// tagged: the reply starts with tag.
	tagged bool
	tag    uint64
}

// read splits m, in any form, into what it carries; a tagged request that
// does not parse still has its tag when it has 8 bytes.
func (w *Worker) read(m *nats.Msg) (in incoming, err error) {
	in.command = strings.TrimPrefix(m.Subject, w.prefix)
	if c, tagged := strings.CutPrefix(in.command, natsconn.TaggedToken+"."); tagged {
		in.command, in.tagged = c, true
		in.tag, in.deadline, in.opID, in.body, err = natsconn.ParseTagged(m.Data)
		return in, err
	}
	if c, framed := strings.CutPrefix(in.command, natsconn.FramedToken+"."); framed {
		in.command = c
		in.deadline, in.opID, in.body, err = natsconn.ParseFramed(m.Data)
		return in, err
	}
	in.deadline, _ = natsconn.Deadline(m)
	in.opID, in.body = operationID(m.Header.Get(natsconn.HeaderOperationID)), m.Data
	return in, nil
}

// operationID is IMServer's operation ID as it came, made a string only when
// logged.
type operationID []byte

func (o operationID) LogValue() slog.Value { return slog.StringValue(string(o)) }

// respond replies s.Body to m, behind the tag of a tagged request.
func (w *Worker) respond(m *nats.Msg, in *incoming, s *scratch) {
	reply := s.Body
	if in.tagged {
		s.reply = natsconn.AppendReply(s.reply[:0], in.tag, s.Body)
		reply = s.reply
	}
	if err := m.Respond(reply); err != nil {
		if l, ok := w.throttled.Allow(slog.LevelWarn, "cannot reply", slog.Attr{}); ok {
			l.Log("operationID", in.opID, "err", err)
		}
	}
}

// guardedStore puts the circuit breaker in front of the store and measures
// each call that reaches it.
type guardedStore struct {
	Store
	breaker *breaker.Breaker
	hist    prometheus.Histogram
}

func (g guardedStore) Decide(ctx context.Context, q *ratelimit.Query, a *ratelimit.Answer) error {
	if err := g.breaker.Allow(); err != nil {
		return fmt.Errorf("%w: %w", ratelimit.ErrStore, err)
	}
	start := time.Now()
	err := g.Store.Decide(ctx, q, a)
	g.hist.Observe(time.Since(start).Seconds())
	// A timeout is Redis being slow and counts; a cancelled call does not.
	g.breaker.Done(err != nil && !errors.Is(err, context.Canceled))
	return err
}
