package breaker

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	var changes []string
	b := New(3, time.Second, func(from, to State) { changes = append(changes, from.String()+">"+to.String()) })
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }

	call := func(failed bool) error {
		t.Helper()
		if err := b.Allow(); err != nil {
			return err
		}
		b.Done(failed)
		return nil
	}
	// Failures must be consecutive: a success in between starts again.
	call(true)
	call(true)
	call(false)
	call(true)
	call(true)
	if b.State() != Closed {
		t.Fatalf("state %s after 2 failures in a row, want closed", b.State())
	}
	call(true)
	if b.State() != Open {
		t.Fatalf("state %s after 3 failures in a row, want open", b.State())
	}
	if err := call(false); err != ErrOpen {
		t.Fatalf("call while open: %v, want ErrOpen", err)
	}
	// After the cool-down one probe goes through, and only one.
	now = now.Add(time.Second)
	if err := b.Allow(); err != nil {
		t.Fatalf("probe refused: %v", err)
	}
	if b.State() != HalfOpen {
		t.Fatalf("state %s during the probe", b.State())
	}
	if err := b.Allow(); err != ErrOpen {
		t.Fatalf("second call during the probe: %v, want ErrOpen", err)
	}
	b.Done(true) // the probe failed: open again, for a full cool-down
	if b.State() != Open || b.Allow() != ErrOpen {
		t.Fatalf("state %s after a failed probe", b.State())
	}
	now = now.Add(time.Second)
	if err := call(false); err != nil {
		t.Fatal(err)
	}
	if b.State() != Closed {
		t.Fatalf("state %s after a good probe, want closed", b.State())
	}
	want := []string{"closed>open", "open>half_open", "half_open>open", "open>half_open", "half_open>closed"}
	if len(changes) != len(want) {
		t.Fatalf("changes %q, want %q", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes %q, want %q", changes, want)
		}
	}
}

func TestBreakerConcurrent(t *testing.T) {
	b := New(5, time.Hour, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if b.Allow() == nil {
					b.Done(true)
				}
			}
		})
	}
	wg.Wait()
	if b.State() != Open {
		t.Fatalf("state %s after many failures", b.State())
	}
}

func BenchmarkClosedSuccess(b *testing.B) {
	br := New(5, time.Second, nil)
	b.ReportAllocs()
	for b.Loop() {
		if br.Allow() == nil {
			br.Done(false)
		}
	}
}

// Reset closes an open breaker at once, with its failure count cleared.
func TestReset(t *testing.T) {
	var changes []string
	b := New(2, time.Hour, func(from, to State) { changes = append(changes, to.String()) })
	for range 2 {
		b.Allow()
		b.Done(true)
	}
	if b.State() != Open {
		t.Fatalf("state %s after 2 failures, want open", b.State())
	}
	b.Reset()
	if err := b.Allow(); err != nil || b.State() != Closed {
		t.Fatalf("after Reset: state %s, Allow %v; want closed, nil", b.State(), err)
	}
	b.Done(true) // one failure: not yet the two that open it
	if b.State() != Closed {
		t.Fatalf("one failure after Reset opened the breaker: the count was not cleared")
	}
	if got := strings.Join(changes, ","); got != "open,closed" {
		t.Fatalf("changes %s, want open,closed", got)
	}
}
