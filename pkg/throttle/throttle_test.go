package throttle

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/testenv"
)

// Each kind (message and kind attribute) has its own allowance: a burst of
// one kind does not hide the first line of another.
func TestKindsApart(t *testing.T) {
	log, logs := testenv.NewLogger(t)
	th := New(log, time.Hour)
	for range 3 {
		if l, ok := th.Allow(slog.LevelWarn, "rejected request", slog.String("reason", "wrong method")); ok {
			l.Log()
		}
		if l, ok := th.Allow(slog.LevelWarn, "rejected request", slog.String("reason", "unauthorized")); ok {
			l.Log()
		}
		if l, ok := th.Allow(slog.LevelWarn, "malformed callback", slog.Attr{}); ok {
			l.Log("err", "x")
		}
	}
	for _, words := range [][]string{
		{"rejected request", `reason="wrong method"`, "suppressed=0"},
		{"rejected request", "reason=unauthorized", "suppressed=0"},
		{"malformed callback", "err=x", "suppressed=0"},
	} {
		if got := logs.Lines(words...); len(got) != 1 {
			t.Errorf("lines with %q: %q, want 1\n%s", words, got, logs)
		}
	}
	if n := len(logs.Lines()); n != 3 {
		t.Errorf("%d lines for 3 kinds within the interval, want 3:\n%s", n, logs)
	}
}

// While a kind keeps coming, one line per interval is logged, with the
// count held back since the previous one; a whole interval without it ends
// the burst with a line that says so, the count not yet reported and the
// burst's total. Every line held back is counted exactly once. (A pause of
// the test longer than the interval ends a burst early: the counts hold
// all the same.)
func TestBurst(t *testing.T) {
	log, logs := testenv.NewLogger(t)
	const interval = 100 * time.Millisecond
	th := New(log, interval)
	sent := 0
	send := func() {
		sent++
		if l, ok := th.Allow(slog.LevelWarn, "store failed", slog.String("cause", "timeout")); ok {
			l.Log("n", sent)
		}
	}
	// Keep sending until a line reported lines held back: the burst spans
	// intervals.
	if !testenv.Eventually(10*time.Second, func() bool {
		for range 10 {
			send()
		}
		return len(logs.Lines("store failed", "cause=timeout", "n=")) >= 2
	}) {
		t.Fatalf("one line per interval expected while the burst lasts:\n%s", logs)
	}
	var lines []string
	if !testenv.Eventually(10*time.Second, func() bool {
		lines = logs.Lines("store failed")
		return strings.Contains(lines[len(lines)-1], "burst=ended")
	}) {
		t.Fatalf("no line ends the burst:\n%s", logs)
	}
	logged, reported, totals := 0, 0, 0
	for _, l := range lines {
		if !strings.Contains(l, "cause=timeout") {
			t.Fatalf("a line does not name its kind: %s", l)
		}
		reported += field(t, l, "suppressed")
		if strings.Contains(l, "burst=ended") {
			totals += field(t, l, "suppressed_total")
		} else {
			logged++
		}
	}
	if held := sent - logged; reported != held || totals != held || held == 0 {
		t.Fatalf("%d sent, %d logged: sum of suppressed %d, of suppressed_total %d; want both %d\n%s",
			sent, logged, reported, totals, held, logs)
	}
	// A new burst starts afresh: its first line is logged at once.
	send()
	if got := logs.Lines("store failed", fmt.Sprintf("n=%d ", sent), "suppressed=0"); len(got) != 1 {
		t.Fatalf("first line after the burst ended: %q\n%s", got, logs)
	}
}

// field reads key=<int> from a text log line.
func field(t *testing.T, line, key string) int {
	t.Helper()
	_, v, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		t.Fatalf("no %s in %q", key, line)
	}
	v, _, _ = strings.Cut(v, " ")
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s in %q: %v", key, line, err)
	}
	return n
}

// A line held back costs its caller no allocation: during an outage every
// request makes one.
func BenchmarkHeldBack(b *testing.B) {
	th := New(slog.New(slog.DiscardHandler), time.Hour)
	opID, err := []byte("operation-1"), errors.New("nats: timeout")
	b.ReportAllocs()
	for b.Loop() {
		if l, ok := th.Allow(slog.LevelWarn, "no decision; answered gateway.fallback", slog.String("cause", "timeout")); ok {
			l.Log("operationID", string(opID), "err", err)
		}
	}
}

// Holding a line back allocates nothing, so that an outage's every request
// asking costs no garbage.
func TestHeldBackAllocatesNothing(t *testing.T) {
	th := New(slog.New(slog.DiscardHandler), time.Hour)
	th.Allow(slog.LevelWarn, "no decision", slog.String("cause", "timeout")) // the first is let through
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := th.Allow(slog.LevelWarn, "no decision", slog.String("cause", "timeout")); ok {
			t.Fatal("let through within the interval")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per line held back", n)
	}
}
