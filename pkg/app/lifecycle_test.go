package app

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// order records what happened, in order, from any goroutine.
type order struct {
	mu     sync.Mutex
	events []string
}

func (o *order) add(e string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
}

func (o *order) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.events)
}

// component returns a run function that records its stop; a wedged one
// ignores its context until release is closed.
func (o *order) component(name string, wedged bool, release <-chan struct{}) func(context.Context) error {
	return func(ctx context.Context) error {
		<-ctx.Done()
		if wedged {
			<-release
		}
		o.add("stopped " + name)
		return nil
	}
}

// Components stop in the order they were added, each only after the one
// before it has returned; cleanups run after them, last registered first.
func TestLifecycleStopOrder(t *testing.T) {
	var o order
	var l lifecycle
	for _, name := range []string{"gateway", "worker", "admin"} {
		l.add(name, o.component(name, false, nil))
	}
	l.onStop(func(time.Time) { o.add("cleanup store") })
	l.onStop(func(time.Time) { o.add("cleanup nats") })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var notReady []bool
	if err := l.run(ctx, func(failed bool) { notReady = append(notReady, failed) }, time.Minute); err != nil {
		t.Fatal(err)
	}
	want := []string{"stopped gateway", "stopped worker", "stopped admin", "cleanup nats", "cleanup store"}
	if got := o.get(); !slices.Equal(got, want) {
		t.Fatalf("order %q, want %q", got, want)
	}
	if !slices.Equal(notReady, []bool{false}) {
		t.Fatalf("notReady calls %v, want one, for a signal", notReady)
	}
}

// A component that fails starts the shutdown, and its error is returned.
func TestLifecycleFailure(t *testing.T) {
	var o order
	var l lifecycle
	l.add("gateway", o.component("gateway", false, nil))
	l.add("worker", func(context.Context) error { return errors.New("broken") })
	var notReady []bool
	err := l.run(context.Background(), func(failed bool) { notReady = append(notReady, failed) }, time.Minute)
	if err == nil || err.Error() != "worker: broken" {
		t.Fatalf("run = %v, want the worker's error", err)
	}
	if !slices.Equal(notReady, []bool{true}) || !slices.Equal(o.get(), []string{"stopped gateway"}) {
		t.Fatalf("notReady %v, events %q", notReady, o.get())
	}
}

// A component that does not stop within the timeout is abandoned: the
// error names it, the later ones are still told to stop, and the
// cleanups run with the shutdown's deadline.
func TestLifecycleAbandons(t *testing.T) {
	var o order
	var l lifecycle
	release := make(chan struct{})
	defer close(release)
	l.add("gateway", o.component("gateway", true, release))
	stopped := make(chan struct{})
	l.add("worker", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil })
	var deadline time.Time
	l.onStop(func(d time.Time) { deadline = d })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	begin := time.Now()
	err := l.run(ctx, func(bool) {}, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "gateway did not stop within shutdown_timeout (50ms)") {
		t.Fatalf("run = %v, want the gateway abandoned", err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker was not told to stop after the gateway was abandoned")
	}
	if deadline.Before(begin.Add(50*time.Millisecond)) || deadline.After(time.Now()) {
		t.Fatalf("cleanup deadline %v, want start of shutdown + 50ms (began %v)", deadline, begin)
	}
}
