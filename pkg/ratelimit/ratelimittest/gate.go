// Package ratelimittest provides store wrappers for tests of what happens
// around a limiter store: a real store behind a gate the test opens.
package ratelimittest

import (
	"context"

	"github.com/joingate/joingate/pkg/ratelimit"
)

// Store is what a worker needs of a limiter store.
type Store interface {
	Decide(ctx context.Context, q *ratelimit.Query, a *ratelimit.Answer) error
	Ping(ctx context.Context) error
}

// Gate holds every Decide call until Open: a worker stuck on a slow store.
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

// Decide waits for Open, then asks the wrapped store, whatever became of
// the caller's context meanwhile: the slow part is over by then.
func (g *Gate) Decide(_ context.Context, q *ratelimit.Query, a *ratelimit.Answer) error {
	g.Entered <- struct{}{}
	<-g.open
	return g.Store.Decide(context.Background(), q, a)
}
