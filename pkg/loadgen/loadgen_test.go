package loadgen

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/reference"
	"github.com/joingate/joingate/pkg/testenv"
)

// serve runs handler on a loopback port until the test ends and returns
// its address; accepted counts the connections it accepted.
func serve(t *testing.T, handler fasthttp.RequestHandler) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := &fasthttp.Server{Handler: handler, ReadTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(cl)
	}()
	t.Cleanup(func() {
		srv.Shutdown()
		<-done
	})
	return ln.Addr().String(), &cl.accepted
}

type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

func testOptions(base string) Options {
	opts := DefaultOptions()
	opts.Base = base
	opts.Connections = 4
	opts.Warmup = 0
	opts.Duration = 300 * time.Millisecond
	opts.Timeout = 2 * time.Second
	return opts
}

func runLoad(t *testing.T, opts Options) *Result {
	t.Helper()
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, res)
	return res
}

// checkCounts checks that every request is accounted for exactly once.
func checkCounts(t *testing.T, r *Result) {
	t.Helper()
	if r.Sent != r.Responses+r.Timeouts+r.Errors {
		t.Errorf("sent %d != responses %d + timeouts %d + errors %d", r.Sent, r.Responses, r.Timeouts, r.Errors)
	}
	answers := r.Allowed + r.Failed + r.NonJSON
	for _, n := range r.Refused {
		answers += n
	}
	if answers != r.Responses {
		t.Errorf("responses %d != allowed %d + refused %v + failed %d + non-JSON %d", r.Responses, r.Allowed, r.Refused, r.Failed, r.NonJSON)
	}
	if r.LatencyHist.Count() != r.Responses {
		t.Errorf("latency histogram holds %d values for %d responses", r.LatencyHist.Count(), r.Responses)
	}
}

// The generator sends what IMServer sends.
func TestRequestsLookLikeIMServer(t *testing.T) {
	var (
		mu    sync.Mutex
		opIDs = map[string]bool{}
		bad   []string
		joins atomic.Int64
	)
	addr, _ := serve(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/metrics" {
			// A fallback for every 10th join, as a gateway would count it.
			fmt.Fprintf(ctx, "# TYPE %s counter\n%s{cause=\"timeout\"} %d\n%s{cause=\"error\"} 0\n",
				FallbacksMetric, FallbacksMetric, joins.Load()/10, FallbacksMetric)
			return
		}
		joins.Add(1)
		h := &ctx.Request.Header
		var req callback.JoinGroup
		err := callback.DecodeJoinGroup(ctx.PostBody(), &req)
		mu.Lock()
		defer mu.Unlock()
		complain := func(format string, args ...any) {
			if len(bad) < 5 {
				bad = append(bad, fmt.Sprintf(format, args...))
			}
		}
		id := string(h.Peek("Operationid"))
		if id == "" || opIDs[id] {
			complain("Operationid %q empty or repeated", id)
		}
		opIDs[id] = true
		if !ctx.IsPost() || string(ctx.RequestURI()) != "/callbackExample//callbackBeforeJoinGroupCommand" {
			complain("%s %s", ctx.Method(), ctx.RequestURI())
		}
		if ct := string(h.ContentType()); ct != "application/json; charset=utf-8" {
			complain("Content-Type %q", ct)
		}
		if ae := string(h.Peek("Accept-Encoding")); ae != "gzip" {
			complain("Accept-Encoding %q", ae)
		}
		if err != nil {
			complain("body %q: %v", ctx.PostBody(), err)
		}
		applicant, _ := strconv.Atoi(req.ApplyID)
		group, _ := strconv.Atoi(req.GroupID)
		if req.CallbackCommand != callback.JoinGroupCommand || req.GroupType != 2 || req.ReqMessage != "let me in <3" ||
			applicant < 1_000_000_000 || applicant >= 1_000_000_000+50 || group < 2_000_000_000 || group >= 2_000_000_000+7 {
			complain("body %s", ctx.PostBody())
		}
		// Byte for byte what IMServer sends for the same callback.
		if want := callback.AppendIMServerJoinGroup(nil, &req); string(ctx.PostBody()) != string(want) {
			complain("body %q, IMServer sends %q", ctx.PostBody(), want)
		}
		ctx.SetContentType("application/json")
		if applicant%2 == 0 {
			ctx.SetBody(callback.AppendRefusal(nil, 5001, "too many", "retry in 1s"))
		} else {
			ctx.SetBodyString(callback.AllowJSON)
		}
	})
	opts := testOptions("http://" + addr + "/callbackExample/") // a base ending in '/', as operators write it
	opts.Applicants, opts.Groups, opts.Message = 50, 7, "let me in <3"
	opts.Warmup = 100 * time.Millisecond
	opts.MetricsURLs = []string{"http://" + addr + "/metrics"}
	res := runLoad(t, opts)
	for _, b := range bad {
		t.Error(b)
	}
	if res.Responses < 50 || res.NonJSON != 0 || res.Errors+res.Timeouts != 0 {
		t.Fatalf("%d responses, %d non-JSON, %d errors, %d timeouts", res.Responses, res.NonJSON, res.Errors, res.Timeouts)
	}
	// Half the applicants are refused with 5001, the rest allowed.
	if res.Refused["5001"] == 0 || res.Allowed == 0 || len(res.Refused) != 1 {
		t.Fatalf("decision mix: allowed %d, refused %v", res.Allowed, res.Refused)
	}
	if res.Fallbacks == nil {
		t.Fatalf("no fallback count: %s", res.FallbacksNote)
	}
	// The metric grew by a tenth of the joins of the window, give or take
	// the requests around its edges.
	if want := float64(res.Responses) / 10; *res.Fallbacks < want*0.8-2 || *res.Fallbacks > want*1.2+2 {
		t.Fatalf("fallbacks %v, want about %v", *res.Fallbacks, want)
	}
}

// stallingServer answers at once, except that once it has answered
// stallAfter requests it stops answering for stall: every request that
// arrives meanwhile waits until the stall is over, as in a long GC pause.
func stallingServer(t *testing.T, stallAfter int64, stall time.Duration) string {
	var (
		n          atomic.Int64
		stallUntil atomic.Int64
	)
	addr, _ := serve(t, func(ctx *fasthttp.RequestCtx) {
		if n.Add(1) == stallAfter {
			stallUntil.Store(time.Now().Add(stall).UnixNano())
		}
		if d := time.Until(time.Unix(0, stallUntil.Load())); d > 0 {
			time.Sleep(d)
		}
		ctx.SetBodyString(callback.AllowJSON)
	})
	return "http://" + addr
}

// In an open loop the requests due during a stall wait for it to end, and
// their latency, counted from when they were due, includes that wait. A
// closed loop, which stops sending during the stall, sees it in only one
// request per connection: coordinated omission.
func TestOpenLoopCountsStallsFromTheDueTime(t *testing.T) {
	const stall = 150 * time.Millisecond
	opts := testOptions(stallingServer(t, 150, stall))
	opts.Rate = 1000
	opts.Duration = 500 * time.Millisecond
	res := runLoad(t, opts)
	// The requests due in the 150ms stall (about 150) waited for its end:
	// their latencies spread from 150ms down to 0, so about 75 are at
	// least 75ms.
	if n := res.LatencyHist.CountAtLeast(stall / 2); n < 50 {
		t.Errorf("open loop: %d requests at >= %v, want about 75: the stall is hidden", n, stall/2)
	}
	// Measured from the actual send, only the requests caught on the
	// server during the stall (at most one per connection) are slow.
	if n := res.ServiceHist.CountAtLeast(stall / 2); n > uint64(opts.Connections)+10 {
		t.Errorf("service time: %d requests at >= %v, want at most %d (and a few a busy machine slows)", n, stall/2, opts.Connections+10)
	}
	if res.SendLag.Max < float64(stall/2)/1e6 || !res.Behind {
		t.Errorf("send lag max %vms, behind %v: the stall must show as lag", res.SendLag.Max, res.Behind)
	}
	if res.Sent < 450 || res.Sent > 510 {
		t.Errorf("sent %d requests in 0.5s at 1000/s", res.Sent)
	}

	opts = testOptions(stallingServer(t, 150, stall))
	opts.Duration = 400 * time.Millisecond
	closed := runLoad(t, opts)
	// The stalled ones (at most one per connection), and a few that a busy
	// machine (go test runs packages side by side) slows as much: far from
	// the open loop's 75.
	if n := closed.LatencyHist.CountAtLeast(stall / 2); n == 0 || n > uint64(opts.Connections)+10 {
		t.Errorf("closed loop: %d requests at >= %v, want 1..%d", n, stall/2, opts.Connections+10)
	}
}

// A second of load against the reference server: every request answered,
// every answer JSON and an allow, the counts add up.
func TestAgainstReferenceServer(t *testing.T) {
	for _, keepAlive := range []bool{true, false} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cl := &countingListener{Listener: ln}
			copts := reference.DefaultOptions()
			copts.NewServer = gateway.NewDefaultHTTPServer
			copts.Listener = cl
			srv, err := reference.New(copts)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Run(t, srv.Run)

			opts := testOptions("http://" + srv.Addr() + "/callbackExample")
			opts.Connections = 8
			opts.KeepAlive = keepAlive
			opts.Warmup, opts.Duration = 200*time.Millisecond, 800*time.Millisecond
			if !keepAlive {
				opts.Warmup, opts.Duration = 100*time.Millisecond, 300*time.Millisecond
			}
			opts.Distribution = Zipf
			var progress strings.Builder
			opts.Progress = &progress
			opts.progressEvery = 100 * time.Millisecond
			res := runLoad(t, opts)
			if res.Responses < 100 || res.Allowed != res.Responses || res.NonJSON != 0 || res.Timeouts+res.Errors != 0 || len(res.Status) != 0 {
				t.Fatalf("%d responses: %d allowed, %d non-JSON, %d timeouts, %d errors, status %v, errors %v",
					res.Responses, res.Allowed, res.NonJSON, res.Timeouts, res.Errors, res.Status, res.ErrorSamples)
			}
			if res.Throughput <= 0 || res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
				t.Fatalf("throughput %v, latency %+v", res.Throughput, res.Latency)
			}
			if res.Fallbacks != nil {
				t.Fatal("fallbacks reported without a metrics URL")
			}
			conns := cl.accepted.Load()
			if keepAlive && conns > int64(opts.Connections) {
				t.Fatalf("keep-alive: %d connections for %d concurrent requests", conns, opts.Connections)
			}
			if !keepAlive && conns < int64(res.Sent) {
				t.Fatalf("no keep-alive: %d connections for %d requests", conns, res.Sent)
			}
			// One line per 100ms: at least one, whatever a busy machine
			// does to the timers.
			if lines := strings.Count(progress.String(), "req/s"); lines < 1 || (keepAlive && !strings.Contains(progress.String(), "warm-up")) {
				t.Fatalf("no progress line in %q", progress.String())
			}
			var report strings.Builder
			Report(&report, res)
			for _, want := range []string{"closed loop", "p99.9", "allow ", "non-JSON bodies 0", "fallbacks   unknown"} {
				if !strings.Contains(report.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, report.String())
				}
			}
		})
	}
}

func TestTransportErrorsAreCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every request is refused
	opts := testOptions("http://" + addr)
	opts.Duration = 100 * time.Millisecond
	res := runLoad(t, opts)
	if res.Sent == 0 || res.Errors != res.Sent || res.Responses != 0 || len(res.ErrorSamples) == 0 {
		t.Fatalf("sent %d, errors %d, responses %d, samples %v", res.Sent, res.Errors, res.Responses, res.ErrorSamples)
	}
}

// A target that refuses connections does not make the generator spin: each
// connection backs off after a failed connect, so that in a second four
// connections try a few dozen times (without the back-off, tens of
// thousands), closed loop and open loop alike; every try is an error.
func TestRefusedConnectsBackOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Per connection, a second holds the waits 5+10+...+160ms (315ms),
	// then at most four of 200ms: 11 tries, and one more that the end
	// of the run cuts short; an open loop may go on for a second after
	// the window with what was due in it, five more.
	const perConn = 18
	for _, rate := range []float64{0, 10_000} {
		opts := testOptions("http://" + addr)
		opts.Duration, opts.Rate = time.Second, rate
		res := runLoad(t, opts)
		if res.Sent == 0 || res.Errors != res.Sent || res.ConnectFailures < res.Sent || res.ConnectFailures > perConn*uint64(opts.Connections) {
			t.Errorf("rate %v: sent %d, errors %d, failed connects %d; want every request a failed connect, at most %d in all",
				rate, res.Sent, res.Errors, res.ConnectFailures, perConn*opts.Connections)
		}
	}
}

// The back-off doubles with each failed connect in a row, up to its cap,
// and a request that connects ends it.
func TestConnectBackoffResets(t *testing.T) {
	r := &run{stopped: make(chan struct{}), abort: make(chan struct{})}
	close(r.stopped) // no waiting here
	w := &worker{r: r}
	refused := &fasthttp.ErrDialWithUpstream{Upstream: "127.0.0.1:1"}
	var got []time.Duration
	for range 8 {
		w.pause(refused)
		got = append(got, w.backoff)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 200, 200}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("back-offs %v, want %v ms", got, want)
		}
	}
	w.pause(fmt.Errorf("read: %w", fasthttp.ErrTimeout)) // connected, then slow: not a connect failure
	if w.backoff != 0 {
		t.Fatalf("back-off %v after a request that connected, want 0", w.backoff)
	}
	w.pause(fasthttp.ErrDialTimeout)
	if w.backoff != connectBackoffMin || w.live.connectFailures.Load() != 9 {
		t.Fatalf("after a dial timeout: back-off %v, %d failures counted", w.backoff, w.live.connectFailures.Load())
	}
}

func TestNonJSONAndStatusAreCounted(t *testing.T) {
	var n atomic.Int64
	addr, _ := serve(t, func(ctx *fasthttp.RequestCtx) {
		switch n.Add(1) % 3 {
		case 0:
			ctx.SetStatusCode(fasthttp.StatusBadGateway)
			ctx.SetBodyString("<html>bad gateway</html>")
		case 1:
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			ctx.SetBody(callback.AppendFailure(nil, "malformed"))
		default:
			ctx.SetBodyString(callback.AllowJSON)
		}
	})
	opts := testOptions("http://" + addr)
	opts.Duration = 200 * time.Millisecond
	res := runLoad(t, opts)
	if res.NonJSON == 0 || res.Failed == 0 || res.Allowed == 0 || res.Status["502"] != res.NonJSON || res.Status["400"] != res.Failed {
		t.Fatalf("non-JSON %d, failed %d, allowed %d, status %v", res.NonJSON, res.Failed, res.Allowed, res.Status)
	}
	if res.HTTPErrors() != res.NonJSON+res.Status["502"]+res.Status["400"] {
		t.Fatalf("HTTPErrors() = %d", res.HTTPErrors())
	}
}

func TestCancelStopsTheRun(t *testing.T) {
	addr, _ := serve(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(callback.AllowJSON) })
	opts := testOptions("http://" + addr)
	opts.Duration = time.Minute
	opts.Rate = 200
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second || res.Seconds > 1 {
		t.Fatalf("cancelled after 0.3s, ran %v (window %vs)", time.Since(start), res.Seconds)
	}
	checkCounts(t, res)
	if res.Unsent > 5 {
		t.Fatalf("%d unsent: the window must end at the cancellation", res.Unsent)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, c := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.Base = "http://10.1.2.3:10006" }, "not a loopback"},
		{func(o *Options) { o.Base = "ftp://127.0.0.1" }, "http://"},
		{func(o *Options) { o.Connections = 0 }, "connections"},
		{func(o *Options) { o.Rate = -1 }, "rate"},
		{func(o *Options) { o.Duration = 0 }, "duration"},
		{func(o *Options) { o.Applicants = 0 }, "applicants"},
		{func(o *Options) { o.Distribution = Zipf; o.ZipfS = 1 }, "zipf"},
	} {
		opts := DefaultOptions()
		c.mutate(&opts)
		if _, err := Run(context.Background(), opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error containing %q, got %v", c.want, err)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	for _, c := range []struct {
		body               string
		action, code, next int
		ok                 bool
	}{
		{callback.AllowJSON, 0, 0, 0, true},
		{string(callback.AppendRetryRefusal(nil, 5001, "too many", 12)), 0, 5001, 1, true},
		{string(callback.AppendFailure(nil, "bad")), 1, 0, 0, true},
		{` {"nextCode": 1, "errCode": -7} `, 0, -7, 1, true},
		{`{"actionCode":0,`, 0, 0, 0, false},
		{`<html>`, 0, 0, 0, false},
		{`[1]`, 0, 0, 0, false},
		{``, 0, 0, 0, false},
	} {
		a, code, n, ok := parseAnswer([]byte(c.body))
		if a != c.action || code != c.code || n != c.next || ok != c.ok {
			t.Errorf("parseAnswer(%q) = %d %d %d %v, want %d %d %d %v", c.body, a, code, n, ok, c.action, c.code, c.next, c.ok)
		}
	}
}
