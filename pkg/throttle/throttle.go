// Package throttle keeps per-request failures from flooding the log: during
// an outage every request fails the same way, and the metrics already count
// them. Each kind of line is logged at most once per interval; the ones held
// back are counted, per kind, on the next line of that kind, and when a burst
// ends (a whole interval without one) a last line says so and how many the
// burst held back in all.
package throttle

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Throttle is a logger that rate-limits each kind of line.
type Throttle struct {
	log      *slog.Logger
	interval time.Duration

	mu    sync.Mutex
	kinds map[string]*burst
}

// burst is the state of one kind of line while it keeps coming.
type burst struct {
	level      slog.Level
	msg        string
	kind       slog.Attr
	start      time.Time // first line of the burst
	last       time.Time // latest line, logged or held back
	next       time.Time // when the next line may be logged
	suppressed int       // held back since the last line logged
	total      int       // held back in the whole burst
	timer      *time.Timer
}

// New returns a throttle that logs each kind of line to log at most once
// per interval.
func New(log *slog.Logger, interval time.Duration) *Throttle {
	return &Throttle{log: log, interval: interval, kinds: make(map[string]*burst)}
}

// Log logs msg with args at level unless a line of the same kind (msg and
// kind: kind tells apart the lines of one msg, such as a rejection's
// reason; the zero Attr for none) was logged within the interval. A line
// logged says how many of its kind were held back before it
// ("suppressed").
func (t *Throttle) Log(level slog.Level, msg string, kind slog.Attr, args ...any) {
	key := msg
	if !kind.Equal(slog.Attr{}) {
		key += "\x00" + kind.String()
		args = append([]any{kind}, args...)
	}
	now := time.Now()
	t.mu.Lock()
	b := t.kinds[key]
	if b == nil {
		b = &burst{level: level, msg: msg, kind: kind, start: now}
		t.kinds[key] = b
	}
	b.last = now
	if now.Before(b.next) {
		b.suppressed++
		b.total++
		if b.timer == nil {
			b.timer = time.AfterFunc(t.interval, func() { t.check(key) })
		}
		t.mu.Unlock()
		return
	}
	if b.timer == nil { // no burst in progress: this line starts one
		b.start, b.total = now, 0
	}
	b.next = now.Add(t.interval)
	suppressed := b.suppressed
	b.suppressed = 0
	t.mu.Unlock()
	// Logged outside the lock: a slow log sink must not hold up the
	// other kinds.
	t.log.Log(context.Background(), level, msg, append(args, "suppressed", suppressed)...)
}

// check ends the burst of key once a whole interval passed without a line
// of its kind, and says so when the burst held lines back.
func (t *Throttle) check(key string) {
	t.mu.Lock()
	b := t.kinds[key]
	if quiet := time.Since(b.last); quiet < t.interval {
		b.timer.Reset(t.interval - quiet)
		t.mu.Unlock()
		return
	}
	delete(t.kinds, key)
	t.mu.Unlock()
	var args []any
	if !b.kind.Equal(slog.Attr{}) {
		args = append(args, b.kind)
	}
	t.log.Log(context.Background(), b.level, b.msg, append(args, "burst", "ended", "suppressed", b.suppressed,
		"suppressed_total", b.total, "lasted", b.last.Sub(b.start).Round(time.Millisecond))...)
}
