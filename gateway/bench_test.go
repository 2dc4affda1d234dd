package gateway_test

// Benchmarks of the gateway's request path, in process: a fasthttp client
// on an in-memory listener, the gateway, an in-process NATS server and a
// responder. allocs/op counts every allocation of the round trip, client
// and responder included; BenchmarkNATSRoundTrip (replies_test.go)
// measures the NATS share alone, so that the gateway's own allocations
// are the difference (see BENCHMARKS.md). Every NATS connection is in
// process, as in `joingate all`.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
	"github.com/joingate/joingate/worker"
)

// benchBodies are join callbacks of 1024 applicants in 64 groups.
var benchBodies = func() [][]byte {
	bodies := make([][]byte, 1024)
	for i := range bodies {
		bodies[i] = []byte(callback.IMServerJoinGroup(fmt.Sprint(2_000_000_000+i%64), fmt.Sprint(1_000_000_000+i), "hello, please let me in"))
	}
	return bodies
}()

// inProcess connects to ns as `joingate all` does: in process, no socket.
func inProcess(b *testing.B, ns *server.Server) *nats.Conn {
	return testenv.Conn(b, ns, nats.InProcessServer(ns))
}

// benchResponder answers every request on the gateway's subject with the
// allow body and nothing else: a worker that costs nothing.
func benchResponder(b *testing.B, ns *server.Server) {
	nc := inProcess(b, ns)
	if _, err := nc.QueueSubscribe("joingate.>", "joingate-workers", func(m *nats.Msg) {
		respond(m, []byte(callback.AllowJSON))
	}); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
}

// benchWorker runs a real worker with the in-memory store and a policy of
// two limits too high to refuse: every request goes through the whole
// decision.
func benchWorker(b *testing.B, ns *server.Server) {
	cfg := config.Default()
	for i := range cfg.JoinGroup.Limits {
		cfg.JoinGroup.Limits[i].Limit, cfg.JoinGroup.Limits[i].Burst, cfg.JoinGroup.Limits[i].Period = 1_000_000, 1_000_000, time.Second
	}
	p, err := policy.NewSet(cfg, "bench:")
	if err != nil {
		b.Fatal(err)
	}
	opts := worker.DefaultOptions()
	opts.Conn, opts.Store, opts.Policy = inProcess(b, ns), ratelimit.NewMemory(), p
	w, err := worker.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	testenv.Run(b, w.Run)
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) == nil }) {
		b.Fatal("worker not ready")
	}
}

// benchGateway runs a gateway on an in-memory listener and returns a
// client connected to it.
func benchGateway(b *testing.B, ns *server.Server) *fasthttp.HostClient {
	ln := fasthttputil.NewInmemoryListener()
	opts := gateway.DefaultOptions()
	opts.Listener = ln
	opts.Conn = inProcess(b, ns)
	gw, err := gateway.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	testenv.Run(b, gw.Run)
	return &fasthttp.HostClient{
		Addr:     "gateway",
		Dial:     func(string) (net.Conn, error) { return ln.Dial() },
		MaxConns: 1024,
	}
}

// benchRequest is a join callback as IMServer sends it.
func benchRequest(path string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.SetRequestURI("http://gateway" + path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json; charset=utf-8")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("Operationid", "bench-operation-0123456789")
	return req
}

// benchJoin posts b.N join callbacks one after the other and checks each
// answer is an allow.
func benchJoin(b *testing.B, client *fasthttp.HostClient, path string) {
	req, resp := benchRequest(path), &fasthttp.Response{}
	b.ReportAllocs()
	defer testenv.CPUPerOp(b)()
	for i := 0; b.Loop(); i++ {
		req.SetBodyRaw(benchBodies[i%len(benchBodies)])
		if err := client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(resp.Body(), []byte(callback.AllowJSON)) {
			b.Fatalf("answer %d %q, want allow", resp.StatusCode(), resp.Body())
		}
	}
}

// The join-group path through the gateway and NATS to a responder that
// answers at once: the gateway's cost plus NATS's.
func BenchmarkGatewayJoin(b *testing.B) {
	ns := testenv.NATS(b)
	benchResponder(b, ns)
	benchJoin(b, benchGateway(b, ns), "/callbackExample/"+callback.JoinGroupCommand)
}

// The same with a real worker deciding with the in-memory store: the
// whole of `joingate all` without Redis, one request at a time.
func BenchmarkGatewayJoinWorker(b *testing.B) {
	ns := testenv.NATS(b)
	benchWorker(b, ns)
	benchJoin(b, benchGateway(b, ns), "/callbackExample/"+callback.JoinGroupCommand)
}

// The same, with concurrent requests (GOMAXPROCS goroutines, each one
// request at a time): throughput rather than round-trip time.
func BenchmarkGatewayJoinWorkerParallel(b *testing.B) {
	ns := testenv.NATS(b)
	benchWorker(b, ns)
	client := benchGateway(b, ns)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	defer testenv.CPUPerOp(b)()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := benchRequest("/callbackExample/"+callback.JoinGroupCommand), &fasthttp.Response{}
		for i := 0; pb.Next(); i++ {
			req.SetBodyRaw(benchBodies[i%len(benchBodies)])
			if err := client.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if !bytes.Equal(resp.Body(), []byte(callback.AllowJSON)) {
				b.Fatalf("answer %d %q, want allow", resp.StatusCode(), resp.Body())
			}
		}
	})
}

// A callback with no policy, answered at the edge without NATS: fasthttp
// and the gateway's routing alone.
func BenchmarkGatewayNoPolicy(b *testing.B) {
	ns := testenv.NATS(b)
	benchJoin(b, benchGateway(b, ns), "/callbackExample/callbackAfterJoinGroupCommand")
}
