package worker

// Benchmarks of the worker's decision path: one request message handled as
// Run hands it over (deadline check, decode, policy, store, metrics, reply),
// without the NATS delivery in front of it.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
)

// benchMessages returns n join requests as the gateway publishes them
// (operation ID and a deadline far ahead), received on a real subscription
// so that replying to them works, from n applicants in n/16 groups.
func benchMessages(b *testing.B, nc *nats.Conn, n int) []*nats.Msg {
	b.Helper()
	sub, err := nc.SubscribeSync("bench.requests")
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	deadline := time.Now().Add(time.Hour)
	for i := range n {
		m := nats.NewMsg("bench.requests")
		m.Reply = "bench.replies" // nobody listens: the reply is published and dropped
		body := callback.IMServerJoinGroup(fmt.Sprint(2_000_000_000+i%(n/16+1)), fmt.Sprint(1_000_000_000+i), "hello, please let me in")
		m.Data = natsconn.AppendTagged(nil, uint64(i), deadline, fmt.Append(nil, "bench-operation-", i), []byte(body))
		if err := nc.PublishMsg(m); err != nil {
			b.Fatal(err)
		}
	}
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		if msgs[i], err = sub.NextMsg(5 * time.Second); err != nil {
			b.Fatal(err)
		}
		// Handled as on the worker's subject.
		msgs[i].Subject = natsconn.TaggedSubject("joingate", callback.JoinGroupCommand)
	}
	return msgs
}

// benchHandle handles the messages in turn, b.N times in all, with a
// policy of the default two limits set to limit per period (and burst),
// and wants every answer to start with want.
func benchHandle(b *testing.B, store Store, limit int, period time.Duration, memory int, want string) {
	benchHandleWith(b, store, limit, period, memory, want, nil)
}

// benchHandleWith is benchHandle with prepare run on the worker before the
// messages are handled once each.
func benchHandleWith(b *testing.B, store Store, limit int, period time.Duration, memory int, want string, prepare func(*Worker)) {
	ns := testenv.NATS(b)
	cfg := config.Default()
	for i := range cfg.JoinGroup.Limits {
		cfg.JoinGroup.Limits[i].Limit, cfg.JoinGroup.Limits[i].Burst, cfg.JoinGroup.Limits[i].Period = limit, limit, period
	}
	p, err := policy.NewSet(cfg, "bench:")
	if err != nil {
		b.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Conn, opts.Store, opts.Policy, opts.RefusalMemory = testenv.Conn(b, ns), store, p, memory
	w, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	msgs := benchMessages(b, opts.Conn, 1024)
	if prepare != nil {
		prepare(w)
	}
	var s scratch
	for _, m := range msgs { // every applicant once: a flood finds them refused
		w.handle(m, &s)
	}
	b.ReportAllocs()
	defer testenv.CPUPerOp(b)()
	for i := 0; b.Loop(); i++ {
		w.handle(msgs[i%len(msgs)], &s)
		if !strings.HasPrefix(string(s.Body), want) {
			b.Fatalf("decided %q, want %s...", s.Body, want)
		}
	}
}

const benchAllow = callback.AllowJSON

// The decision with the in-memory store (`joingate all` without Redis).
func BenchmarkHandleMemory(b *testing.B) {
	benchHandle(b, ratelimit.NewMemory(), 1_000_000, time.Second, 0, benchAllow)
}

// The decision with a real Redis on a unix socket: one script call per
// request, the round trip included. With the memory of refusals on (the
// default), the worker holds the lists and sends the call without guards.
func BenchmarkHandleRedis(b *testing.B) {
	red := ratelimit.NewRedis(testenv.StartRedis(b).Client)
	b.Run("memory=off", func(b *testing.B) { benchHandle(b, red, 1_000_000, time.Second, 0, benchAllow) })
	b.Run("memory=on", func(b *testing.B) { benchHandle(b, red, 1_000_000, time.Second, 100_000, benchAllow) })
}

// A flood: every applicant already at its limit (one an hour), so every
// decision is a refusal; without the memory of refusals each costs a Redis
// call, with it none.
func BenchmarkHandleRedisFlood(b *testing.B) {
	red := ratelimit.NewRedis(testenv.StartRedis(b).Client)
	refusal := `{"actionCode":0,"errCode":5001`
	b.Run("memory=off", func(b *testing.B) { benchHandle(b, red, 1, time.Hour, 0, refusal) })
	b.Run("memory=on", func(b *testing.B) { benchHandle(b, red, 1, time.Hour, 100_000, refusal) })
}

// A flood of deny-listed applicants (the operator's answer to an attack):
// without the memory each callback asks Redis, whose guard decides; with
// it the worker holds the lists and none does.
func BenchmarkHandleRedisDenyListed(b *testing.B) {
	red := ratelimit.NewRedis(testenv.StartRedis(b).Client)
	k := policy.NewKeys("bench:")
	deny := policy.ListDenyApplicants
	for i := range 1024 {
		id := fmt.Sprint(1_000_000_000 + i)
		if err := red.ListAdd(context.Background(), k.Index(deny), id, k.Flag(deny, id)); err != nil {
			b.Fatal(err)
		}
	}
	refusal := `{"actionCode":0,"errCode":5002`
	held := func(w *Worker) {
		if w.memory == nil {
			return
		}
		// The lists load with the first decisions: wait until they are held.
		if !testenv.Eventually(5*time.Second, func() bool {
			var s scratch
			w.handle(benchMessages(b, w.opts.Conn, 1)[0], &s)
			return w.memory.Stats().Entries >= 1024
		}) {
			b.Fatal("lists never held")
		}
	}
	b.Run("memory=off", func(b *testing.B) { benchHandleWith(b, red, 1_000_000, time.Second, 0, refusal, held) })
	b.Run("memory=on", func(b *testing.B) { benchHandleWith(b, red, 1_000_000, time.Second, 100_000, refusal, held) })
}
