package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/testenv"
)

// ask is a tagged request on subject whose body is data, as the gateway
// publishes them; request sets its tag.
func ask(subject, data string) *nats.Msg {
	return &nats.Msg{Subject: subject, Data: natsconn.AppendTagged(nil, 0, time.Now().Add(time.Hour), nil, []byte(data))}
}

// answer replies data to a tagged request, as a worker does.
func answer(m *nats.Msg, data string) {
	tag, _, _, _, _ := natsconn.ParseTagged(m.Data)
	m.Respond(natsconn.AppendReply(nil, tag, []byte(data)))
}

// body is a tagged request's body.
func body(m *nats.Msg) string {
	_, _, _, b, _ := natsconn.ParseTagged(m.Data)
	return string(b)
}

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

// holding subscribes n times to "req" on a connection of its own, as a
// worker that passes each request it gets to the test unanswered.
func holding(t *testing.T, ns *server.Server, n int) (*nats.Conn, <-chan *nats.Msg) {
	t.Helper()
	held := make(chan *nats.Msg, 8)
	nc := testenv.Conn(t, ns)
	for range n {
		if _, err := nc.Subscribe("req", func(m *nats.Msg) { held <- m }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return nc, held
}

// outcome is what a request returned.
type outcome struct {
	reply string
	err   error
}

// inBackground requests data on "req" and returns where its outcome will be.
func inBackground(r *replies, data string, wait time.Duration) <-chan outcome {
	out := make(chan outcome, 1)
	go func() {
		reply, err := r.request(ask("req", data), time.Now().Add(wait))
		out <- outcome{string(reply), err}
	}()
	return out
}

// A reply that comes after its request gave up must not answer the next
// request that waits in the same slot: it would be another applicant's
// decision.
func TestLateReplyNotHandedToTheNextRequest(t *testing.T) {
	ns := testenv.NATS(t)
	worker, held := holding(t, ns, 1)
	r := newTestReplies(t, testenv.Conn(t, ns))
	if o := <-inBackground(r, "first", 50*time.Millisecond); !errors.Is(o.err, errReplyTimeout) {
		t.Fatalf("first request: %+v, want the timeout", o)
	}
	first := <-held
	second := inBackground(r, "second", 5*time.Second)
	m := <-held
	// The first request's answer arrives late, then the second's.
	answer(first, "late answer to the first")
	worker.Flush()
	answer(m, "answer to the second")
	if o := <-second; o.reply != "answer to the second" || o.err != nil {
		t.Fatalf("second request: %+v", o)
	}
	if n := len(*r.slots.Load()); n != 1 {
		t.Fatalf("%d slots for requests made one after the other, want 1 reused", n)
	}
}

func TestNoResponders(t *testing.T) {
	ns := testenv.NATS(t)
	r := newTestReplies(t, testenv.Conn(t, ns))
	if o := <-inBackground(r, "", 5*time.Second); !errors.Is(o.err, nats.ErrNoResponders) {
		t.Fatalf("%+v, want no responders", o)
	}
}

// A second reply to a request already answered (two queue groups on the
// subject, a debugging subscriber) must not answer the request that waits
// in the same slot next.
func TestDuplicateReplyNotHandedToTheNextRequest(t *testing.T) {
	ns := testenv.NATS(t)
	twice, held := holding(t, ns, 2) // every request delivered twice
	r := newTestReplies(t, testenv.Conn(t, ns))
	first := inBackground(r, "first", 5*time.Second)
	one, again := <-held, <-held
	answer(one, "first")
	if o := <-first; o.reply != "first" || o.err != nil {
		t.Fatalf("first request: %+v", o)
	}
	second := inBackground(r, "second", 5*time.Second)
	two := <-held
	<-held
	answer(again, "first, again")
	twice.Flush()
	answer(two, "second")
	if o := <-second; o.reply != "second" || o.err != nil {
		t.Fatalf("second request: %+v", o)
	}
}

// As nats.go's requests: a closed connection ends the requests waiting on
// it at once (the gateway answers nats_unavailable); a lost one does not,
// since the reply may still come after a reconnect, and they wait for
// their deadline.
func TestConnectionLossAndClose(t *testing.T) {
	for _, c := range []struct {
		name     string
		deadline time.Duration
		cut      func(*server.Server, *nats.Conn)
		want     error
	}{
		{"closed", 10 * time.Second, func(_ *server.Server, nc *nats.Conn) { nc.Close() }, errConnClosed},
		{"lost", 300 * time.Millisecond, func(ns *server.Server, _ *nats.Conn) { ns.Shutdown() }, errReplyTimeout},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := testenv.NATS(t)
			_, held := holding(t, ns, 1)
			nc := testenv.Conn(t, ns, nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
			out := inBackground(newTestReplies(t, nc), "", c.deadline)
			<-held
			c.cut(ns, nc)
			if o := <-out; !errors.Is(o.err, c.want) {
				t.Fatalf("%+v, want %v", o, c.want)
			}
		})
	}
}

// Replies to subjects the gateway never asked for are dropped, also while
// a request waits: not a number, generation 0, a slot that does not exist.
func TestStrayReplies(t *testing.T) {
	ns := testenv.NATS(t)
	worker, held := holding(t, ns, 1)
	r := newTestReplies(t, testenv.Conn(t, ns))
	out := inBackground(r, "", 5*time.Second)
	m := <-held
	for _, stray := range []string{"x.y", "?", "0", strconv.FormatUint(1<<slotBits|999, 36)} {
		worker.Publish(r.prefix+stray, []byte("stray"))
	}
	worker.Flush()
	answer(m, "answer")
	if o := <-out; o.reply != "answer" || o.err != nil {
		t.Fatalf("%+v", o)
	}
}

// A slot asks for its replies on one subject while they come (found in the
// server's caches), and on a new one after a request went unanswered: a
// no-responders status, which carries no tag, for the request that gave
// up must not end the next one.
func TestReplySubjects(t *testing.T) {
	ns := testenv.NATS(t)
	worker, held := holding(t, ns, 1)
	r := newTestReplies(t, testenv.Conn(t, ns))
	answered := func() string {
		out := inBackground(r, "", 5*time.Second)
		m := <-held
		answer(m, "ok")
		if o := <-out; o.err != nil {
			t.Fatal(o.err)
		}
		return m.Reply
	}
	if first, second := answered(), answered(); first != second {
		t.Fatalf("answered requests asked on %s then %s, want one subject", first, second)
	}
	if o := <-inBackground(r, "", 50*time.Millisecond); !errors.Is(o.err, errReplyTimeout) {
		t.Fatalf("unanswered request: %+v", o)
	}
	unanswered := <-held
	out := inBackground(r, "", 5*time.Second)
	next := <-held
	if next.Reply == unanswered.Reply {
		t.Fatalf("after an unanswered request, still %s", next.Reply)
	}
	status := func(subject string) {
		worker.PublishMsg(&nats.Msg{Subject: subject, Header: nats.Header{"Status": []string{"503"}}})
		worker.Flush()
	}
	status(unanswered.Reply) // late, for the request that gave up
	answer(next, "ok")
	if o := <-out; o.err != nil {
		t.Fatalf("the next request: %+v, want its answer", o)
	}
	out = inBackground(r, "", 5*time.Second)
	statused := <-held
	status(statused.Reply)
	if o := <-out; !errors.Is(o.err, nats.ErrNoResponders) {
		t.Fatalf("a status on the subject asked: %+v, want no responders", o)
	}
	// No responders is an answer: nothing more comes for that request.
	if again := answered(); again != statused.Reply {
		t.Fatalf("after no responders, %s, want %s kept", again, statused.Reply)
	}
	// A request that could not be published may have left its status on
	// the way (ErrMaxPayload is nats.go's own, before any byte is sent,
	// but the slot cannot tell): the next asks elsewhere.
	big := ask("req", strings.Repeat("x", int(r.nc.MaxPayload())+1))
	if _, err := r.request(big, time.Now().Add(5*time.Second)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("an oversized request: %v", err)
	}
	if after := answered(); after == statused.Reply {
		t.Fatalf("after a publish error, still %s", after)
	}
}

// Concurrent requests each get their own reply, and slots are reused.
func TestConcurrentRequests(t *testing.T) {
	ns := testenv.NATS(t)
	echo := testenv.Conn(t, ns)
	if _, err := echo.Subscribe("echo", func(m *nats.Msg) { answer(m, body(m)) }); err != nil {
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
				reply, err := r.request(ask("echo", want), time.Now().Add(5*time.Second))
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
// the gateway's replies (tagged requests) and with nats.go's RequestMsg,
// which they replaced (BENCHMARKS.md, 2026-12-07).
func BenchmarkNATSRoundTrip(b *testing.B) {
	const callback = `{"callbackCommand":"callbackBeforeJoinGroupCommand","groupID":"2000000001","groupType":"\u0002","applyID":"1000000001","reqMessage":"hello","ex":""}` + "\n"
	const allow = `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`
	run := func(b *testing.B, request func(nc *nats.Conn) func(*nats.Msg) ([]byte, error), msg func() *nats.Msg) {
		ns := testenv.NATS(b)
		responder := testenv.Conn(b, ns, nats.InProcessServer(ns))
		if _, err := responder.QueueSubscribe("tagged", "workers", func(m *nats.Msg) { answer(m, allow) }); err != nil {
			b.Fatal(err)
		}
		if _, err := responder.QueueSubscribe("plain", "workers", func(m *nats.Msg) { m.Respond([]byte(allow)) }); err != nil {
			b.Fatal(err)
		}
		responder.Flush()
		do := request(testenv.Conn(b, ns, nats.InProcessServer(ns)))
		b.ReportAllocs()
		b.SetParallelism(64 / runtime.GOMAXPROCS(0))
		defer testenv.CPUPerOp(b)()
		b.RunParallel(func(pb *testing.PB) {
			m := msg()
			for pb.Next() {
				if reply, err := do(m); err != nil || string(reply) != allow {
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
		}, func() *nats.Msg { return ask("tagged", callback) })
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
		}, func() *nats.Msg { return &nats.Msg{Subject: "plain", Data: []byte(callback)} })
	})
}
