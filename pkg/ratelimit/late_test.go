package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/testenv"
)

// A query that Redis runs after its caller's deadline consumes nothing:
// while another client's command keeps Redis busy, the caller gives up
// (and its gateway has answered); the query still reaches Redis when it is
// free, and runs. Alone and through the Batcher.
func TestLateQueryConsumesNothing(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	for _, v := range []struct {
		name string
		s    store
	}{{"redis", NewRedis(srv.Client)}, {"batcher", newBatcher(t, srv.Client, false, 0)}} {
		t.Run(v.name, func(t *testing.T) {
			q := Query{Checks: []Check{{Key: "late:" + v.name, Limit: Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}
			// A query in time is decided and charged, as usual.
			if a := decide(t, v.s, Query{Checks: []Check{{Key: "on-time:" + v.name, Limit: q.Checks[0].Limit}}}); !a.Results[0].Allowed {
				t.Fatalf("on time: %+v", a)
			}
			before := testenv.ScriptCalls(t, srv.Client)
			done := testenv.BusyRedis(t, srv.URL, 600*time.Millisecond)
			short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			err := v.s.Decide(short, &q, &Answer{})
			if busyErr := <-done; busyErr != nil {
				t.Fatal(busyErr)
			}
			// The call's deadline cut it short (go-redis says "i/o timeout"
			// when it ends a read at the deadline).
			if !errors.Is(err, ErrStore) {
				t.Fatalf("Decide while Redis is busy: %v, want ErrStore", err)
			}
			// The query ran once Redis was free (so it would have charged)...
			if !testenv.Eventually(5*time.Second, func() bool { return testenv.ScriptCalls(t, srv.Client) > before }) {
				t.Fatalf("the late query never ran (EVALSHA calls %d before, %d now): the test proves nothing", before, testenv.ScriptCalls(t, srv.Client))
			}
			// ...and consumed nothing.
			if n, err := srv.Client.Exists(ctx, q.Checks[0].Key).Result(); err != nil || n != 0 {
				t.Fatalf("EXISTS %s = %d, %v: the late query was charged", q.Checks[0].Key, n, err)
			}
		})
	}
}

// A query whose deadline has passed by Redis's clock is answered errLate
// (ErrStore, context.DeadlineExceeded) and consumes nothing, and the
// queries after it in the same batch are read from the right place of the
// reply and decided as if it had not been sent. Alone, too.
func TestLateQueryInBatch(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	r := NewRedis(srv.Client)
	if err := r.ListAdd(ctx, "idx", "x", "g1"); err != nil {
		t.Fatal(err)
	}
	one := Limit{Rate: 1, Period: time.Hour, Burst: 1}
	future := time.Now().Add(time.Hour).UnixMicro()
	qs := []struct {
		q        Query
		deadline int64
		late     bool
	}{
		{Query{Checks: []Check{{Key: "a", Limit: one}}}, 0, false},
		{Query{Guards: []string{"g0"}, Checks: []Check{{Key: "b", Limit: one}, {Key: "c", Limit: one}}}, 1, true},
		{Query{Checks: []Check{{Key: "b", Limit: one}}}, future, false},
		{Query{Guards: []string{"g1"}, Checks: []Check{{Key: "d", Limit: one}}}, 0, false},
		{Query{Guards: []string{"g0"}, Mode: GuardsOnly}, 1, true},
		{Query{Checks: []Check{{Key: "c", Limit: one}}, Mode: Peek}, future, false},
	}
	f := &flusher{b: NewBatcher(r, 0, 0)}
	nchecks := make([]int, len(qs))
	for i := range qs {
		nchecks[i] = f.script.add(&qs[i].q, nil, qs[i].deadline)
	}
	vals, err := f.exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answers := make([]Answer, len(qs))
	for i := range qs {
		var this []int64
		if this, vals, err = splitReply(vals, nchecks[i]); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		answers[i].reset(&qs[i].q)
		err := readAnswer(this, &qs[i].q, nil, &answers[i])
		if late := errors.Is(err, ErrStore) && errors.Is(err, context.DeadlineExceeded); late != qs[i].late || (!late && err != nil) {
			t.Fatalf("query %d: %v; want late %v", i, err, qs[i].late)
		}
	}
	if len(vals) != 0 {
		t.Fatalf("%d values left over", len(vals))
	}
	if a := answers[0]; !a.Results[0].Allowed {
		t.Fatalf("a: %+v", a)
	}
	if a := answers[2]; !a.Results[0].Allowed || a.Results[0].Remaining != 0 {
		t.Fatalf("b after the late query: %+v; want allowed (the late one took nothing)", a)
	}
	if a := answers[3]; a.Guard != 0 {
		t.Fatalf("guarded query: %+v; want guard 0", a)
	}
	if a := answers[5]; !a.Results[0].Allowed {
		t.Fatalf("c peeked after the late query: %+v; want allowed", a)
	}
	for _, key := range []string{"c", "d"} {
		if n, err := srv.Client.Exists(ctx, key).Result(); err != nil || n != 0 {
			t.Fatalf("EXISTS %s = %d, %v: want nothing consumed", key, n, err)
		}
	}

	// Alone: Redis.Decide's own call, with a deadline long past.
	keys, args := scriptArgs(&qs[1].q, nil, 1)
	got, err := decideScript.Run(ctx, srv.Client, keys, args...).Int64Slice()
	if err != nil {
		t.Fatal(err)
	}
	if err := readOne(got, &qs[1].q, nil, &Answer{}); !errors.Is(err, ErrStore) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("alone: %v; want ErrStore wrapping context.DeadlineExceeded", err)
	}
}

// Redis on this host has this host's clock: the offset is within the
// round trip, not off by a unit.
func TestClockOffset(t *testing.T) {
	srv := testenv.StartRedis(t)
	offset, err := NewRedis(srv.Client).ClockOffset(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if offset.Abs() > 50*time.Millisecond {
		t.Fatalf("offset %s between Redis and this host, on the same host", offset)
	}
	srv.Stop()
	if _, err := NewRedis(srv.Client).ClockOffset(context.Background()); !errors.Is(err, ErrStore) {
		t.Fatalf("with Redis down: %v, want ErrStore", err)
	}
}
