// Package ratelimittest provides store wrappers for tests of what happens
// around a limiter store: a real store behind a gate the test opens.
package ratelimittest

import (
	"context"

	"github.com/joingate/joingate/pkg/ratelimit"
)

// Store is what a worker needs of a limiter store.
type Store interface {
	Allow(ctx context.Context, checks []ratelimit.Check, results []ratelimit.Result) error
	Ping(ctx context.Context) error
}

// Gate holds every Allow call until Open: a worker stuck on a slow store.
// Entered receives one value per call as it starts waiting.
type Gate struct {
	Store
	Entered chan struct{}
	open    chan struct{}
}

// NewGate wraps s, closed.
func NewGate(s Store) *Gate {
	return &Gate{Store: s, Entered: make(chan struct{}, 100), open: make(chan struct{})}
}

// Open lets every waiting and later call through.
func (g *Gate) Open() { close(g.open) }

// Allow waits for Open, then asks the wrapped store, whatever became of the
// caller's context meanwhile: the slow part is over by then.
func (g *Gate) Allow(_ context.Context, checks []ratelimit.Check, results []ratelimit.Result) error {
	g.Entered <- struct{}{}
	<-g.open
	return g.Store.Allow(context.Background(), checks, results)
}
