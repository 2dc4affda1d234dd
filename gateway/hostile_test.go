package gateway_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
)

// Hostile input at the callback edge: requests IMServer never sends, most
// written by hand on raw TCP connections because net/http would refuse to
// send them, to a real gateway with a real worker behind it. Every answer
// must be a JSON callback answer (or the connection closes without a byte
// that is not one), the gateway's counters must say what happened, and the
// edge must still decide normal callbacks afterwards. RELIABILITY.md
// ("Hostile input") lists the rows and what was observed.

// hostileReadTimeout is the gateway's read timeout in these tests: short, so
// that the rows that end in a read timeout are quick.
const hostileReadTimeout = 400 * time.Millisecond

// reply is one answer the gateway must write, in order, on the connection.
type reply struct {
	status int
	// errCode, for a 200: 0 for the allow body exactly, else a refusal
	// with this errCode.
	errCode int
	// msg, for an error status: a piece of errMsg (actionCode must be 1).
	msg string
	// head: the answer to a HEAD request, which carries no body.
	head bool
}

var (
	allowed   = reply{status: 200}
	denied    = reply{status: 200, errCode: 5002} // join_group.deny_refusal
	continued = reply{status: 100}
)

func failed(status int, msg string) reply { return reply{status: status, msg: msg} }

// part is bytes written on the connection and the answers they must get.
type part struct {
	send string
	// async writes send in the background: the gateway may answer and
	// close before it has read it all, so the write may fail.
	async bool
	want  []reply
}

// moved is how much each of the gateway's request counters must move.
type moved struct{ rejected, invalid, decided, noPolicy, fallback float64 }

type hostileCase struct {
	name  string
	parts []part
	// closes: the gateway closes the connection after the last answer. If
	// not, the connection must still serve a normal callback, which shows
	// that the hostile request was consumed exactly.
	closes bool
	// lateTimeout: before closing, the gateway may or may not write a 408
	// for a request left incomplete after the first answer (see the rows).
	lateTimeout bool
	moved       moved
}

func one(send string, want ...reply) []part { return []part{{send: send, want: want}} }

// request builds an HTTP/1.1 request with a Content-Length for body.
func request(method, target, headers, body string) string {
	return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: imserver\r\n%sContent-Length: %d\r\n\r\n%s", method, target, headers, len(body), body)
}

func joinReq(body string) string { return request("POST", joinPath, "", body) }

// chunked builds a join callback request with a chunked body.
func chunked(chunks ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: imserver\r\nTransfer-Encoding: chunked\r\n\r\n", joinPath)
	for _, c := range chunks {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// sized returns a join callback body of exactly n bytes.
func sized(n int) string {
	body := `{"groupID":"g","applyID":"sized","reqMessage":""}`
	return body[:len(body)-2] + strings.Repeat("x", n-len(body)) + `"}`
}

// nested returns a join callback whose unknown field x holds n levels of
// open around inner, each closed by closing.
func nested(n int, open, inner, closing string) string {
	return `{"groupID":"g","applyID":"nest","x":` + strings.Repeat(open, n) + inner + strings.Repeat(closing, n) + `}`
}

func TestHostileHTTP(t *testing.T) {
	ns := testenv.NATS(t)
	cfg := policyConfig()
	// "bad\uFFFD" is what invalid UTF-8 and lone surrogates in applyID read as.
	cfg.JoinGroup.DenyApplicants = []string{"spammer", "bad\uFFFD"}
	wreg := startWorker(t, ns, ratelimit.NewMemory(), cfg)
	const maxBody = 64 << 10
	e := startGateway(t, ns, func(o *gateway.Options) {
		o.MaxBodyBytes = maxBody
		o.ReadTimeout = hostileReadTimeout
		// A budget no -race run misses: every row that reaches the worker
		// must be decided, never answered by the fallback.
		o.DecisionTimeout = 2 * time.Second
	})
	addr := strings.TrimPrefix(e.url, "http://")
	normal := joinBody("u", "g")
	tenMB := strings.Repeat("x", 10<<20)

	cases := []hostileCase{
		// Size.
		{name: "body of exactly max_body_bytes", parts: one(joinReq(sized(maxBody)), allowed), moved: moved{decided: 1}},
		{name: "body one byte over max_body_bytes", parts: one(joinReq(sized(maxBody+1)), failed(413, "max_body_bytes")), closes: true, moved: moved{rejected: 1}},
		{name: "10 MB body with Content-Length", parts: []part{{send: joinReq(`{"reqMessage":"` + tenMB + `"}`), async: true, want: []reply{failed(413, "max_body_bytes")}}}, closes: true, moved: moved{rejected: 1}},
		{name: "10 MB chunked body", parts: []part{{send: chunked(`{"reqMessage":"`, tenMB, `"}`), async: true, want: []reply{failed(413, "max_body_bytes")}}}, closes: true, moved: moved{rejected: 1}},
		{name: "Expect: 100-continue with a 10 MB Content-Length", parts: []part{
			{send: fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", joinPath, len(tenMB)), want: []reply{continued, failed(413, "max_body_bytes")}},
		}, closes: true, moved: moved{rejected: 1}},

		// Nesting: unknown fields are skipped, to a depth of 10000.
		{name: "10001 nested arrays in an unknown field", parts: one(joinReq(nested(10001, "[", "", "]")), failed(400, "nested too deeply")), moved: moved{invalid: 1}},
		{name: "10001 nested objects in an unknown field", parts: one(joinReq(nested(10001, `{"a":`, "1", "}")), failed(400, "nested too deeply")), moved: moved{invalid: 1}},
		{name: "60000 unclosed arrays in an unknown field", parts: one(joinReq(`{"x":`+strings.Repeat("[", 60000)), failed(400, "nested too deeply")), moved: moved{invalid: 1}},
		{name: "9999 nested arrays in an unknown field", parts: one(joinReq(nested(9999, "[", "", "]")), allowed), moved: moved{decided: 1}},
		{name: "9999 nested objects in an unknown field", parts: one(joinReq(nested(9999, `{"a":`, "1", "}")), allowed), moved: moved{decided: 1}},
		{name: "30000 nested arrays as the whole body", parts: one(joinReq(strings.Repeat("[", 30000)+strings.Repeat("]", 30000)), failed(400, "not a JSON object")), moved: moved{invalid: 1}},
		{name: "nested arrays as groupID", parts: one(joinReq(`{"groupID":`+strings.Repeat("[", 5000)+`"g"`+strings.Repeat("]", 5000)+`,"applyID":"u"}`), failed(400, "groupID must be a string")), moved: moved{invalid: 1}},

		// UTF-8: invalid bytes and lone surrogates read as U+FFFD, as in encoding/json.
		{name: "invalid UTF-8 in every string field", parts: one(joinReq("{\"callbackCommand\":\"\xc0\xaf\",\"groupID\":\"g\xff\xfe\",\"applyID\":\"u\xc3\",\"reqMessage\":\"\xed\xa0\x80\",\"ex\":\"\xf4\x90\x80\x80\",\"\xff\":\"\xff\"}"), allowed), moved: moved{decided: 1}},
		{name: "applyID bad\\xff reads as bad\\uFFFD (deny-listed)", parts: one(joinReq("{\"groupID\":\"g\",\"applyID\":\"bad\xff\"}"), denied), moved: moved{decided: 1}},
		{name: "applyID bad\\ud800 (lone surrogate) reads as bad\\uFFFD", parts: one(joinReq(`{"groupID":"g","applyID":"bad\ud800"}`), denied), moved: moved{decided: 1}},
		{name: "UTF-8 byte order mark before the object", parts: one(joinReq("\xef\xbb\xbf"+normal), failed(400, "not a JSON object")), moved: moved{invalid: 1}},

		// NUL bytes.
		{name: "raw NUL inside a string", parts: one(joinReq("{\"groupID\":\"g\x00\",\"applyID\":\"u\"}"), failed(400, "invalid JSON")), moved: moved{invalid: 1}},
		{name: "NUL between tokens", parts: one(joinReq("{\"groupID\":\"g\",\x00\"applyID\":\"u\"}"), failed(400, "invalid JSON")), moved: moved{invalid: 1}},
		{name: "NUL after the object", parts: one(joinReq(normal+"\x00"), failed(400, "data after")), moved: moved{invalid: 1}},
		{name: "escaped NUL (\\u0000) in strings", parts: one(joinReq(`{"groupID":"g\u0000","applyID":"\u0000","x\u0000":"\u0000"}`), allowed), moved: moved{decided: 1}},
		{name: "NUL in a header value", parts: one(request("POST", joinPath, "X-A: a\x00b\r\n", normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},

		// Headers beyond the 8 KiB read buffer.
		{name: "1500 headers (12 KB)", parts: one(request("POST", joinPath, strings.Repeat("X-H: v\r\n", 1500), normal), failed(431, "headers too large")), closes: true, moved: moved{rejected: 1}},
		{name: "one 10 KB header", parts: one(request("POST", joinPath, "X-Big: "+strings.Repeat("b", 10000)+"\r\n", normal), failed(431, "headers too large")), closes: true, moved: moved{rejected: 1}},
		{name: "800 small headers within 8 KiB", parts: one(request("POST", joinPath, strings.Repeat("A:b\r\n", 800), normal), allowed), moved: moved{decided: 1}},

		// Methods and paths.
		{name: "GET", parts: one(request("GET", joinPath, "", ""), failed(405, "POST")), moved: moved{rejected: 1}},
		{name: "HEAD", parts: one(request("HEAD", joinPath, "", ""), reply{status: 405, head: true}), moved: moved{rejected: 1}},
		{name: "lower-case post", parts: one(request("post", joinPath, "", normal), failed(405, "POST")), moved: moved{rejected: 1}},
		{name: "made-up method", parts: one(request("BREW", joinPath, "", normal), failed(405, "POST")), moved: moved{rejected: 1}},
		{name: "unknown path", parts: one(request("POST", "/favicon.ico", "", normal), failed(404, "unknown path")), moved: moved{rejected: 1}},
		{name: "root path", parts: one(request("POST", "/", "", normal), failed(404, "unknown path")), moved: moved{rejected: 1}},
		{name: "20 KB URL", parts: one(request("POST", "/"+strings.Repeat("a", 20000)+"/"+callback.JoinGroupCommand, "", normal), failed(431, "headers too large")), closes: true, moved: moved{rejected: 1}},
		{name: "control character 0x01 in the path", parts: one(request("POST", "/a\x01b/"+callback.JoinGroupCommand, "", normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "DEL (0x7f) at the end of the command", parts: one(request("POST", joinPath+"\x7f", "", normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "raw NUL in the path", parts: one(request("POST", "/a\x00/"+callback.JoinGroupCommand, "", normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "tab in the path", parts: one(request("POST", "/a\tb/"+callback.JoinGroupCommand, "", normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "percent-encoded NUL after the command", parts: one(request("POST", joinPath+"%00", "", normal), failed(404, "unknown path")), moved: moved{rejected: 1}},
		{name: "percent-encoded slash before the command", parts: one(request("POST", "/x%2F"+callback.JoinGroupCommand, "", normal), allowed), moved: moved{decided: 1}},
		{name: "dot segments before the command", parts: one(request("POST", "/a/../../"+callback.JoinGroupCommand, "", normal), allowed), moved: moved{decided: 1}},
		{name: "absolute-form target naming another host", parts: one(request("POST", "http://elsewhere"+joinPath, "", normal), allowed), moved: moved{decided: 1}},
		// A webhook base such as "http://imserver//a:b://x" gives a target
		// fasthttp reads as a URL with the host "a:b" and cannot parse
		// (found by FuzzRoute): routed on its last segment all the same.
		// The body is not read, so a join callback gets the fallback.
		{name: "target fasthttp cannot parse, join command", parts: one(request("POST", "//a:b://x/"+callback.JoinGroupCommand, "", normal), allowed), closes: true, moved: moved{fallback: 1}},
		{name: "target fasthttp cannot parse, other command", parts: one(request("POST", "//:://callbackAfterJoinGroupCommand?0", "", normal), allowed), closes: true, moved: moved{noPolicy: 1}},
		{name: "target fasthttp cannot parse, no command", parts: one(request("POST", "//:://x", "", normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "other command with a hostile body", parts: one(request("POST", "/callbackAfterJoinGroupCommand", "", "\x00\xff"+strings.Repeat("[", 20000)), allowed), moved: moved{noPolicy: 1}},

		// Framing of the body.
		{name: "chunked body", parts: one(chunked(normal[:10], normal[10:11], normal[11:]), allowed), moved: moved{decided: 1}},
		{name: "chunked body with an extension and a trailer", parts: one(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\nTransfer-Encoding: chunked\r\n\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n", joinPath, len(normal), normal), allowed), moved: moved{decided: 1}},
		{name: "malformed chunk size", parts: one(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n%s\r\n0\r\n\r\n", joinPath, normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "Transfer-Encoding gzip, chunked", parts: one(strings.Replace(chunked(normal), "chunked", "gzip, chunked", 1), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "both Content-Length and chunked", parts: one(strings.Replace(chunked(normal), "Transfer-Encoding", "Content-Length: 3\r\nTransfer-Encoding", 1), allowed), closes: true, moved: moved{decided: 1}},
		{name: "two different Content-Lengths", parts: one(request("POST", joinPath, "Content-Length: 5\r\n", normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "negative Content-Length", parts: one(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\nContent-Length: -1\r\n\r\n%s", joinPath, normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "Content-Length beyond int64", parts: one(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\nContent-Length: 99999999999999999999999\r\n\r\n%s", joinPath, normal), failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "Content-Length longer than the body (read timeout)", parts: one(strings.Replace(joinReq(normal), fmt.Sprint("Content-Length: ", len(normal)), "Content-Length: 1000", 1), failed(408, "read_timeout")), closes: true, moved: moved{rejected: 1}},
		// The rest of the body is read as the next request on the connection.
		{name: "Content-Length shorter than the body, CRLF after it", parts: one(strings.Replace(joinReq(normal), fmt.Sprint("Content-Length: ", len(normal)), "Content-Length: 10", 1)+"\r\n", failed(400, "unexpected end"), failed(400, "cannot parse")), closes: true, moved: moved{invalid: 1, rejected: 1}},
		// The rest never ends a request line: a read timeout. fasthttp
		// writes that 408 under the write deadline of the first answer,
		// long past, so today the connection closes with no second answer
		// (a 408 JSON answer would pass too).
		{name: "Content-Length shorter than the body, nothing after it", parts: one(strings.Replace(joinReq(normal), fmt.Sprint("Content-Length: ", len(normal)), "Content-Length: 10", 1), failed(400, "unexpected end"), failed(400, "cannot parse")), closes: true, moved: moved{invalid: 1, rejected: 1}},
		// IMServer's body ends with a newline: the rest of it reads as a
		// request line that fasthttp cannot parse.
		{name: "no Content-Length, body follows", parts: one(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\n\r\n%s", joinPath, normal), failed(400, "empty body"), failed(400, "cannot parse")), closes: true, moved: moved{invalid: 1, rejected: 1}},
		{name: "no Content-Length, body without its newline follows", parts: one(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\n\r\n%s", joinPath, strings.TrimSuffix(normal, "\n")), failed(400, "empty body")), closes: true, lateTimeout: true, moved: moved{invalid: 1, rejected: 1}},
		{name: "Content-Encoding gzip", parts: one(request("POST", joinPath, "Content-Encoding: gzip\r\n", "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"), failed(400, "not a JSON object")), moved: moved{invalid: 1}},

		// Protocol.
		{name: "pipelined requests", parts: one(
			joinReq(joinBody("pipe-1", "g"))+
				request("GET", joinPath, "", "")+
				joinReq(`{"groupID":"g"}`)+
				request("POST", "/cb/callbackAfterJoinGroupCommand", "", "{}")+
				request("POST", joinPath, "Connection: close\r\n", joinBody("spammer", "g")),
			allowed, failed(405, "POST"), failed(400, "applyID is missing"), allowed, denied),
			closes: true, moved: moved{decided: 2, rejected: 1, invalid: 1, noPolicy: 1}},
		{name: "HTTP/1.0 without Host", parts: one(fmt.Sprintf("POST %s HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s", joinPath, len(normal), normal), allowed), closes: true, moved: moved{decided: 1}},
		{name: "HTTP/9.9", parts: one(strings.Replace(joinReq(normal), "HTTP/1.1", "HTTP/9.9", 1), allowed), closes: true, moved: moved{decided: 1}},
		{name: "HTTP/2 prior-knowledge preface", parts: one("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "HTTP/0.9 request line", parts: one("GET /\r\n\r\n", failed(400, "cannot parse")), closes: true, moved: moved{rejected: 1}},
		{name: "bare LF line endings (read timeout)", parts: one(strings.ReplaceAll(joinReq(normal), "\r\n", "\n"), failed(408, "read_timeout")), closes: true, moved: moved{rejected: 1}},
		{name: "obsolete header line folding", parts: one(request("POST", joinPath, "X-A: a\r\n b\r\n", normal), allowed), moved: moved{decided: 1}},
		{name: "Expect: 100-continue", parts: []part{
			{send: fmt.Sprintf("POST %s HTTP/1.1\r\nHost: imserver\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", joinPath, len(normal)), want: []reply{continued}},
			{send: normal, want: []reply{allowed}},
		}, moved: moved{decided: 1}},
		{name: "connection that sends nothing (read timeout)", parts: []part{{want: []reply{failed(408, "read_timeout")}}}, closes: true, moved: moved{rejected: 1}},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := counts(t, e.reg)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(conn)
			var last *http.Response
			for _, p := range c.parts {
				if p.async {
					go conn.Write([]byte(p.send)) // fails once the gateway closes: expected
				} else if _, err := io.WriteString(conn, p.send); err != nil {
					t.Fatal(err)
				}
				for _, w := range p.want {
					last = readReply(t, br, w)
				}
			}
			want := c.moved
			if c.closes {
				if c.lateTimeout {
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := br.Peek(1); err == nil {
						readReply(t, br, failed(408, "read_timeout"))
					}
				}
				wantClosed(t, conn, br)
			} else {
				if last.Close {
					t.Fatal("the gateway asked to close a connection it should keep")
				}
				// The connection is in step: a normal callback still works on it.
				if _, err := io.WriteString(conn, joinReq(joinBody("follow-up", "g"))); err != nil {
					t.Fatal(err)
				}
				readReply(t, br, allowed)
				want.decided++
			}
			wantMoved(t, e.reg, before, want)
		})
	}

	t.Run("slow clients", func(t *testing.T) { testSlowClients(t, e, addr) })

	// Still serving: a normal callback is decided by the worker both ways.
	if code, a := post(t, e.url+joinPath, joinBody("after-hostile", "g")); code != 200 || a != allow {
		t.Fatalf("after hostile input: %d %+v, want 200 allow", code, a)
	}
	if code, a := post(t, e.url+joinPath, joinBody("spammer", "g")); code != 200 || a.ErrCode != 5002 || !a.refused() {
		t.Fatalf("after hostile input: %d %+v, want the deny refusal", code, a)
	}
	// Every join that reached the worker was decided, none fell back but
	// the one whose target fasthttp could not parse, and the worker's
	// decoder agreed with the edge's on every body.
	for _, cause := range []string{"timeout", "no_responders", "nats_unavailable"} {
		testenv.WantValue(t, e.reg, 0, "joingate_gateway_fallbacks_total", cause)
	}
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_fallbacks_total", "error")
	testenv.WantValue(t, wreg, 0, "joingate_worker_requests_total", "invalid")
}

// testSlowClients trickles a request one byte every 50ms, beyond the read
// timeout: the gateway answers 408 and closes, however slowly bytes keep
// coming, and serves other clients meanwhile.
func testSlowClients(t *testing.T, e *edge, addr string) {
	normal := joinBody("slow", "g")
	for _, tc := range []struct{ name, head, trickled string }{
		{"trickled request", "", joinReq(normal)},
		{"trickled body", strings.TrimSuffix(joinReq(normal), normal), normal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counts(t, e.reg)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			if _, err := io.WriteString(conn, tc.head); err != nil {
				t.Fatal(err)
			}

			var sent atomic.Int64
			stop, trickling := make(chan struct{}), make(chan struct{})
			var started sync.Once
			go func() {
				defer started.Do(func() { close(trickling) })
				tick := time.NewTicker(50 * time.Millisecond) // the pace of the slow client
				defer tick.Stop()
				for i := range len(tc.trickled) {
					if _, err := conn.Write([]byte{tc.trickled[i]}); err != nil {
						return // the gateway closed the connection
					}
					if sent.Add(1) == 2 {
						started.Do(func() { close(trickling) })
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			defer close(stop)

			type result struct {
				resp    *http.Response
				body    []byte
				err     error
				elapsed time.Duration
				after   []byte
				end     error
			}
			var answered atomic.Bool
			done := make(chan result, 1)
			go func() {
				var r result
				br := bufio.NewReader(conn)
				r.resp, r.err = http.ReadResponse(br, nil)
				answered.Store(true)
				if r.err == nil {
					r.body, r.err = io.ReadAll(r.resp.Body)
				}
				r.elapsed = time.Since(start)
				r.after, r.end = io.ReadAll(br)
				done <- r
			}()

			// Others are served while the slow client trickles.
			<-trickling
			postStart := time.Now()
			if code, a := post(t, e.url+joinPath, joinBody("meanwhile", "g")); code != 200 || a != allow {
				t.Fatalf("while a client trickles: %d %+v", code, a)
			}
			// A machine so loaded that the callback took half the slow
			// client's read timeout proves nothing either way.
			if took := time.Since(postStart); answered.Load() && took < hostileReadTimeout/2 {
				t.Fatalf("the slow client was answered before the normal callback (%v): nothing was served meanwhile", took)
			}

			r := <-done
			if r.err != nil {
				t.Fatalf("slow client: no answer after %v (%d bytes sent): %v", r.elapsed, sent.Load(), r.err)
			}
			a := mustAnswer(t, r.resp.Header.Get("Content-Type"), r.body)
			if r.resp.StatusCode != 408 || a.ActionCode != 1 || !strings.Contains(a.ErrMsg, "read_timeout") {
				t.Fatalf("slow client: %d %+v, want 408 JSON", r.resp.StatusCode, a)
			}
			if len(r.after) > 0 || isTimeout(r.end) {
				t.Fatalf("after the 408: %q, %v; want the connection closed", r.after, r.end)
			}
			// A bound, not a speed measurement: the trickle would last
			// len(trickled)*50ms, the gateway cuts it at the read timeout.
			if n := sent.Load(); n >= int64(len(tc.trickled)) {
				t.Fatalf("the gateway waited for all %d trickled bytes", n)
			}
			t.Logf("408 and close after %v, %d of %d bytes trickled", r.elapsed.Round(time.Millisecond), sent.Load(), len(tc.trickled))
			wantMoved(t, e.reg, before, moved{rejected: 1, decided: 1})
		})
	}
}

// Beyond gateway.max_conns a new connection is answered as a callback that
// cannot be decided (status 503, gateway.fallback: allow here), counted,
// and closed; the edge serves again once connections free up.
// With gateway.fallback deny, a join callback over max_conns is refused
// with gateway.fallback_refusal, and another command still allowed.
func TestConnectionLimitAnswersFallback(t *testing.T) {
	ns := testenv.NATS(t)
	refusal := callback.AppendRefusal(nil, 5099, "busy, try later", "")
	e := startGateway(t, ns, func(o *gateway.Options) { o.MaxConns, o.FallbackBody = 1, refusal })
	addr := strings.TrimPrefix(e.url, "http://")
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, c := range []struct{ req, want string }{
		{joinReq(joinBody("u", "g")), string(refusal)},
		{"POST /callbackExample/callbackAfterJoinGroupCommand HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", callback.AllowJSON},
	} {
		over, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		over.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := over.Write([]byte(c.req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(over), nil)
		if err != nil {
			t.Fatalf("connection over max_conns: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		over.Close()
		if resp.StatusCode != 503 || string(body) != c.want {
			t.Fatalf("%q over max_conns: %d %s; want 503 %s", c.req[:40], resp.StatusCode, body, c.want)
		}
	}
	testenv.WantValue(t, e.reg, 2, "joingate_gateway_connections_refused_total")
}

func TestHostileConnectionFlood(t *testing.T) {
	ns := testenv.NATS(t)
	startWorker(t, ns, ratelimit.NewMemory(), policyConfig())
	const maxConns = 3
	e := startGateway(t, ns, func(o *gateway.Options) { o.MaxConns = maxConns })
	addr := strings.TrimPrefix(e.url, "http://")
	before := counts(t, e.reg)

	held := make([]net.Conn, maxConns)
	for i := range held {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held[i] = c
	}
	// Connections are accepted in order: these three hold every slot.
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	over.SetDeadline(time.Now().Add(5 * time.Second))
	// IMServer sends its request at once; the answer must survive it.
	if _, err := over.Write([]byte(joinReq(joinBody("over", "g")))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(over)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("connection over max_conns: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/json" || string(body) != callback.AllowJSON {
		t.Fatalf("connection over max_conns: %d %q %q; want 503 with the fallback, allow", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	wantClosed(t, over, br)
	if got := counts(t, e.reg); got != before {
		t.Fatalf("request counters moved for a refused connection: %+v -> %+v", before, got)
	}
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_connections_refused_total")

	for _, c := range held {
		c.Close()
	}
	// Slots free up as the gateway sees the held connections close.
	var a answer
	if !testenv.Eventually(5*time.Second, func() bool {
		status, raw, err := tryRaw(addr, joinReq(joinBody("after-flood", "g")))
		if err != nil || status != 200 {
			return false
		}
		a = mustAnswer(t, "application/json", raw)
		return true
	}) {
		t.Fatal("the gateway does not serve again once the connections are closed")
	}
	if a != allow {
		t.Fatalf("after the flood: %+v", a)
	}
}

// readReply reads one answer and checks it against w: the status, a JSON
// callback answer (except for 100 Continue and HEAD), its content.
func readReply(t *testing.T, br *bufio.Reader, w reply) *http.Response {
	t.Helper()
	var req *http.Request
	if w.head {
		req = &http.Request{Method: http.MethodHead}
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("want %d: %v", w.status, err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("want %d: reading the body: %v", w.status, err)
	}
	if resp.StatusCode != w.status {
		t.Fatalf("status %d (body %q), want %d", resp.StatusCode, raw, w.status)
	}
	switch {
	case w.status == 100:
	case w.head:
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || len(raw) != 0 {
			t.Fatalf("HEAD: Content-Type %q, body %q; want JSON headers and no body", ct, raw)
		}
	case w.status == 200:
		a := mustAnswer(t, resp.Header.Get("Content-Type"), raw)
		if w.errCode == 0 && a != allow || w.errCode != 0 && (a.ErrCode != w.errCode || !a.refused()) {
			t.Fatalf("answer %+v, want errCode %d", a, w.errCode)
		}
	default:
		a := mustAnswer(t, resp.Header.Get("Content-Type"), raw)
		if a.ActionCode != 1 || a.NextCode != 0 || !strings.Contains(a.ErrMsg, w.msg) {
			t.Fatalf("%d %+v, want actionCode 1 and errMsg about %q", resp.StatusCode, a, w.msg)
		}
	}
	return resp
}

// wantClosed checks that the gateway closes the connection without writing
// anything more.
func wantClosed(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(br)
	if len(rest) > 0 {
		t.Fatalf("after the last answer the gateway wrote %q", rest[:min(len(rest), 200)])
	}
	if isTimeout(err) {
		t.Fatal("the gateway keeps the connection open")
	}
	// io.ReadAll's nil is EOF; a reset (the gateway closed with unread
	// input) is a close too.
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// tryRaw sends one request on a new connection and returns the answer's
// status and body.
func tryRaw(addr, req string) (int, []byte, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

func counts(t *testing.T, reg prometheus.Gatherer) moved {
	t.Helper()
	return moved{
		rejected: testenv.Value(t, reg, "joingate_gateway_requests_total", "none", "rejected"),
		invalid:  testenv.Value(t, reg, "joingate_gateway_requests_total", callback.JoinGroupCommand, "invalid"),
		decided:  testenv.Value(t, reg, "joingate_gateway_requests_total", callback.JoinGroupCommand, "decided"),
		noPolicy: testenv.Value(t, reg, "joingate_gateway_requests_total", "other", "no_policy"),
		fallback: testenv.Value(t, reg, "joingate_gateway_requests_total", callback.JoinGroupCommand, "fallback"),
	}
}

// wantMoved waits for the counters to have moved by want since before (a
// counter is incremented before the answer is written, but the closing
// rows may count after the client saw the close).
func wantMoved(t *testing.T, reg prometheus.Gatherer, before, want moved) {
	t.Helper()
	want = moved{before.rejected + want.rejected, before.invalid + want.invalid, before.decided + want.decided, before.noPolicy + want.noPolicy, before.fallback + want.fallback}
	var got moved
	if !testenv.Eventually(5*time.Second, func() bool { got = counts(t, reg); return got == want }) {
		t.Fatalf("requests_total{none,rejected / join,invalid / join,decided / other,no_policy / join,fallback} = %+v, want %+v", got, want)
	}
}

// FuzzRoute checks the routing contract on a real gateway: for any webhook
// base path and query that IMServer's URL may carry (characters RFC 3986
// allows there), "POST <base>/<command>?<query>" reaches that command. It
// posts callbackAfterJoinGroupCommand, which is routed exactly like the
// join-group command but answered at the edge, so no worker is needed.
func FuzzRoute(f *testing.F) {
	for _, seed := range [][2]string{
		{"/callbackExample", ""},
		{"/callbackExample", "contenttype=json"},
		{"", ""},
		{"/", "key=v"},
		{"/a/../../b/./c", "x=%2F&y=/"},
		{"/a%2Fb/%2e%2E/%3F", "?/?"},
		{"/hook", "next=http://x/y"},
		{"/:@!$&'()*+,;=-._~", ":@!$&'()*+,;=-._~/?"},
		// Found by this target: a base ending in "/" (which the design says
		// to accept) and "://" in the query. fasthttp takes the target
		// "//callbackAfterJoinGroupCommand?://" for an absolute-form URL
		// and routes on the path "/": 404 instead of the callback. See
		// RELIABILITY.md ("Hostile input", bugs found).
		{"/", "://"},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	ns := testenv.NATS(f)
	ln := fasthttputil.NewInmemoryListener()
	opts := gateway.DefaultOptions()
	opts.Listener = ln
	opts.Conn = testenv.Conn(f, ns)
	opts.Registerer = prometheus.NewRegistry()
	gw, err := gateway.New(opts)
	if err != nil {
		f.Fatal(err)
	}
	testenv.Run(f, gw.Run)
	const command = "callbackAfterJoinGroupCommand"

	f.Fuzz(func(t *testing.T, base, query []byte) {
		if !uriChars(base, "/") || !uriChars(query, "/?") || len(base)+len(query) > 4096 {
			return // not something IMServer's HTTP client sends
		}
		target := string(base) + "/" + command
		if target[0] != '/' {
			target = "/" + target
		}
		if len(query) > 0 {
			target += "?" + string(query)
		}
		conn, err := ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, request("POST", target, "", "{}")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("POST %s: %v", target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != callback.AllowJSON {
			t.Fatalf("POST %s: %d %s; want 200 and the allow body, as for any %s", target, resp.StatusCode, body, command)
		}
	})
}

// uriChars reports whether b holds only characters RFC 3986 allows in a
// path segment (pchar), the extra ones given, and well-formed %XX escapes.
func uriChars(b []byte, extra string) bool {
	const hex = "0123456789abcdefABCDEF"
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0, strings.IndexByte(extra, c) >= 0:
		case c == '%' && i+2 < len(b) && strings.IndexByte(hex, b[i+1]) >= 0 && strings.IndexByte(hex, b[i+2]) >= 0:
			i += 2
		default:
			return false
		}
	}
	return true
}
