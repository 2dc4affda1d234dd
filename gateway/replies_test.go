package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/joingate/joingate/pkg/testenv"
)

func newTestReplies(t testing.TB, nc *nats.Conn) *replies {
	t.Helper()
	r, err := newReplies(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

// A reply that comes after its request gave up must not answer the next
// request that waits in the same slot: it would be another applicant's
// decision.
func TestLateReplyNotHandedToTheNextRequest(t *testing.T) {
	ns := testenv.NATS(t)
	held := make(chan *nats.Msg, 2)
	worker := testenv.Conn(t, ns)
	if _, err := worker.Subscribe("req", func(m *nats.Msg) { held <- m }); err != nil {
		t.Fatal(err)
	}
	worker.Flush()
	r := newTestReplies(t, testenv.Conn(t, ns))

	if _, err := r.request(&nats.Msg{Subject: "req", Data: []byte("first")}, time.Now().Add(50*time.Millisecond)); !errors.Is(err, errReplyTimeout) {
		t.Fatalf("first request: %v, want the timeout", err)
	}
	first := <-held
	got := make(chan []byte, 1)
	go func() {
		reply, err := r.request(&nats.Msg{Subject: "req", Data: []byte("second")}, time.Now().Add(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- reply
	}()
	second := <-held
	if first.Reply == second.Reply {
		t.Fatalf("both requests asked for replies on %s", first.Reply)
	}
	// The first request's answer arrives late, then the second's.
	first.Respond([]byte("late answer to the first"))
	worker.Flush()
	second.Respond([]byte("answer to the second"))
	if reply := <-got; string(reply) != "answer to the second" {
		t.Fatalf("second request got %q", reply)
	}
	if n := len(*r.slots.Load()); n != 1 {
		t.Fatalf("%d slots for requests made one after the other, want 1 reused", n)
	}
}

func TestNoResponders(t *testing.T) {
	ns := testenv.NATS(t)
	r := newTestReplies(t, testenv.Conn(t, ns))
	if _, err := r.request(&nats.Msg{Subject: "nobody"}, time.Now().Add(5*time.Second)); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("%v, want no responders", err)
	}
}

// A second reply to a request already answered (two queue groups on the
// subject, a debugging subscriber) must not answer the request that waits
// in the same slot next.
func TestDuplicateReplyNotHandedToTheNextRequest(t *testing.T) {
	ns := testenv.NATS(t)
	held := make(chan *nats.Msg, 4)
	twice := testenv.Conn(t, ns)
	for range 2 { // every request delivered twice
		if _, err := twice.Subscribe("req", func(m *nats.Msg) { held <- m }); err != nil {
			t.Fatal(err)
		}
	}
	twice.Flush()
	r := newTestReplies(t, testenv.Conn(t, ns))
	ask := func(data string) <-chan []byte {
		got := make(chan []byte, 1)
		go func() {
			reply, err := r.request(&nats.Msg{Subject: "req", Data: []byte(data)}, time.Now().Add(5*time.Second))
			if err != nil {
				t.Error(err)
			}
			got <- reply
		}()
		return got
	}
	first := ask("first")
	one, again := <-held, <-held
	one.Respond([]byte("first"))
	if reply := <-first; string(reply) != "first" {
		t.Fatalf("first request got %q", reply)
	}
	second := ask("second")
	two := <-held
	<-held
	again.Respond([]byte("first, again"))
	twice.Flush()
	two.Respond([]byte("second"))
	if reply := <-second; string(reply) != "second" {
		t.Fatalf("second request got %q", reply)
	}
}

// As nats.go's requests: a closed connection ends the requests waiting on
// it at once (the gateway answers nats_unavailable); a lost one does not,
// since the reply may still come after a reconnect, and they wait for
// their deadline.
func TestConnectionLossAndClose(t *testing.T) {
	waiting := func(t *testing.T, ns *server.Server, deadline time.Duration) (*nats.Conn, <-chan error) {
		t.Helper()
		silent := testenv.Conn(t, ns)
		received := make(chan struct{}, 1)
		if _, err := silent.Subscribe("req", func(*nats.Msg) { received <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
		silent.Flush()
		nc := testenv.Conn(t, ns, nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
		r := newTestReplies(t, nc)
		errc := make(chan error, 1)
		go func() {
			_, err := r.request(&nats.Msg{Subject: "req"}, time.Now().Add(deadline))
			errc <- err
		}()
		<-received
		return nc, errc
	}
	t.Run("closed", func(t *testing.T) {
		ns := testenv.NATS(t)
		nc, errc := waiting(t, ns, 10*time.Second)
		nc.Close()
		if err := <-errc; !errors.Is(err, errConnClosed) {
			t.Fatalf("%v, want the closed connection", err)
		}
	})
	t.Run("lost", func(t *testing.T) {
		ns := testenv.NATS(t)
		_, errc := waiting(t, ns, 300*time.Millisecond)
		ns.Shutdown()
		if err := <-errc; !errors.Is(err, errReplyTimeout) {
			t.Fatalf("%v, want the deadline", err)
		}
	})
}

// Replies to subjects the gateway never asked for are dropped, also while
// a request waits: not a number, generation 0, a slot that does not exist.
func TestStrayReplies(t *testing.T) {
	ns := testenv.NATS(t)
	held := make(chan *nats.Msg, 1)
	worker := testenv.Conn(t, ns)
	if _, err := worker.Subscribe("req", func(m *nats.Msg) { held <- m }); err != nil {
		t.Fatal(err)
	}
	worker.Flush()
	r := newTestReplies(t, testenv.Conn(t, ns))
	got := make(chan []byte, 1)
	go func() {
		reply, err := r.request(&nats.Msg{Subject: "req"}, time.Now().Add(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- reply
	}()
	m := <-held
	for _, stray := range []string{"x.y", "?", "0", strconv.FormatUint(1<<slotBits|999, 36)} {
		worker.Publish(r.prefix+stray, []byte("stray"))
	}
	worker.Flush()
	m.Respond([]byte("answer"))
	if reply := <-got; string(reply) != "answer" {
		t.Fatalf("got %q", reply)
	}
}

// Concurrent requests each get their own reply, and slots are reused.
func TestConcurrentRequests(t *testing.T) {
	ns := testenv.NATS(t)
	echo := testenv.Conn(t, ns)
	if _, err := echo.Subscribe("echo", func(m *nats.Msg) { m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	echo.Flush()
	nc := testenv.Conn(t, ns)
	r := newTestReplies(t, nc)
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				want := fmt.Sprintf("%d/%d", w, i)
				reply, err := r.request(&nats.Msg{Subject: "echo", Data: []byte(want)}, time.Now().Add(5*time.Second))
				if err != nil || string(reply) != want {
					t.Errorf("request %s: %q, %v", want, reply, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(*r.slots.Load()); n > workers {
		t.Fatalf("%d slots for %d requests at most in flight", n, workers)
	}
}

// The NATS round trip of a decision without HTTP: 64 requests in flight
// through an in-process server to a responder that answers at once, with
// the gateway's replies and with nats.go's RequestMsg, which they replaced
// (BENCHMARKS.md, 2026-12-07).
func BenchmarkNATSRoundTrip(b *testing.B) {
	body := []byte(`{"callbackCommand":"callbackBeforeJoinGroupCommand","groupID":"2000000001","groupType":"\u0002","applyID":"1000000001","reqMessage":"hello","ex":""}` + "\n")
	allow := []byte(`{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`)
	run := func(b *testing.B, request func(nc *nats.Conn) func(*nats.Msg) ([]byte, error)) {
		ns := testenv.NATS(b)
		responder := testenv.Conn(b, ns, nats.InProcessServer(ns))
		if _, err := responder.QueueSubscribe("req", "workers", func(m *nats.Msg) { m.Respond(allow) }); err != nil {
			b.Fatal(err)
		}
		responder.Flush()
		do := request(testenv.Conn(b, ns, nats.InProcessServer(ns)))
		b.ReportAllocs()
		b.SetParallelism(64 / runtime.GOMAXPROCS(0))
		defer testenv.CPUPerOp(b)()
		b.RunParallel(func(pb *testing.PB) {
			m := &nats.Msg{Subject: "req", Data: body}
			for pb.Next() {
				if reply, err := do(m); err != nil || len(reply) != len(allow) {
					b.Errorf("%q, %v", reply, err)
					return
				}
			}
		})
	}
	b.Run("replies", func(b *testing.B) {
		run(b, func(nc *nats.Conn) func(*nats.Msg) ([]byte, error) {
			r := newTestReplies(b, nc)
			return func(m *nats.Msg) ([]byte, error) { return r.request(m, time.Now().Add(5*time.Second)) }
		})
	})
	b.Run("RequestMsg", func(b *testing.B) {
		run(b, func(nc *nats.Conn) func(*nats.Msg) ([]byte, error) {
			return func(m *nats.Msg) ([]byte, error) {
				reply, err := nc.RequestMsg(m, 5*time.Second)
				if err != nil {
					return nil, err
				}
				return reply.Data, nil
			}
		})
	})
}
