package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/natsconn"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/ratelimit/ratelimittest"
	"github.com/joingate/joingate/pkg/testenv"
	"github.com/joingate/joingate/worker"
)

// edge is a running gateway and what a test needs to talk to it.
type edge struct {
	url string
	reg *prometheus.Registry
	gw  *gateway.Gateway
	// stop shuts the gateway down gracefully and waits for Run to return.
	stop func()
}

func startGateway(t *testing.T, ns *server.Server, mutate func(*gateway.Options)) *edge {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := gateway.DefaultOptions()
	opts.Listen = "127.0.0.1:0"
	opts.Conn = testenv.Conn(t, ns, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	opts.Registerer = reg
	// Not production's 300 ms: a -race run on a loaded machine must not
	// turn a decision into the fallback. Tests of the timeout set their own.
	opts.DecisionTimeout = 2 * time.Second
	if mutate != nil {
		mutate(&opts)
	}
	gw, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &edge{url: "http://" + gw.Addr(), reg: reg, gw: gw, stop: testenv.Run(t, gw.Run)}
}

// startWorker runs a worker with cfg's join-group policy on store until the
// test ends; mutate, if not nil, adjusts its options.
func startWorker(t *testing.T, ns *server.Server, store worker.Store, cfg config.Config, mutate ...func(*worker.Options)) *prometheus.Registry {
	t.Helper()
	p, err := policy.NewSet(cfg, "test:")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts := worker.DefaultOptions()
	opts.Conn, opts.Store, opts.Policy, opts.Registerer = testenv.Conn(t, ns), store, p, reg
	for _, m := range mutate {
		m(&opts)
	}
	w, err := worker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, w.Run)
	if !testenv.Eventually(5*time.Second, func() bool { return w.Ready(context.Background()) == nil }) {
		t.Fatal("worker not ready")
	}
	return reg
}

func policyConfig(limits ...config.Limit) config.Config {
	cfg := config.Default()
	cfg.JoinGroup.Limits = limits
	return cfg
}

func limit(name, key string, n int, code int, msg string) config.Limit {
	return config.Limit{Name: name, Key: key, Limit: n, Period: time.Hour, Burst: n, ErrCode: code, ErrMsg: msg}
}

// answer is what IMServer reads from a callback response.
type answer struct {
	ActionCode int    `json:"actionCode"`
	ErrCode    int    `json:"errCode"`
	ErrMsg     string `json:"errMsg"`
	ErrDlt     string `json:"errDlt"`
	NextCode   int    `json:"nextCode"`
}

func (a answer) refused() bool { return a.ActionCode == 0 && a.NextCode == 1 }

const joinPath = "/callbackExample/callbackBeforeJoinGroupCommand"

// joinBody is the body IMServer posts, byte for byte (groupType "\u0002").
func joinBody(applicant, group string) string {
	return callback.IMServerJoinGroup(group, applicant, "hi")
}

// respond answers a tagged request (natsconn) as a worker does.
func respond(m *nats.Msg, answer []byte) {
	tag, _, _, _, _ := natsconn.ParseTagged(m.Data)
	m.Respond(natsconn.AppendReply(nil, tag, answer))
}

// post sends a request as IMServer does and decodes the JSON answer; a
// body that is not JSON fails the test.
func post(t *testing.T, url, body string) (int, answer) {
	t.Helper()
	return do(t, http.MethodPost, url, body)
}

func do(t *testing.T, method, url, body string) (int, answer) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Operationid", "op-test")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, mustAnswer(t, resp.Header.Get("Content-Type"), raw)
}

func mustAnswer(t *testing.T, contentType string, raw []byte) answer {
	t.Helper()
	if !strings.HasPrefix(contentType, "application/json") {
		t.Fatalf("Content-Type %q, want application/json (body %q)", contentType, raw)
	}
	var a answer
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("body %q is not a callback answer: %v", raw, err)
	}
	return a
}

var allow = answer{}

func TestJoinGroupDecisions(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	cfg := policyConfig(limit("per-applicant", config.KeyApplicant, 2, 5009, "slow down"))
	cfg.JoinGroup.DenyGroups = []string{"closed"}
	cfg.JoinGroup.DenyApplicants = []string{"spammer"}
	cfg.JoinGroup.AllowApplicants = []string{"admin"}
	cfg.JoinGroup.MaxMessageBytes = 5
	startWorker(t, ns, ratelimit.NewRedis(srv.Client), cfg)
	e := startGateway(t, ns, nil)

	for i := range 2 {
		if code, a := post(t, e.url+joinPath, joinBody("u1", "g1")); code != 200 || a != allow {
			t.Fatalf("request %d: %d %+v, want 200 allow", i+1, code, a)
		}
	}
	code, a := post(t, e.url+joinPath, joinBody("u1", "g1"))
	want := answer{ErrCode: 5009, ErrMsg: "slow down", ErrDlt: "retry in 1800s", NextCode: 1}
	if code != 200 || a != want {
		t.Fatalf("3rd request: %d %+v, want 200 %+v", code, a, want)
	}

	f := func(applicant, group, msg string, wantCode int) {
		t.Helper()
		body := fmt.Sprintf(`{"groupID":%q,"applyID":%q,"reqMessage":%q}`, group, applicant, msg)
		_, a := post(t, e.url+joinPath, body)
		if a.ErrCode != wantCode || a.refused() != (wantCode != 0) {
			t.Fatalf("(%s, %s, %q): %+v, want errCode %d", applicant, group, msg, a, wantCode)
		}
	}
	f("u2", "closed", "", 5002)
	f("spammer", "g1", "", 5002)
	f("u2", "g1", "toolong", 5003)
	f("admin", "closed", "toolong", 0)

	testenv.WantValue(t, e.reg, 4, "joingate_gateway_answers_total", "refuse", callback.JoinGroupCommand)
	testenv.WantValue(t, e.reg, 7, "joingate_gateway_requests_total", callback.JoinGroupCommand, "decided")
}

// A request refused by one rule consumes nothing of the others.
func TestAllOrNothingThroughTheEdge(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	startWorker(t, ns, ratelimit.NewRedis(srv.Client), policyConfig(
		limit("applicant", config.KeyApplicant, 1, 5001, "applicant limit"),
		limit("group", config.KeyGroup, 2, 5002, "group limit"),
	))
	e := startGateway(t, ns, nil)
	steps := []struct {
		applicant string
		code      int
	}{
		{"u1", 0},    // group: 1 of 2
		{"u1", 5001}, // refused by the applicant rule: the group count stays 1
		{"u1", 5001},
		{"u2", 0},    // group: 2 of 2 (would be refused had u1's refusals counted)
		{"u3", 5002}, // group full
	}
	for i, s := range steps {
		if _, a := post(t, e.url+joinPath, joinBody(s.applicant, "g")); a.ErrCode != s.code {
			t.Fatalf("step %d (%s): %+v, want errCode %d", i+1, s.applicant, a, s.code)
		}
	}
}

// Every row of the wire contract that does not need a worker's decision.
func TestWireContract(t *testing.T) {
	ns := testenv.NATS(t)
	startWorker(t, ns, ratelimit.NewMemory(), policyConfig(limit("one", config.KeyApplicant, 1, 5001, "once")))
	e := startGateway(t, ns, func(o *gateway.Options) { o.MaxBodyBytes = 4096 })

	// Routing: only the last path segment counts; any prefix, "//", any query.
	for i, path := range []string{
		"/callbackBeforeJoinGroupCommand",
		"//callbackBeforeJoinGroupCommand",
		"/a/b/callbackBeforeJoinGroupCommand?contenttype=json",
		"/callbackExample/callbackBeforeJoinGroupCommand?key=value",
	} {
		// A fresh applicant each time, so each is allowed once and refused after.
		applicant := fmt.Sprint("route-", i)
		if _, a := post(t, e.url+path, joinBody(applicant, "g")); a != allow {
			t.Fatalf("%s: %+v", path, a)
		}
		if _, a := post(t, e.url+path, joinBody(applicant, "g")); !a.refused() {
			t.Fatalf("%s: second request %+v, want refused: the path did not reach the policy", path, a)
		}
	}

	// groupType in every form (it plays no part in the decision), the
	// docs' number among them; unknown fields ignored.
	for i, body := range []string{
		`{"groupID":"g","groupType":"2","applyID":"gt-%d","extra":{"nested":[1]}}`,
		`{"groupID":"g","groupType":2,"applyID":"gt-%d","callbackCommand":"callbackBeforeJoinGroupCommand"}`,
		`{"groupID":"g","groupType":"\u0002","applyID":"gt-%d"}`,
		`{"groupID":"g","groupType":"x","applyID":"gt-%d"}`,
		`{"groupID":"g","groupType":{"a":[true]},"applyID":"gt-%d"}`,
		`{"groupID":"g","groupType":null,"applyID":"gt-%d"}`,
		`{"groupID":"g","groupType":1.5,"applyID":"gt-%d"}`,
	} {
		body = fmt.Sprintf(body, i)
		if code, a := post(t, e.url+joinPath, body); code != 200 || a != allow {
			t.Fatalf("%s: %d %+v", body, code, a)
		}
	}

	// Malformed callbacks: HTTP 400, actionCode 1 and the reason.
	for body, reason := range map[string]string{
		``:                             "empty body",
		`not json`:                     "not a JSON object",
		`{"groupID":"g"}`:              "applyID",
		`{"groupID":1,"applyID":"u"}`:  "groupID must be a string",
		`{"groupID":"g","applyID":"u"`: "unexpected end",
		`{"groupID":"g","applyID":"u","groupType":tru}`: "invalid JSON",
	} {
		code, a := post(t, e.url+joinPath, body)
		if code != 400 || a.ActionCode != 1 || !strings.Contains(a.ErrMsg, reason) {
			t.Fatalf("body %q: %d %+v, want 400, actionCode 1, errMsg about %q", body, code, a, reason)
		}
	}

	// Not callbacks at all.
	if code, a := do(t, http.MethodGet, e.url+joinPath, ""); code != 405 || a.ActionCode != 1 {
		t.Fatalf("GET: %d %+v", code, a)
	}
	if code, a := post(t, e.url+"/favicon.ico", "{}"); code != 404 || a.ActionCode != 1 {
		t.Fatalf("unknown path: %d %+v", code, a)
	}
	if code, a := post(t, e.url+"/callbackExample/", "{}"); code != 404 || a.ActionCode != 1 {
		t.Fatalf("path without a command: %d %+v", code, a)
	}
	// Too large a body, as fasthttp itself refuses it.
	code, a := post(t, e.url+joinPath, `{"groupID":"g","applyID":"u","reqMessage":"`+strings.Repeat("x", 5000)+`"}`)
	if code != 413 || a.ActionCode != 1 || !strings.Contains(a.ErrMsg, "max_body_bytes") {
		t.Fatalf("oversize body: %d %+v", code, a)
	}
	// A request line fasthttp cannot parse still gets JSON.
	status, body := raw(t, e.url, "GARBAGE\r\n\r\n")
	if status != 400 || mustAnswer(t, "application/json", body).ActionCode != 1 {
		t.Fatalf("garbage request: %d %q", status, body)
	}
	// Headers beyond the read buffer.
	status, body = raw(t, e.url, "POST "+joinPath+" HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 10000)+"\r\n\r\n")
	if status != 431 || mustAnswer(t, "application/json", body).ActionCode != 1 {
		t.Fatalf("huge header: %d %q", status, body)
	}
	// And the edge still serves.
	if _, a := post(t, e.url+joinPath, joinBody("after", "g")); a != allow {
		t.Fatalf("after bad input: %+v", a)
	}
}

// raw writes a request by hand and reads the status and body of the answer.
func raw(t *testing.T, url, request string) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading answer to %q: %v", request[:min(len(request), 40)], err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// Commands without a policy are allowed at the edge: no NATS message, no
// fallback, even with no worker at all.
func TestOtherCommandsAllowedAtTheEdge(t *testing.T) {
	ns := testenv.NATS(t)
	spy := testenv.Conn(t, ns)
	published := make(chan *nats.Msg, 10)
	if _, err := spy.ChanSubscribe("joingate.>", published); err != nil {
		t.Fatal(err)
	}
	spy.Flush()
	e := startGateway(t, ns, nil)
	for _, path := range []string{"/callbackExample/callbackBeforeSendSingleMsgCommand", "//callbackAfterJoinGroupCommand?key=x"} {
		if code, a := post(t, e.url+path, `not even json`); code != 200 || a != allow {
			t.Fatalf("%s: %d %+v", path, code, a)
		}
	}
	testenv.WantValue(t, e.reg, 2, "joingate_gateway_requests_total", "other", "no_policy")
	// A join request goes through NATS; once it arrived, nothing else had.
	post(t, e.url+joinPath, joinBody("u", "g"))
	m := <-published
	if !strings.HasSuffix(m.Subject, callback.JoinGroupCommand) {
		t.Fatalf("first message published: %s", m.Subject)
	}
}

// The request a worker gets: framed, the raw body, the operation ID and a
// deadline one decision timeout after the callback arrived.
func TestPublishedRequest(t *testing.T) {
	ns := testenv.NATS(t)
	responder := testenv.Conn(t, ns)
	got := make(chan *nats.Msg, 1)
	sub, err := responder.QueueSubscribe("joingate.>", "joingate-workers", func(m *nats.Msg) {
		got <- m
		respond(m, callback.AppendRefusal(nil, 5555, "from test", ""))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	responder.Flush()
	e := startGateway(t, ns, func(o *gateway.Options) { o.DecisionTimeout = 700 * time.Millisecond })
	body := joinBody("u", "g")
	before := time.Now()
	_, a := post(t, e.url+joinPath, body)
	if a.ErrCode != 5555 || a.ErrMsg != "from test" {
		t.Fatalf("the worker's reply was not written as it is: %+v", a)
	}
	m := <-got
	_, dl, id, raw, err := natsconn.ParseTagged(m.Data)
	if m.Subject != natsconn.TaggedSubject("joingate", callback.JoinGroupCommand) || err != nil || string(raw) != body || m.Header != nil {
		t.Fatalf("published %s %q (headers %v): %v", m.Subject, m.Data, m.Header, err)
	}
	if string(id) != "op-test" {
		t.Fatalf("operation ID %q", id)
	}
	if dl.Before(before.Add(700*time.Millisecond)) || dl.After(time.Now().Add(700*time.Millisecond)) {
		t.Fatalf("deadline %v is not one decision timeout after the request", dl)
	}
}

func TestFallbacks(t *testing.T) {
	t.Run("no responders", func(t *testing.T) {
		ns := testenv.NATS(t)
		// A long budget: an answer counted as no_responders did not wait for it.
		e := startGateway(t, ns, func(o *gateway.Options) { o.DecisionTimeout = 900 * time.Millisecond })
		if code, a := post(t, e.url+joinPath, joinBody("u", "g")); code != 200 || a != allow {
			t.Fatalf("%d %+v, want the fallback allow", code, a)
		}
		testenv.WantValue(t, e.reg, 1, "joingate_gateway_fallbacks_total", "no_responders")
		testenv.WantValue(t, e.reg, 0, "joingate_gateway_fallbacks_total", "timeout")
	})

	t.Run("timeout, deny fallback", func(t *testing.T) {
		ns := testenv.NATS(t)
		silent := testenv.Conn(t, ns)
		if _, err := silent.QueueSubscribe("joingate.>", "joingate-workers", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		silent.Flush()
		deny := callback.AppendRefusal(nil, 5000, "try later", "")
		e := startGateway(t, ns, func(o *gateway.Options) {
			o.DecisionTimeout = 50 * time.Millisecond
			o.FallbackBody = deny
		})
		if _, a := post(t, e.url+joinPath, joinBody("u", "g")); a.ErrCode != 5000 || !a.refused() {
			t.Fatalf("%+v, want the deny fallback", a)
		}
		testenv.WantValue(t, e.reg, 1, "joingate_gateway_fallbacks_total", "timeout")
		testenv.WantValue(t, e.reg, 1, "joingate_gateway_answers_total", "refuse", callback.JoinGroupCommand)
	})

	t.Run("nats down", func(t *testing.T) {
		ns := testenv.NATS(t)
		startWorker(t, ns, ratelimit.NewMemory(), policyConfig())
		e := startGateway(t, ns, nil)
		if _, a := post(t, e.url+joinPath, joinBody("u", "g")); a != allow {
			t.Fatalf("%+v", a)
		}
		testenv.WantValue(t, e.reg, 1, "joingate_gateway_nats_connected")
		ns.Shutdown()
		if !testenv.Eventually(5*time.Second, func() bool { return testenv.Value(t, e.reg, "joingate_gateway_nats_connected") == 0 }) {
			t.Fatal("joingate_gateway_nats_connected still 1 with NATS down")
		}
		// Still ready: it answers every callback, with the fallback.
		if err := e.gw.Ready(context.Background()); err != nil {
			t.Fatalf("gateway not ready with NATS down (%v): its Service would lose it, and IMServer refuse every join", err)
		}
		if code, a := post(t, e.url+joinPath, joinBody("u", "g")); code != 200 || a != allow {
			t.Fatalf("%d %+v, want the fallback allow", code, a)
		}
		testenv.WantValue(t, e.reg, 1, "joingate_gateway_fallbacks_total", "nats_unavailable")
	})

	t.Run("reply after the deadline", func(t *testing.T) {
		ns := testenv.NATS(t)
		late := testenv.Conn(t, ns)
		late.QueueSubscribe("joingate.>", "joingate-workers", func(m *nats.Msg) {
			_, dl, _, _, _ := natsconn.ParseTagged(m.Data)
			time.Sleep(time.Until(dl) + 20*time.Millisecond) // a worker that decides too late
			respond(m, callback.AppendRefusal(nil, 5999, "late", ""))
		})
		late.Flush()
		e := startGateway(t, ns, func(o *gateway.Options) { o.DecisionTimeout = 50 * time.Millisecond })
		if _, a := post(t, e.url+joinPath, joinBody("u", "g")); a != allow {
			t.Fatalf("%+v: the gateway waited past its deadline for the worker", a)
		}
		testenv.WantValue(t, e.reg, 1, "joingate_gateway_fallbacks_total", "timeout")
	})

	t.Run("reply that is not JSON", func(t *testing.T) {
		ns := testenv.NATS(t)
		broken := testenv.Conn(t, ns)
		broken.QueueSubscribe("joingate.>", "joingate-workers", func(m *nats.Msg) { respond(m, []byte("oops")) })
		broken.Flush()
		e := startGateway(t, ns, nil)
		if _, a := post(t, e.url+joinPath, joinBody("u", "g")); a != allow {
			t.Fatalf("%+v, want the fallback allow", a)
		}
		testenv.WantValue(t, e.reg, 1, "joingate_gateway_fallbacks_total", "error")
	})
}

// A worker slower than the decision timeout: the edge answers the fallback
// at the timeout, and the request that expired while waiting is not charged.
func TestSlowWorker(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	slow := ratelimittest.NewGate(ratelimit.NewRedis(srv.Client))
	wreg := startWorker(t, ns, slow, policyConfig(limit("once", config.KeyApplicant, 1, 5001, "once")),
		func(o *worker.Options) { o.Concurrency = 1 })
	e := startGateway(t, ns, func(o *gateway.Options) { o.DecisionTimeout = 100 * time.Millisecond })

	first := make(chan answer, 1)
	go func() { _, a := post(t, e.url+joinPath, joinBody("blocker", "g")); first <- a }()
	<-slow.Entered // the worker's only slot is stuck in the store
	if _, a := post(t, e.url+joinPath, joinBody("late", "g")); a != allow {
		t.Fatalf("late request: %+v, want the fallback allow", a)
	}
	if a := <-first; a != allow {
		t.Fatalf("blocked request: %+v, want the fallback allow", a)
	}
	testenv.WantValue(t, e.reg, 2, "joingate_gateway_fallbacks_total", "timeout")
	slow.Open()
	if !testenv.Eventually(5*time.Second, func() bool {
		return testenv.Value(t, wreg, "joingate_worker_requests_total", "expired") == 1
	}) {
		t.Fatal("the late request was not dropped as expired")
	}
	// Redis holds only the blocker's key: the late request never reached it.
	keys, err := srv.Client.Keys(context.Background(), "test:*").Result()
	if err != nil || len(keys) != 1 || !strings.Contains(keys[0], "{a:blocker}") {
		t.Fatalf("keys in Redis: %q, %v; want only the blocker's", keys, err)
	}
}

func TestWorkersShareLoad(t *testing.T) {
	ns := testenv.NATS(t)
	srv := testenv.StartRedis(t)
	store := ratelimit.NewRedis(srv.Client)
	cfg := policyConfig(limit("group", config.KeyGroup, 30, 5001, "full"))
	regs := []*prometheus.Registry{startWorker(t, ns, store, cfg), startWorker(t, ns, store, cfg)}
	e := startGateway(t, ns, nil)
	refused := 0
	for i := range 40 {
		if _, a := post(t, e.url+joinPath, joinBody(fmt.Sprint("u", i), "g")); a.refused() {
			refused++
		}
	}
	// The limit is shared through Redis whichever worker decides.
	if refused != 10 {
		t.Fatalf("%d of 40 refused, want 10 over a shared limit of 30", refused)
	}
	total := 0.0
	for i, reg := range regs {
		n := testenv.Value(t, reg, "joingate_worker_requests_total", "decided")
		if n == 0 {
			t.Fatalf("worker %d decided nothing", i)
		}
		total += n
	}
	if total != 40 {
		t.Fatalf("workers decided %v requests, want 40", total)
	}
}

// Stopping the gateway answers the requests already in flight.
func TestGracefulShutdown(t *testing.T) {
	ns := testenv.NATS(t)
	slow := ratelimittest.NewGate(ratelimit.NewMemory())
	startWorker(t, ns, slow, policyConfig(limit("once", config.KeyApplicant, 5, 5001, "x")))
	e := startGateway(t, ns, func(o *gateway.Options) { o.DecisionTimeout = 5 * time.Second / 6 })
	got := make(chan answer, 1)
	go func() { _, a := post(t, e.url+joinPath, joinBody("u", "g")); got <- a }()
	<-slow.Entered
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	if !testenv.Eventually(5*time.Second, func() bool { return e.gw.Ready(context.Background()) != nil }) {
		t.Fatal("stopping gateway still ready")
	}
	slow.Open()
	if a := <-got; a != allow {
		t.Fatalf("in-flight request during shutdown: %+v", a)
	}
	<-stopped
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_requests_total", callback.JoinGroupCommand, "decided")
	if _, err := http.Post(e.url+joinPath, "application/json", strings.NewReader(joinBody("u", "g"))); err == nil {
		t.Fatal("stopped gateway still accepts requests")
	}
}

// A gateway stopped right after it starts still returns: fasthttp's
// Shutdown closes only the listeners Serve has registered.
func TestStopRightAfterStart(t *testing.T) {
	ns := testenv.NATS(t)
	for range 20 {
		opts := gateway.DefaultOptions()
		opts.Listen = "127.0.0.1:0"
		opts.Conn = testenv.Conn(t, ns)
		opts.Registerer = prometheus.NewRegistry()
		gw, err := gateway.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		stopWithin(t, runGateway(gw), 10*time.Second, "")
	}
}

// runGateway runs gw until the returned stop is called; stop returns
// Run's result.
func runGateway(gw *gateway.Gateway) (stop func() <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	return func() <-chan error { cancel(); return done }
}

// stopWithin stops a gateway and fails the test unless Run returns nil
// within d (why: what would hold it).
func stopWithin(t *testing.T, stop func() <-chan error, d time.Duration, why string) {
	t.Helper()
	select {
	case err := <-stop():
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(d):
		t.Fatalf("Run still running %s after it was stopped%s", d, why)
	}
}

// A connection that never sends a request (a client's spare) does not hold
// a stopping gateway until read_timeout; one that is in use, idle between
// requests, is closed too (fasthttp's own shutdown).
func TestStopClosesUnusedConnections(t *testing.T) {
	ns := testenv.NATS(t)
	opts := gateway.DefaultOptions()
	opts.Listen = "127.0.0.1:0"
	opts.Conn = testenv.Conn(t, ns)
	opts.Registerer = prometheus.NewRegistry()
	opts.ReadTimeout, opts.IdleTimeout, opts.ShutdownTimeout = time.Hour, time.Hour, time.Hour
	gw, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runGateway(gw)
	spare, err := net.Dial("tcp", gw.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer spare.Close()
	// The listener has handed it to fasthttp once an answer comes back on
	// another connection after it.
	if status, _ := post(t, "http://"+gw.Addr()+"/callbackExample/callbackAfterJoinGroupCommand", "{}"); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	stopWithin(t, stop, 20*time.Second, ": the unused connection holds it (read_timeout is 1h)")
	spare.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := spare.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the unused connection is still open (read %d bytes)", n)
	}
}

// The invitation and members-join callbacks take the application's road:
// decided by a worker when one answers, gateway.fallback when none does,
// a malformed body answered at the edge, each counted by its command.
func TestEveryWayInThroughTheEdge(t *testing.T) {
	ns := testenv.NATS(t)
	e := startGateway(t, ns, nil)
	invite := "/callbackExample/" + callback.InviteCommand
	members := "/callbackExample/" + callback.MembersJoinCommand
	if _, a := post(t, e.url+invite, callback.IMServerInvite("g", "", "a", "b")); a.refused() || a.ActionCode != 0 {
		t.Fatalf("invitation without a worker: %+v, want the fallback (allow)", a)
	}
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_requests_total", callback.InviteCommand, "fallback")
	if status, a := post(t, e.url+members, `{"groupID":"g","memberList":[]}`); status != 400 || a.ActionCode != 1 {
		t.Fatalf("empty members-join: %d %+v", status, a)
	}
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_requests_total", callback.MembersJoinCommand, "invalid")

	cfg := policyConfig()
	cfg.InviteToGroup.Limits = []config.Limit{limit("per-group", config.KeyGroup, 2, 5101, "too many invitations")}
	cfg.MemberJoin.DenyGroups = []string{"closed"}
	startWorker(t, ns, ratelimit.NewMemory(), cfg)
	if _, a := post(t, e.url+invite, callback.IMServerInvite("g", "", "a", "b", "c")); !a.refused() || a.ErrCode != 5101 {
		t.Fatalf("invitation of 3 of 2: %+v", a)
	}
	if _, a := post(t, e.url+members, callback.IMServerMembersJoin("closed", "a")); !a.refused() || a.ErrCode != 5200 {
		t.Fatalf("members-join into a denied group: %+v", a)
	}
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_requests_total", callback.InviteCommand, "decided")
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_requests_total", callback.MembersJoinCommand, "decided")
	// Answers by command as IMServer read them: the fallback allowed one
	// invitation, the worker refused one of each.
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_answers_total", "allow", callback.InviteCommand)
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_answers_total", "refuse", callback.InviteCommand)
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_answers_total", "refuse", callback.MembersJoinCommand)
	testenv.WantValue(t, e.reg, 0, "joingate_gateway_answers_total", "refuse", callback.JoinGroupCommand)
}
