// Package breaker is a circuit breaker for the limiter store: while Redis
// is down or slow, decisions fail at once instead of each waiting out the
// client's timeout, and one probe at a time finds out when it is back.
package breaker

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// State of a breaker.
type State int32

const (
	// Closed: calls go through; consecutive failures are counted.
	Closed State = iota
	// Open: calls fail at once until the cool-down has passed.
	Open
	// HalfOpen: one probe call goes through; its outcome closes or reopens.
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	default:
		return "half_open"
	}
}

// ErrOpen is returned by Allow while the breaker refuses calls.
var ErrOpen = errors.New("circuit breaker open")

// Breaker opens after Failures consecutive failures and stays open for
// Cooldown, then lets one probe through.
type Breaker struct {
	failures int
	cooldown time.Duration
	now      func() time.Time
	onChange func(from, to State)

	state atomic.Int32 // read without the lock on the hot path

	consecutive atomic.Int32 // failures in a row while closed

	mu       sync.Mutex
	openedAt time.Time
	probing  bool
}

// New returns a closed breaker. onChange, if not nil, is called (with the
// breaker's lock held: keep it short) on every state change.
func New(failures int, cooldown time.Duration, onChange func(from, to State)) *Breaker {
	return &Breaker{failures: max(failures, 1), cooldown: cooldown, now: time.Now, onChange: onChange}
}

// State returns the current state.
func (b *Breaker) State() State { return State(b.state.Load()) }

// Allow reports whether a call may go ahead; every allowed call must be
// followed by Done with its outcome.
func (b *Breaker) Allow() error {
	if State(b.state.Load()) == Closed {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch State(b.state.Load()) {
	case Closed:
		return nil
	case Open:
		if b.now().Sub(b.openedAt) < b.cooldown {
			return ErrOpen
		}
		b.set(HalfOpen)
		b.probing = true
		return nil
	default: // HalfOpen
		if b.probing {
			return ErrOpen
		}
		b.probing = true
		return nil
	}
}

// Done records the outcome of an allowed call: failed tells whether it
// counts against the store.
func (b *Breaker) Done(failed bool) {
	if !failed && State(b.state.Load()) == Closed && b.consecutive.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch State(b.state.Load()) {
	case Closed:
		if !failed {
			b.consecutive.Store(0)
			return
		}
		if int(b.consecutive.Add(1)) >= b.failures {
			b.trip()
		}
	case HalfOpen:
		b.probing = false
		if failed {
			b.trip()
			return
		}
		b.consecutive.Store(0)
		b.set(Closed)
	case Open:
		// A call allowed before the breaker opened; nothing to learn.
	}
}

// Reset closes the breaker, whatever its state: for a caller that has
// learnt by other means (a probe of its own) that the store answers again.
func (b *Breaker) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consecutive.Store(0)
	b.probing = false
	b.set(Closed)
}

func (b *Breaker) trip() {
	b.openedAt = b.now()
	b.consecutive.Store(0)
	b.set(Open)
}

func (b *Breaker) set(s State) {
	from := State(b.state.Swap(int32(s)))
	if from != s && b.onChange != nil {
		b.onChange(from, s)
	}
}
