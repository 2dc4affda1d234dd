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
	kinds map[key]*burst
}

// key tells the kinds apart: a message, and the attribute (if any) that
// tells its lines apart. Strings only, so that a lookup allocates nothing.
type key struct{ msg, attr, value string }

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
	return &Throttle{log: log, interval: interval, kinds: make(map[key]*burst)}
}

// Line is a line the throttle let through, to be logged with Log.
type Line struct {
	log        *slog.Logger
	level      slog.Level
	msg        string
	kind       slog.Attr
	suppressed int
}

// Log logs the line with args, its kind and how many of its kind were held
// back before it ("suppressed").
func (l Line) Log(args ...any) {
	if !l.kind.Equal(slog.Attr{}) {
		args = append([]any{l.kind}, args...)
	}
	l.log.Log(context.Background(), l.level, l.msg, append(args, "suppressed", l.suppressed)...)
}

// Allow reports whether a line of msg at level may be logged now: not if
// one of the same kind (msg and kind, which tells apart the lines of one
// msg, such as a rejection's reason; the zero Attr for none) was within the
// interval, and then it is counted. The caller builds the line's arguments
// only when allowed, so that one held back costs it nothing:
//
//	if l, ok := t.Allow(slog.LevelWarn, "rejected request", slog.String("reason", r)); ok {
//		l.Log("remote", addr.String())
//	}
func (t *Throttle) Allow(level slog.Level, msg string, kind slog.Attr) (Line, bool) {
	k := key{msg: msg, attr: kind.Key, value: kind.Value.String()}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.kinds[k]
	if b == nil {
		b = &burst{level: level, msg: msg, kind: kind, start: now}
		t.kinds[k] = b
	}
	b.last = now
	if now.Before(b.next) {
		b.suppressed++
		b.total++
		if b.timer == nil {
			b.timer = time.AfterFunc(t.interval, func() { t.check(k) })
		}
		return Line{}, false
	}
	if b.timer == nil { // no burst in progress: this line starts one
		b.start, b.total = now, 0
	}
	b.next = now.Add(t.interval)
	l := Line{log: t.log, level: level, msg: msg, kind: kind, suppressed: b.suppressed}
	b.suppressed = 0
	return l, true
}

// check ends the burst of key once a whole interval passed without a line
// of its kind, and says so when the burst held lines back.
func (t *Throttle) check(k key) {
	t.mu.Lock()
	b := t.kinds[k]
	if quiet := time.Since(b.last); quiet < t.interval {
		b.timer.Reset(t.interval - quiet)
		t.mu.Unlock()
		return
	}
	delete(t.kinds, k)
	t.mu.Unlock()
	var args []any
	if !b.kind.Equal(slog.Attr{}) {
		args = append(args, b.kind)
	}
	t.log.Log(context.Background(), b.level, b.msg, append(args, "burst", "ended", "suppressed", b.suppressed,
		"suppressed_total", b.total, "lasted", b.last.Sub(b.start).Round(time.Millisecond))...)
}
