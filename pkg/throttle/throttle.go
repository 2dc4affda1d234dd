// Package throttle keeps per-request failures from flooding the log: during
// an outage every request fails the same way, and the metrics already count
// them.
package throttle

import (
	"sync"
	"time"
)

// Throttle admits one event per interval and counts the ones it held back.
type Throttle struct {
	interval time.Duration

	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// New returns a throttle that admits at most one event per interval.
func New(interval time.Duration) *Throttle {
	return &Throttle{interval: interval}
}

// Allow reports whether to log this event, and how many events were held
// back since the last one logged.
func (t *Throttle) Allow() (ok bool, suppressed int) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.next) {
		t.suppressed++
		return false, 0
	}
	t.next = now.Add(t.interval)
	suppressed, t.suppressed = t.suppressed, 0
	return true, suppressed
}
