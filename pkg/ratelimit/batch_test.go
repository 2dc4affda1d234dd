package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/redisconn"
	"github.com/joingate/joingate/pkg/testenv"
)

// newBatcher returns a Batcher on client with at most pipelines in flight
// (0: the default) that sends every call through the flushers (solo false)
// or as production does (solo true), closed when the test ends.
func newBatcher(t testing.TB, client rediser, solo bool, pipelines int) *Batcher {
	b := NewBatcher(NewRedis(client), 0, pipelines)
	b.solo = solo
	t.Cleanup(b.Close)
	return b
}

// The EVALSHA command that the flusher builds for a batch: its keys and
// arguments (passed by pointer) in the script's layout, each limit sent once,
// and nothing left over from a larger batch built before it.
func TestBatcherCommand(t *testing.T) {
	hourly := func(key string, shadow bool, cost int) Check {
		return Check{Key: key, Limit: Limit{Rate: 7, Period: time.Hour, Burst: 300}, Shadow: shadow, Cost: cost}
	}
	const iv = 514285714 // µs: an hour / 7
	f := &flusher{b: &Batcher{sha: decideScript.Hash()}}
	batch := func(want []any, qs ...Query) {
		t.Helper()
		f.script.reset()
		for i := range qs {
			f.script.add(&qs[i], nil, int64(i)*5)
		}
		want = append([]any{"evalsha", decideScript.Hash()}, want...)
		if got := derefArgs(f.command(context.Background()).Args()); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("queries %+v:\nbuilt %v\nwant  %v", qs, got, want)
		}
	}
	batch([]any{7, "g1", "g2", "a", "b", "a", "c", "g3",
		3, 3, iv, 300, 1, "0", iv, 300, 1, "1", iv, 300, 2, "0",
		2, 2, "c", 0, 1, 2,
		0, 2, "p", 5, 1, 3,
		1, 0, "g", 10},
		Query{Guards: []string{"g1", "g2"}, Checks: []Check{hourly("a", false, 0), hourly("b", true, 1)}},
		Query{Checks: []Check{hourly("a", false, 1), hourly("c", false, 2)}, Mode: Peek},
		Query{Guards: []string{"g3"}, Checks: []Check{hourly("d", false, 1)}, Mode: GuardsOnly},
	)
	batch([]any{1, "a", 1, 1, iv, 300, 1, "0", 0, 1, "c", 0, 1},
		Query{Checks: []Check{hourly("a", false, 1)}})
	// As Redis.Decide builds a query alone.
	q := Query{Guards: []string{"g1"}, Checks: []Check{hourly("a", true, 3)}}
	keys, args := scriptArgs(&q, nil, 9)
	if got, want := fmt.Sprint(keys, derefArgs(args)), fmt.Sprint([]string{"g1", "a"}, []any{1, 1, iv, 300, 3, "1", 1, 1, "c", 9, 1}); got != want {
		t.Fatalf("alone: %s, want %s", got, want)
	}
}

// A check shares a limit sent before it among the first maxShared, and
// sends its own beyond them.
func TestScriptCallShares(t *testing.T) {
	var c scriptCall
	limit := func(i int) Check {
		return Check{Key: fmt.Sprint("k", i), Limit: Limit{Rate: 1 + i, Period: time.Hour, Burst: 10}}
	}
	var q Query
	for i := range maxShared + 8 {
		q.Checks = append(q.Checks, limit(i))
	}
	q.Checks = append(q.Checks, limit(0), limit(maxShared-1), limit(maxShared))
	c.add(&q, nil, 0)
	c.argv()
	if got, want := c.head[2], int64(maxShared+8+1); got != want {
		t.Fatalf("%d limits sent, want %d", got, want)
	}
	if got, want := fmt.Sprint(c.queries[len(c.queries)-3:]), fmt.Sprint([]int64{1, maxShared, maxShared + 9}); got != want {
		t.Fatalf("the last three checks use limits %s, want %s", got, want)
	}
}

// derefArgs returns args with the pointers the script call passes replaced
// by what they point to.
func derefArgs(args []any) []any {
	got := make([]any, len(args))
	for i, v := range args {
		switch v := v.(type) {
		case *string:
			got[i] = *v
		case *int64:
			got[i] = *v
		default:
			got[i] = v
		}
	}
	return got
}

// A batch decides its queries as the in-memory store decides them one after
// the other: random batches of 1 to 40 queries on six keys, so that most
// batches use a key more than once and a query must see what the ones
// before it in the same script call consumed.
func TestBatchAgrees(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	mem, red := NewMemory(), NewRedis(srv.Client)
	for _, s := range []store{mem, red} {
		if err := s.ListAdd(ctx, "idx", "x", "g1"); err != nil {
			t.Fatal(err)
		}
	}
	f := &flusher{b: NewBatcher(red, 0, 0)}
	rng := rand.New(rand.NewPCG(3, 4))
	multi := 0
	for step := range 300 {
		qs := make([]Query, 1+rng.IntN(40))
		want := make([]Answer, len(qs))
		f.script.reset()
		nchecks := make([]int, len(qs))
		for i := range qs {
			qs[i] = randomQuery(rng)
			if step%4 == 0 {
				// Limits of their own: more than a call shares (maxShared).
				for j := range qs[i].Checks {
					qs[i].Checks[j].Limit.Burst += i
				}
			}
			want[i] = decide(t, mem, qs[i])
			nchecks[i] = f.script.add(&qs[i], nil, 0)
		}
		vals, err := f.exec(ctx)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if n := len(qs); n > 1 {
			multi++
		}
		for i := range qs {
			var this []int64
			if this, vals, err = splitReply(vals, nchecks[i]); err != nil {
				t.Fatalf("step %d query %d: %v", step, i, err)
			}
			var got Answer
			got.reset(&qs[i])
			if err := readAnswer(this, &qs[i], nil, &got); err != nil {
				t.Fatalf("step %d query %d: %v", step, i, err)
			}
			if err := sameAnswer(&qs[i], &want[i], &got); err != nil {
				t.Fatalf("step %d query %d of %d %+v: memory %+v, batch %+v: %v", step, i, len(qs), qs[i], want[i], got, err)
			}
		}
		if len(vals) != 0 {
			t.Fatalf("step %d: %d values left over", step, len(vals))
		}
	}
	if multi < 250 {
		t.Fatalf("only %d batches of more than one query", multi)
	}
}

// The conformance suite, unchanged, through the Batcher: with every call
// sent by the flusher (solo off), and as in production.
func TestBatcherConformance(t *testing.T) {
	srv := testenv.StartRedis(t)
	for _, solo := range []bool{false, true} {
		t.Run(fmt.Sprint("solo=", solo), func(t *testing.T) {
			testStore(t, func(t *testing.T) store {
				if err := srv.Client.FlushAll(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
				return newBatcher(t, srv.Client, solo, 0)
			})
		})
	}
}

// gate holds each pipeline before it goes out until the test lets it go.
type gate struct {
	entered chan int // the pipeline's number of queries
	release chan struct{}
}

func holdPipelines(b *Batcher) *gate {
	g := &gate{entered: make(chan int), release: make(chan struct{})}
	b.beforeExec = func(n int) {
		g.entered <- n
		<-g.release
	}
	return g
}

// 200 callers at once against a burst of 50: exactly 50 are admitted. In
// "held", the first pipeline is held until every caller has queued, so
// that the queries share pipelines whatever the scheduler does; in "free",
// as they come, with a lone caller going alone.
func TestBatcherConcurrent(t *testing.T) {
	srv := testenv.StartRedis(t)
	const callers, burst = 200, 50
	c := Check{Key: "hot", Limit: Limit{Rate: burst, Period: time.Hour, Burst: burst}}
	run := func(t *testing.T, b *Batcher) {
		var allowed, refused atomic.Int64
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				q := Query{Guards: []string{"deny:u"}, Checks: []Check{c}}
				var a Answer
				if err := b.Decide(context.Background(), &q, &a); err != nil {
					t.Error(err)
					return
				}
				if a.Admitted(&q) {
					allowed.Add(1)
				} else {
					refused.Add(1)
				}
			})
		}
		wg.Wait()
		if allowed.Load() != burst || refused.Load() != callers-burst {
			t.Fatalf("%d allowed, %d refused; want exactly %d allowed", allowed.Load(), refused.Load(), burst)
		}
	}
	held := func(t *testing.T, pipelines int) {
		srv.Client.FlushAll(context.Background())
		b := newBatcher(t, srv.Client, false, pipelines)
		hold := make(chan struct{})
		b.beforeExec = func(int) { <-hold }
		done := make(chan struct{})
		go func() {
			defer close(done)
			run(t, b)
		}()
		// Every caller is queued or in the held pipeline.
		if !testenv.Eventually(10*time.Second, func() bool {
			b.mu.Lock()
			queued := len(b.queue)
			b.mu.Unlock()
			_, sent := b.Stats()
			return queued+int(sent) == callers
		}) {
			t.Fatal("callers did not all queue within 10s")
		}
		close(hold)
		<-done
		// The first pipelines left at once (with 1 or more queries each);
		// the others then went in pipelines of at most DefaultMaxBatch.
		most := uint64(pipelines + (callers-pipelines+DefaultMaxBatch-1)/DefaultMaxBatch)
		if sent, queries := b.Stats(); queries != callers || sent > most {
			t.Fatalf("%d queries in %d pipelines, want %d in at most %d", queries, sent, callers, most)
		}
	}
	t.Run("held, 1 pipeline", func(t *testing.T) { held(t, 1) })
	t.Run("held, 2 pipelines", func(t *testing.T) { held(t, 2) })
	t.Run("free", func(t *testing.T) {
		srv.Client.FlushAll(context.Background())
		run(t, newBatcher(t, srv.Client, true, 0))
	})
}

// A caller whose context ends while its query waits gets ErrStore wrapping
// the context's error, and its query is not sent; one whose context ends
// while its query is in flight gets the same at once, the answer is thrown
// away (the quota it took stays taken), and the others in its pipeline are
// answered.
func TestBatcherDeadline(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	b := newBatcher(t, srv.Client, false, 1) // pipelines in the order of the test
	g := holdPipelines(b)
	hourly := func(key string) *Query {
		return &Query{Checks: []Check{{Key: key, Limit: Limit{Rate: 10, Period: time.Hour, Burst: 10}}}}
	}
	type result struct {
		a   Answer
		err error
	}
	start := func(ctx context.Context, q *Query) <-chan result {
		ch := make(chan result, 1)
		go func() {
			var r result
			r.err = b.Decide(ctx, q, &r.a)
			ch <- r
		}()
		return ch
	}
	queued := func(n int) {
		t.Helper()
		if !testenv.Eventually(10*time.Second, func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.queue) == n
		}) {
			t.Fatalf("%d calls not queued within 10s", n)
		}
	}
	exists := func(key string) bool {
		n, err := srv.Client.Exists(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	// Pipeline 1 holds "first" while "expires" (50ms) and "waits" queue.
	first := start(ctx, hourly("first"))
	if n := <-g.entered; n != 1 {
		t.Fatalf("first pipeline has %d queries", n)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	expires := start(short, hourly("expires"))
	waits := start(ctx, hourly("waits"))
	queued(2)
	r := <-expires // while pipeline 1 is held: nothing was sent for it
	if !errors.Is(r.err, ErrStore) || !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("expired while queued: %v, want ErrStore wrapping context.DeadlineExceeded", r.err)
	}
	g.release <- struct{}{}
	if r := <-first; r.err != nil || !r.a.Results[0].Allowed || r.a.Results[0].Remaining != 9 {
		t.Fatalf("first: %+v", r)
	}

	// Pipeline 2 carries "waits" alone: the expired query was left out.
	if n := <-g.entered; n != 1 {
		t.Fatalf("second pipeline has %d queries, want 1 (the expired one left out)", n)
	}
	g.release <- struct{}{}
	if r := <-waits; r.err != nil || !r.a.Results[0].Allowed {
		t.Fatalf("waits: %+v", r)
	}
	if exists("expires") {
		t.Fatal("the query that expired in the queue was run")
	}

	// Pipeline 3 holds "hold"; "gives-up" and "stays" then go together in
	// pipeline 4, where "gives-up" is cancelled before the pipeline goes out.
	hold := start(ctx, hourly("hold"))
	<-g.entered
	giveUp, cancelGiveUp := context.WithCancel(ctx)
	givesUp := start(giveUp, hourly("gives-up"))
	queued(1)
	stays := start(ctx, hourly("stays"))
	queued(2)
	g.release <- struct{}{}
	if r := <-hold; r.err != nil {
		t.Fatal(r.err)
	}
	if n := <-g.entered; n != 2 {
		t.Fatalf("fourth pipeline has %d queries, want 2", n)
	}
	cancelGiveUp()
	if r := <-givesUp; !errors.Is(r.err, ErrStore) || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled in flight: %v, want ErrStore wrapping context.Canceled", r.err)
	}
	g.release <- struct{}{}
	if r := <-stays; r.err != nil || !r.a.Results[0].Allowed || r.a.Results[0].Remaining != 9 {
		t.Fatalf("stays: %+v", r)
	}
	if !exists("gives-up") {
		t.Fatal("the query cancelled in flight was not run: it was sent, so it should have been")
	}
	if pipelines, queries := b.Stats(); pipelines != 4 || queries != 5 {
		t.Fatalf("%d queries in %d pipelines, want 5 in 4", queries, pipelines)
	}
}

// A call whose context ended while it waited is not sent, even when its
// caller has not yet seen the end (the flusher finds it first).
func TestBatcherExpiredNotSent(t *testing.T) {
	srv := testenv.StartRedis(t)
	b := newBatcher(t, srv.Client, false, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	cancel()
	var a Answer
	q := Query{Checks: []Check{{Key: "late", Limit: Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}
	c := b.calls.Get().(*call)
	c.ctx, c.q, c.a, c.state = ctx, &q, &a, callQueued
	if !b.enqueue(c) { // as Decide does, without its caller's wait
		t.Fatal("enqueue refused")
	}
	<-c.done
	if !errors.Is(c.err, ErrStore) || !errors.Is(c.err, context.Canceled) {
		t.Fatalf("expired call answered %v, want ErrStore wrapping context.Canceled", c.err)
	}
	if n, err := srv.Client.Exists(context.Background(), "late").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS late = %d, %v: the expired query was run", n, err)
	}
	if pipelines, queries := b.Stats(); pipelines != 0 || queries != 0 {
		t.Fatalf("%d queries in %d pipelines, want none", queries, pipelines)
	}
}

// With Redis down every caller gets ErrStore from its pipeline, not by
// waiting out its deadline.
func TestBatcherRedisDown(t *testing.T) {
	srv := testenv.StartRedis(t)
	b := newBatcher(t, srv.Client, false, 0)
	q := Query{Guards: []string{"g"}, Checks: []Check{{Key: "k", Limit: Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}
	if err := b.Decide(context.Background(), &q, &Answer{}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			q := q
			err := b.Decide(ctx, &q, &Answer{})
			if !errors.Is(err, ErrStore) || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Decide with Redis down: %v, want ErrStore before the deadline", err)
			}
		})
	}
	wg.Wait()
	if _, queries := b.Stats(); queries < 51 {
		t.Fatalf("%d queries went through the flusher, want all 51", queries)
	}
	// Back up: the pipeline's connection is replaced and the script loaded
	// again (NOSCRIPT). After a burst of failed dials go-redis fails fast
	// and dials again once a second in the background: within seconds.
	srv.Start(t)
	var err error
	if !testenv.Eventually(5*time.Second, func() bool {
		err = b.Decide(context.Background(), &q, &Answer{})
		return err == nil
	}) {
		t.Fatalf("after Redis came back: %v", err)
	}
}

// flushers counts the flusher goroutines of every Batcher in the process
// (the tests of this package run one at a time and close theirs).
func flushers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "ratelimit.(*flusher).run(")
}

// The flushers start with the first queued call and end on Close; calls
// after Close go straight to Redis.
func TestBatcherClose(t *testing.T) {
	srv := testenv.StartRedis(t)
	if n := flushers(); n != 0 {
		t.Fatalf("%d flushers before the test", n)
	}
	b := NewBatcher(NewRedis(srv.Client), 0, 3)
	b.solo = false
	if n := flushers(); n != 0 {
		t.Fatalf("%d flushers before any call", n)
	}
	q := Query{Checks: []Check{{Key: "k", Limit: Limit{Rate: 10, Period: time.Hour, Burst: 10}}}}
	var a Answer
	if err := b.Decide(context.Background(), &q, &a); err != nil || a.Results[0].Remaining != 9 {
		t.Fatalf("Decide: %+v, %v", a, err)
	}
	if n := flushers(); n != 3 {
		t.Fatalf("%d flusher goroutines after a queued call, want 3", n)
	}
	b.Close()
	if !testenv.Eventually(5*time.Second, func() bool { return flushers() == 0 }) {
		t.Fatalf("%d flusher goroutines still there after Close", flushers())
	}
	if err := b.Decide(context.Background(), &q, &a); err != nil || a.Results[0].Remaining != 8 {
		t.Fatalf("Decide after Close: %+v, %v", a, err)
	}
	if pipelines, _ := b.Stats(); pipelines != 1 {
		t.Fatalf("%d pipelines, want 1 (the call after Close goes alone)", pipelines)
	}
	b.Close()
	NewBatcher(NewRedis(srv.Client), 0, 0).Close() // never started
}

// On Redis Cluster the Batcher is Redis.Decide: the conformance suite, and
// no flusher.
func TestBatcherCluster(t *testing.T) {
	c := testenv.StartCluster(t)
	var last *Batcher
	testStore(t, func(t *testing.T) store {
		c.FlushAll(t)
		last = newBatcher(t, c.Client, false, 0)
		return last
	})
	if pipelines, _ := last.Stats(); pipelines != 0 || flushers() != 0 {
		t.Fatalf("the Batcher batched on a cluster (%d pipelines)", pipelines)
	}
}

// Decisions through Redis over TCP on loopback (as `make bench` runs it),
// each the default policy's query (three guards, two limits too high to
// refuse) for one of 4096 applicants in 256 groups: one caller at a time
// (latency) and 64 at once (throughput), without the Batcher ("redis") and
// with it ("batcher": the defaults). "batcher-queued" sends even a lone
// call through a flusher: the cost of the hand-off that Decide's solo path
// avoids; "batcher-p1" and "-p4" allow 1 and 4 pipelines in flight.
func BenchmarkRedisDecide(b *testing.B) {
	srv := testenv.StartRedis(b)
	client, err := redisconn.New(fmt.Sprintf("redis://127.0.0.1:%d", srv.Port), time.Second, 64)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	queries := make([]Query, 4096)
	for i := range queries {
		l := Limit{Rate: 1_000_000, Period: time.Second, Burst: 1_000_000}
		queries[i] = Query{
			Guards: []string{fmt.Sprint("bench:allow:", i), fmt.Sprint("bench:deny:", i), fmt.Sprint("bench:deny-group:", i%256)},
			Checks: []Check{{Key: fmt.Sprint("bench:applicant:", i), Limit: l}, {Key: fmt.Sprint("bench:group:", i%256), Limit: l}},
		}
	}
	// The queries of a worker that holds the lists: no guard keys.
	unguarded := make([]Query, len(queries))
	for i := range queries {
		unguarded[i] = Query{Checks: queries[i].Checks}
	}
	run := func(b *testing.B, s interface {
		Decide(context.Context, *Query, *Answer) error
	}, callers int, queries []Query) {
		var next atomic.Int64
		decide := func(a *Answer) error {
			q := &queries[next.Add(1)%int64(len(queries))]
			if err := s.Decide(context.Background(), q, a); err != nil {
				return err
			}
			if !a.Admitted(q) {
				return fmt.Errorf("refused: %+v", a)
			}
			return nil
		}
		b.ReportAllocs()
		// Redis's own CPU (INFO cpu): what a decision costs the shared
		// server, which ns/op, the caller's wall time, does not tell.
		defer reportRedisCPU(b, client)()
		if callers == 1 {
			var a Answer
			for b.Loop() {
				if err := decide(&a); err != nil {
					b.Fatal(err)
				}
			}
			return
		}
		b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			var a Answer
			for pb.Next() {
				if err := decide(&a); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d/redis", callers), func(b *testing.B) {
			run(b, NewRedis(client), callers, queries)
		})
		for _, v := range []struct {
			name      string
			solo      bool
			pipelines int
			unguarded bool
		}{{"batcher", true, 0, false}, {"batcher-queued", false, 0, false}, {"batcher-p1", true, 1, false}, {"batcher-p4", true, 4, false}, {"batcher-unguarded", true, 0, true}} {
			if (callers == 1 && (v.pipelines != 0 || v.unguarded)) || (callers > 1 && !v.solo) {
				continue // the same as another case there, or not worth one
			}
			b.Run(fmt.Sprintf("callers=%d/%s", callers, v.name), func(b *testing.B) {
				bt := NewBatcher(NewRedis(client), 0, v.pipelines)
				bt.solo = v.solo
				defer bt.Close()
				qs := queries
				if v.unguarded {
					qs = unguarded
				}
				run(b, bt, callers, qs)
				if pipelines, queries := bt.Stats(); pipelines > 0 {
					b.ReportMetric(float64(queries)/float64(pipelines), "queries/batch")
				}
			})
		}
	}
}

// redisCPU is the CPU time client's Redis has used, in seconds (INFO cpu).
func redisCPU(b *testing.B, client *redis.Client) float64 {
	info, err := client.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu: %s: %v", line, err)
			}
			total += f
		}
	}
	return total
}

// reportRedisCPU returns what reports, as redis-cpu-µs/op, the CPU Redis
// used per operation since reportRedisCPU was called.
func reportRedisCPU(b *testing.B, client *redis.Client) func() {
	start := redisCPU(b, client)
	return func() {
		b.ReportMetric((redisCPU(b, client)-start)*1e6/float64(b.N), "redis-cpu-µs/op")
	}
}

// BenchmarkDecideScript sends the decision script fixed batches of 32
// queries of two checks (a worker's allow path with the lists held), one
// script call an operation, and reports Redis's CPU per query. With
// JOINGATE_BENCH_REDIS (a redis:// URL) it uses that server instead of one
// of its own: `make redis-instructions` runs it against a redis-server under
// callgrind, whose instruction count repeats from run to run where CPU time
// on this shared machine does not.
func BenchmarkDecideScript(b *testing.B) {
	url := os.Getenv("JOINGATE_BENCH_REDIS")
	if url == "" {
		url = testenv.StartRedis(b).URL
	}
	client, err := redisconn.New(url, 10*time.Second, 4)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	f := &flusher{b: NewBatcher(NewRedis(client), 0, 0)}
	l := Limit{Rate: 1_000_000, Period: time.Second, Burst: 1_000_000}
	const perCall = 32
	queries := make([]Query, 4096)
	for i := range queries {
		queries[i] = Query{Checks: []Check{{Key: fmt.Sprint("bench:applicant:", i), Limit: l}, {Key: fmt.Sprint("bench:group:", i%256), Limit: l}}}
	}
	b.ReportAllocs()
	start := redisCPU(b, client)
	n := 0
	for b.Loop() {
		f.script.reset()
		for range perCall {
			f.script.add(&queries[n%len(queries)], nil, 0)
			n++
		}
		if _, err := f.exec(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((redisCPU(b, client)-start)*1e6/float64(n), "redis-cpu-µs/query")
}
