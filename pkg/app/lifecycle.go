package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// lifecycle runs a process's components and stops them in the order they
// were added, so that each can still use the ones after it while it stops
// (the gateway answers its in-flight callbacks while the worker decides);
// then it runs the cleanups in reverse order of registration (the store,
// the NATS connections, the embedded server). One deadline covers every
// stop phase: a component that has not stopped by then is abandoned, and
// the next phases stop all the same.
type lifecycle struct {
	components []component
	cleanups   []func(deadline time.Time)
}

type component struct {
	name string
	run  func(context.Context) error
}

// add appends a component, stopped after those added before it.
func (l *lifecycle) add(name string, run func(context.Context) error) {
	l.components = append(l.components, component{name, run})
}

// onStop registers a cleanup, run after every component stopped (or was
// abandoned), before the cleanups registered earlier. deadline is when the
// shutdown must be done.
func (l *lifecycle) onStop(cleanup func(deadline time.Time)) {
	l.cleanups = append(l.cleanups, cleanup)
}

// cleanup runs the cleanups now: for a start that failed half-way.
func (l *lifecycle) cleanup(deadline time.Time) {
	for i := len(l.cleanups) - 1; i >= 0; i-- {
		l.cleanups[i](deadline)
	}
}

// run starts every component, each with its own context, and waits until
// ctx is done or a component returns an error. Then it calls notReady,
// stops the components in order within timeout, and cleans up. It returns
// the components' errors and one for each component abandoned.
func (l *lifecycle) run(ctx context.Context, notReady func(failed bool), timeout time.Duration) error {
	var (
		mu     sync.Mutex
		errs   []error
		failed = make(chan struct{}, len(l.components))
	)
	record := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	type running struct {
		stop context.CancelFunc
		done chan struct{}
	}
	procs := make([]running, len(l.components))
	for i, c := range l.components {
		cctx, stop := context.WithCancel(context.Background())
		procs[i] = running{stop, make(chan struct{})}
		go func() {
			defer close(procs[i].done)
			if err := c.run(cctx); err != nil {
				record(fmt.Errorf("%s: %w", c.name, err))
				failed <- struct{}{}
			}
		}()
	}

	select {
	case <-ctx.Done():
		notReady(false)
	case <-failed:
		notReady(true)
	}
	deadline := time.Now().Add(timeout)
	abandon := time.NewTimer(timeout)
	defer abandon.Stop()
	expired := false
	for i, p := range procs {
		p.stop()
		if !expired {
			select {
			case <-p.done:
				continue
			case <-abandon.C:
				expired = true
			}
		}
		// Past the deadline a phase gets no grace: it is told to stop,
		// and left running if it has not.
		select {
		case <-p.done:
		default:
			record(fmt.Errorf("%s did not stop within shutdown_timeout (%s)", l.components[i].name, timeout))
		}
	}
	l.cleanup(deadline)
	mu.Lock()
	defer mu.Unlock()
	return errors.Join(errs...)
}
