// Package loadgen is joingate's load generator. It speaks to a webhook as
// OpenIM's IMServer does: POST <base>/callbackBeforeJoinGroupCommand with
// IMServer's headers and real callback bodies, applicants and groups drawn
// from configurable populations. It runs a closed loop (N connections, each
// sending its next request as soon as the last is answered) or an open loop
// (a fixed request rate whatever the answers do, latency measured from the
// time each request was due, so that a stalled server shows in the
// percentiles instead of slowing the generator down), and reports
// throughput, latency percentiles, the decision mix, errors and, from the
// gateway's metrics, the fallback answers.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/joingate/joingate/pkg/callback"
)

// Options configure a load run.
type Options struct {
	// Base is the webhook base URL as IMServer is configured with it;
	// requests go to Base + "/callbackBeforeJoinGroupCommand".
	Base string
	// Connections is the number of concurrent requests (and of HTTP
	// connections).
	Connections int
	// Rate, when positive, runs an open loop at Rate requests per second;
	// zero runs a closed loop.
	Rate float64
	// Warmup is load sent before the measured Duration and not counted.
	Duration, Warmup time.Duration
	// KeepAlive reuses connections; false opens a new connection for
	// every request (IMServer keeps few idle connections per host).
	KeepAlive bool
	// Timeout bounds one request, from its send time.
	Timeout time.Duration
	// Applicants and Groups are the population sizes that applyID and
	// groupID are drawn from, by Distribution (Uniform or Zipf, with
	// exponent ZipfS).
	Applicants, Groups int
	Distribution       string
	ZipfS              float64
	// Message is every request's reqMessage.
	Message string
	// MetricsURLs are gateways' Prometheus endpoints: the fallback answers
	// are the growth of joingate_gateway_fallbacks_total over the run.
	MetricsURLs []string
	// Progress, if not nil, gets a progress line every second.
	Progress io.Writer
	// Seed makes the drawn applicants and groups repeatable.
	Seed uint64
	// AllowRemote permits a target that is not a loopback address.
	AllowRemote bool
	// OnMeasure, if not nil, is called as the measured window starts
	// (true) and ends (false), for callers that sample other processes.
	OnMeasure func(start bool)

	progressEvery time.Duration // tests only; 0 means a second
}

// DefaultOptions returns a closed loop of 64 keep-alive connections for
// 10s after 2s of warm-up against joingate's default address.
func DefaultOptions() Options {
	return Options{
		Base:         "http://127.0.0.1:10006/callbackExample",
		Connections:  64,
		Duration:     10 * time.Second,
		Warmup:       2 * time.Second,
		KeepAlive:    true,
		Timeout:      5 * time.Second,
		Applicants:   100_000,
		Groups:       10_000,
		Distribution: Uniform,
		ZipfS:        1.1,
		Message:      "hello, please let me in",
		Seed:         1,
	}
}

// maxPopulation keeps generated IDs at ten digits.
const maxPopulation = 1_000_000_000

func (o *Options) validate() (*url.URL, error) {
	var errs []error
	u, err := url.Parse(o.Base)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("base URL: %w", err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("base URL %q: want http:// or https://", o.Base))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("base URL %q has no host", o.Base))
	case !o.AllowRemote && !isLoopback(u.Hostname()):
		errs = append(errs, fmt.Errorf("base URL %q is not a loopback address: pass AllowRemote (--allow-remote) to load another machine", o.Base))
	}
	if o.Connections < 1 {
		errs = append(errs, fmt.Errorf("connections must be at least 1, got %d", o.Connections))
	}
	if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate must be a positive number of requests per second, or 0 for a closed loop; got %v", o.Rate))
	}
	if o.Duration <= 0 || o.Warmup < 0 || o.Timeout <= 0 {
		errs = append(errs, errors.New("duration and timeout must be positive, warm-up not negative"))
	}
	for _, p := range []struct {
		name string
		n    int
	}{{"applicants", o.Applicants}, {"groups", o.Groups}} {
		if p.n < 1 || p.n > maxPopulation {
			errs = append(errs, fmt.Errorf("%s population must be 1..%d, got %d", p.name, maxPopulation, p.n))
		}
	}
	if _, err := newPicker(rand.New(rand.NewPCG(0, 0)), o.Distribution, 1, o.ZipfS); err != nil {
		errs = append(errs, err)
	}
	return u, errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Latency summarises a histogram, in milliseconds.
type Latency struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p99_9_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func summarise(h *Histogram) Latency {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Latency{
		P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Mean: ms(h.Mean()),
	}
}

// Result is what a run measured. Every count covers the requests sent in
// the measured window (open loop: due in it), whenever they were answered.
type Result struct {
	Mode         string  `json:"mode"` // "closed" or "open"
	URL          string  `json:"url"`
	Connections  int     `json:"connections"`
	KeepAlive    bool    `json:"keep_alive"`
	TargetRate   float64 `json:"target_rate,omitempty"`
	Distribution string  `json:"distribution"`
	Applicants   int     `json:"applicants"`
	Groups       int     `json:"groups"`
	Warmup       float64 `json:"warmup_seconds"`
	Seconds      float64 `json:"seconds"`

	// Sent = Responses + Timeouts + Errors.
	Sent       uint64  `json:"sent"`
	Responses  uint64  `json:"responses"`
	Throughput float64 `json:"throughput"` // responses per second
	// Latency runs from the intended send time to the end of the answer:
	// in a closed loop that is the send time, in an open loop the time the
	// schedule said.
	Latency Latency `json:"latency"`
	// Open loop only: ServiceTime runs from the actual send time, SendLag
	// is how late requests left, Unsent counts requests due in the window
	// that the generator never sent, and Behind says the schedule was not
	// kept (see Report).
	ServiceTime *Latency `json:"service_time,omitempty"`
	SendLag     *Latency `json:"send_lag,omitempty"`
	Unsent      uint64   `json:"unsent,omitempty"`
	Behind      bool     `json:"behind,omitempty"`

	// Responses = Allowed + sum(Refused) + Failed + NonJSON.
	Allowed uint64            `json:"allowed"`
	Refused map[string]uint64 `json:"refused"` // by errCode
	// Failed answers have actionCode != 0: IMServer lets those joins through.
	Failed  uint64            `json:"failed"`
	NonJSON uint64            `json:"non_json"`
	Status  map[string]uint64 `json:"status_not_200"`
	// Timeouts and Errors got no HTTP answer.
	Timeouts     uint64            `json:"timeouts"`
	Errors       uint64            `json:"errors"`
	ErrorSamples map[string]uint64 `json:"error_samples,omitempty"`
	// ConnectFailures counts the requests of the whole run, warm-up
	// included, that could not connect; after each, the connection waited
	// (connectBackoffMin, doubling to connectBackoffMax) before its next.
	ConnectFailures uint64 `json:"connect_failures,omitempty"`
	// Fallbacks is the growth of joingate_gateway_fallbacks_total over the
	// window; nil without MetricsURLs or when they could not be read.
	Fallbacks     *float64 `json:"fallbacks"`
	FallbacksNote string   `json:"fallbacks_note,omitempty"`

	// GeneratorCPU is the generator process's CPU time over the window,
	// in cores; GeneratorCPUPerRequest is that time over the requests
	// answered in the window, in microseconds.
	GeneratorCPU           float64 `json:"generator_cpu_cores"`
	GeneratorCPUPerRequest float64 `json:"generator_cpu_us_per_request"`

	// The histograms behind Latency, ServiceTime and SendLag.
	LatencyHist, ServiceHist, LagHist *Histogram `json:"-"`
}

// HTTPErrors counts the requests that got no usable HTTP answer or a status
// other than 200, and the bodies that were not JSON.
func (r *Result) HTTPErrors() uint64 {
	n := r.Timeouts + r.Errors + r.NonJSON
	for _, c := range r.Status {
		n += c
	}
	return n
}

// behindLag is the send lag beyond which an open loop says it did not keep
// its schedule.
const behindLag = time.Millisecond

// hardStopAfter bounds how long after the window an open loop still sends
// requests that were due in it.
const hardStopAfter = time.Second

// Run sends load as opts says until the window ends or ctx is done, waits
// for the answers of the requests in flight and returns what it measured.
func Run(ctx context.Context, opts Options) (*Result, error) {
	u, err := opts.validate()
	if err != nil {
		return nil, fmt.Errorf("load options: %w", err)
	}
	target := opts.Base + "/" + callback.JoinGroupCommand
	client := &fasthttp.HostClient{
		Addr:                      fasthttp.AddMissingPort(u.Host, u.Scheme == "https"),
		IsTLS:                     u.Scheme == "https",
		Name:                      "Go-http-client/1.1", // what IMServer's net/http client says
		MaxConns:                  opts.Connections,
		MaxConnWaitTimeout:        opts.Timeout,
		MaxIdleConnDuration:       90 * time.Second,
		MaxIdemponentCallAttempts: 1, // IMServer retries nothing
		ReadTimeout:               opts.Timeout,
		WriteTimeout:              opts.Timeout,
		DisablePathNormalizing:    true, // a base ending in "/" sends "//", as IMServer does
	}
	defer client.CloseIdleConnections()

	message, _ := json.Marshal(opts.Message)
	runID := strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36)
	r := &run{
		opts:    opts,
		open:    opts.Rate > 0,
		stopped: make(chan struct{}),
		abort:   make(chan struct{}),
		tokens:  make(chan uint64, opts.Connections),
	}
	workers := make([]*worker, opts.Connections)
	for i := range workers {
		w, err := newWorker(r, i, client, target, message, runID)
		if err != nil {
			return nil, err
		}
		workers[i] = w
	}

	r.start = time.Now()
	r.measureStart = r.start.Add(opts.Warmup)
	r.end = r.measureStart.Add(opts.Duration)
	if r.open {
		r.interval = 1e9 / opts.Rate
	}

	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(w.loop)
	}
	if r.open {
		go r.pace()
	}
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()

	var (
		fallbacksBefore []float64
		beforeErr       error
		beforeDone      = make(chan struct{})
		cpuStart        time.Duration
		cpuEnd          time.Duration
		doneStart       int64
		doneEnd         int64
		windowEnd       time.Time
	)
	measure := func() {
		cpuStart, doneStart = cpuTime(), answered(workers)
		if opts.OnMeasure != nil {
			opts.OnMeasure(true)
		}
		go func() {
			defer close(beforeDone)
			if len(opts.MetricsURLs) > 0 {
				fallbacksBefore, beforeErr = scrapeFallbacks(opts.MetricsURLs)
			}
		}()
	}
	progress := newProgress(opts.Progress, r, workers)
	every := time.Second
	if opts.progressEvery > 0 {
		every = opts.progressEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	startTimer := time.NewTimer(time.Until(r.measureStart))
	endTimer := time.NewTimer(time.Until(r.end))
	measuring := false
wait:
	for {
		select {
		case <-startTimer.C:
			measure()
			measuring = true
		case <-endTimer.C:
			windowEnd = time.Now()
			break wait
		case <-ctx.Done():
			windowEnd = time.Now()
			r.cancelled.Store(true)
			break wait
		case <-tick.C:
			progress.line()
		}
	}
	cpuEnd, doneEnd = cpuTime(), answered(workers)
	if !measuring {
		// Cancelled during warm-up: nothing was measured.
		windowEnd = r.measureStart
		close(beforeDone)
	} else if opts.OnMeasure != nil {
		opts.OnMeasure(false)
	}
	r.windowEnd.Store(windowEnd.UnixNano())
	close(r.stopped)
	if r.cancelled.Load() {
		close(r.abort)
	} else {
		// An open loop behind its schedule still sends what was due in the
		// window, for a while.
		hard := time.AfterFunc(hardStopAfter, func() { close(r.abort) })
		defer hard.Stop()
	}
	<-allDone
	<-beforeDone

	res := r.result(workers, target, windowEnd)
	if measuring {
		if cpu := (cpuEnd - cpuStart).Seconds(); res.Seconds > 0 {
			res.GeneratorCPU = cpu / res.Seconds
			if n := doneEnd - doneStart; n > 0 {
				res.GeneratorCPUPerRequest = cpu / float64(n) * 1e6
			}
		}
	}
	if len(opts.MetricsURLs) > 0 {
		switch after, err := scrapeFallbacks(opts.MetricsURLs); {
		case beforeErr != nil:
			res.FallbacksNote = beforeErr.Error()
		case err != nil:
			res.FallbacksNote = err.Error()
		case !measuring:
			res.FallbacksNote = "nothing measured"
		default:
			var n float64
			for i := range after {
				n += after[i] - fallbacksBefore[i]
			}
			res.Fallbacks = &n
		}
	}
	return res, nil
}

// run is the state the workers of one Run share.
type run struct {
	opts                Options
	open                bool
	start, measureStart time.Time
	end                 time.Time
	interval            float64 // open loop: nanoseconds between requests
	stopped             chan struct{}
	windowEnd           atomic.Int64 // unix nanoseconds, once stopped
	cancelled           atomic.Bool
	// tokens carries the numbers of the open loop's requests from the
	// pacer to the workers as they fall due.
	tokens chan uint64
	// abort ends an open loop: cancelled, or too far behind after the
	// window.
	abort chan struct{}
}

// pace hands out the open loop's requests as they fall due: request i is
// due at start + i/rate. A request that no worker is free to take when it
// falls due (the server stalls, every connection is busy) keeps its due
// time, and its latency counts the wait. The pacer wakes at most every
// paceQuantum and then releases every request due by then.
func (r *run) pace() {
	defer close(r.tokens)
	fine, err := newFineTimer()
	if err != nil {
		fine = nil // the runtime's timers: up to 1ms late when idle
	}
	defer fine.close()
	coarse := time.NewTimer(time.Hour)
	defer coarse.Stop()
	var lastWake time.Time
	for i := uint64(0); ; i++ {
		due := r.due(i)
		if !due.Before(r.end) {
			return
		}
		if now := time.Now(); due.After(now) {
			wake := due
			if next := lastWake.Add(paceQuantum); next.After(wake) {
				wake = next
			}
			if d := wake.Sub(now); d > paceCoarse {
				coarse.Reset(d - paceCoarse + time.Millisecond)
				select {
				case <-coarse.C:
				case <-r.abort:
					return
				}
			}
			fine.sleep(time.Until(wake))
			lastWake = time.Now()
		}
		select {
		case r.tokens <- i:
		case <-r.abort:
			return
		}
	}
}

// paceCoarse is the wait beyond which the pacer first sleeps on the
// runtime's timer (which an abort interrupts), then finely; paceQuantum
// bounds how often it wakes: at high rates it releases requests in small
// batches, each up to paceQuantum late.
const (
	paceCoarse  = 3 * time.Millisecond
	paceQuantum = 20 * time.Microsecond
)

// due is the time request i of an open loop is due.
func (r *run) due(i uint64) time.Time {
	return r.start.Add(time.Duration(float64(i) * r.interval))
}

func (r *run) isStopped() bool {
	select {
	case <-r.stopped:
		return true
	default:
		return false
	}
}

// stats are one worker's counts; only the worker writes them, Run reads
// them after the worker has returned.
type stats struct {
	sent, responses, allowed, failed, nonJSON, timeouts, errors uint64
	refused                                                     map[int]uint64
	status                                                      map[int]uint64
	errSamples                                                  map[string]uint64
	latency, service, lag                                       Histogram
}

// live are counters the progress line reads while workers run.
type live struct {
	count, errors, latSum, latMax, lagMax atomic.Int64
	// answered counts every request answered or failed, never reset;
	// connectFailures, the failed connects a connection waited after.
	answered, connectFailures atomic.Int64
	_                         [16]byte // keep workers' counters on separate cache lines
}

func answered(workers []*worker) int64 {
	var n int64
	for _, w := range workers {
		n += w.live.answered.Load()
	}
	return n
}

type worker struct {
	r       *run
	id      int
	client  *fasthttp.HostClient
	req     *fasthttp.Request
	resp    *fasthttp.Response
	apps    picker
	groups  picker
	body    []byte
	message []byte
	opID    []byte
	opIDLen int
	seq     uint64
	backoff time.Duration // after a failed connect; see pause
	stats   stats
	live    live
}

func newWorker(r *run, id int, client *fasthttp.HostClient, target string, message []byte, runID string) (*worker, error) {
	rng := rand.New(rand.NewPCG(r.opts.Seed, uint64(id)))
	apps, err := newPicker(rng, r.opts.Distribution, r.opts.Applicants, r.opts.ZipfS)
	if err != nil {
		return nil, err
	}
	groups, err := newPicker(rng, r.opts.Distribution, r.opts.Groups, r.opts.ZipfS)
	if err != nil {
		return nil, err
	}
	w := &worker{
		r: r, id: id, client: client,
		req: &fasthttp.Request{}, resp: &fasthttp.Response{},
		apps: apps, groups: groups, message: message,
	}
	w.stats.refused = map[int]uint64{}
	w.stats.status = map[int]uint64{}
	w.stats.errSamples = map[string]uint64{}
	w.opID = fmt.Appendf(nil, "bench-%s-%d-", runID, id)
	w.opIDLen = len(w.opID)

	// The request as IMServer's net/http client sends it; only the body
	// and the Operationid change from one request to the next.
	req := w.req
	req.SetRequestURI(target)
	req.URI().DisablePathNormalizing = true
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json; charset=utf-8")
	req.Header.Set("Accept-Encoding", "gzip")
	if !r.opts.KeepAlive {
		req.SetConnectionClose()
	}
	return w, nil
}

func (w *worker) loop() {
	r := w.r
	if !r.open {
		for !r.isStopped() {
			now := time.Now()
			w.pause(w.send(now, now))
		}
		return
	}
	for i := range r.tokens {
		select {
		case <-r.abort:
			return
		default:
		}
		w.pause(w.send(r.due(i), time.Now()))
	}
}

// The wait of a connection after a failed connect: it starts at
// connectBackoffMin, doubles with each failure in a row up to
// connectBackoffMax, and ends with the first request that connects.
// Without it a connection to a target that is down retries at once and
// spins a core.
const (
	connectBackoffMin = 5 * time.Millisecond
	connectBackoffMax = 200 * time.Millisecond
)

// pause waits after err, the outcome of the last request, when it was a
// failure to connect. The end of the run cuts the wait short: of a closed
// loop, the end of the window; of an open loop, its abort (after the
// window it still sends what was due in it, and backs off there too).
func (w *worker) pause(err error) {
	if !connectFailed(err) {
		w.backoff = 0
		return
	}
	w.backoff = min(max(2*w.backoff, connectBackoffMin), connectBackoffMax)
	w.live.connectFailures.Add(1)
	end := w.r.stopped
	if w.r.open {
		end = w.r.abort
	}
	t := time.NewTimer(w.backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-end:
	}
}

// connectFailed reports whether a request failed because no connection
// could be made.
func connectFailed(err error) bool {
	_, ok := errors.AsType[*fasthttp.ErrDialWithUpstream](err)
	return ok || errors.Is(err, fasthttp.ErrDialTimeout)
}

// send sends one request due at due and sent at sent, counts its answer
// if it belongs to the measured window, and returns its error.
func (w *worker) send(due, sent time.Time) error {
	r := w.r
	w.fill()
	err := w.client.DoTimeout(w.req, w.resp, r.opts.Timeout)
	done := time.Now()
	lat := done.Sub(due)

	w.live.count.Add(1)
	w.live.answered.Add(1)
	w.live.latSum.Add(int64(lat))
	atomicMax(&w.live.latMax, int64(lat))
	if r.open {
		atomicMax(&w.live.lagMax, int64(sent.Sub(due)))
	}
	if err != nil {
		w.live.errors.Add(1)
	}
	if due.Before(r.measureStart) || !due.Before(r.end) {
		return err
	}
	if end := r.windowEnd.Load(); end != 0 && due.UnixNano() >= end {
		return err // cancelled: after the window
	}

	s := &w.stats
	s.sent++
	if err != nil {
		var netErr net.Error
		if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) || (errors.As(err, &netErr) && netErr.Timeout()) {
			s.timeouts++
		} else {
			s.errors++
			if len(s.errSamples) < 8 || s.errSamples[err.Error()] > 0 {
				s.errSamples[err.Error()]++
			}
		}
		return err
	}
	s.responses++
	s.latency.Record(lat)
	if r.open {
		s.service.Record(done.Sub(sent))
		s.lag.Record(sent.Sub(due))
	}
	if code := w.resp.StatusCode(); code != fasthttp.StatusOK {
		s.status[code]++
	}
	body := w.resp.Body()
	if bytes.Equal(w.resp.Header.ContentEncoding(), []byte("gzip")) {
		if body, err = w.resp.BodyGunzip(); err != nil {
			s.nonJSON++
			return nil
		}
	}
	action, code, next, ok := parseAnswer(body)
	switch {
	case !ok:
		s.nonJSON++
	case action != 0:
		s.failed++
	case next == 1:
		s.refused[code]++
	default:
		s.allowed++
	}
	return nil
}

// fill writes the next callback body and Operationid into the request.
// The body is byte for byte what IMServer sends
// (callback.AppendIMServerJoinGroup, with groupType "\u0002"), written
// without building strings.
func (w *worker) fill() {
	group := w.groups.pick()
	applicant := w.apps.pick()
	b := append(w.body[:0], `{"callbackCommand":"callbackBeforeJoinGroupCommand","groupID":"`...)
	b = strconv.AppendUint(b, 2_000_000_000+group, 10)
	b = append(b, `","groupType":"\u0002","applyID":"`...)
	b = strconv.AppendUint(b, 1_000_000_000+applicant, 10)
	b = append(b, `","reqMessage":`...)
	b = append(b, w.message...)
	b = append(b, ",\"ex\":\"\"}\n"...)
	w.body = b
	w.req.SetBodyRaw(b)

	w.seq++
	w.opID = strconv.AppendUint(w.opID[:w.opIDLen], w.seq, 10)
	w.req.Header.SetBytesV("Operationid", w.opID)
}

func atomicMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// parseAnswer reads what IMServer reads from a callback answer. ok is false
// when the body is not a JSON object.
func parseAnswer(body []byte) (actionCode, errCode, nextCode int, ok bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' || !json.Valid(body) {
		return 0, 0, 0, false
	}
	return intField(body, `"actionCode":`), intField(body, `"errCode":`), intField(body, `"nextCode":`), true
}

// intField returns the integer after key in body, or 0. Good enough for
// the flat answers joingate and the reference server write.
func intField(body []byte, key string) int {
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return 0
	}
	b := bytes.TrimLeft(body[i+len(key):], " \t\r\n")
	j := 0
	if j < len(b) && b[j] == '-' {
		j++
	}
	for j < len(b) && '0' <= b[j] && b[j] <= '9' {
		j++
	}
	n, _ := strconv.Atoi(string(b[:j]))
	return n
}

func (r *run) result(workers []*worker, target string, windowEnd time.Time) *Result {
	o := r.opts
	if windowEnd.After(r.end) {
		windowEnd = r.end // the end timer fired late; nothing due after end was sent
	}
	res := &Result{
		Mode: "closed", URL: target, Connections: o.Connections, KeepAlive: o.KeepAlive,
		Distribution: o.Distribution, Applicants: o.Applicants, Groups: o.Groups,
		Warmup:       o.Warmup.Seconds(),
		Seconds:      max(windowEnd.Sub(r.measureStart).Seconds(), 0),
		Refused:      map[string]uint64{},
		Status:       map[string]uint64{},
		ErrorSamples: map[string]uint64{},
		LatencyHist:  &Histogram{}, ServiceHist: &Histogram{}, LagHist: &Histogram{},
	}
	for _, w := range workers {
		s := &w.stats
		res.ConnectFailures += uint64(w.live.connectFailures.Load())
		res.Sent += s.sent
		res.Responses += s.responses
		res.Allowed += s.allowed
		res.Failed += s.failed
		res.NonJSON += s.nonJSON
		res.Timeouts += s.timeouts
		res.Errors += s.errors
		for code, n := range s.refused {
			res.Refused[strconv.Itoa(code)] += n
		}
		for code, n := range s.status {
			res.Status[strconv.Itoa(code)] += n
		}
		for msg, n := range s.errSamples {
			res.ErrorSamples[msg] += n
		}
		res.LatencyHist.Merge(&s.latency)
		res.ServiceHist.Merge(&s.service)
		res.LagHist.Merge(&s.lag)
	}
	if res.Seconds > 0 {
		res.Throughput = float64(res.Responses) / res.Seconds
	}
	res.Latency = summarise(res.LatencyHist)
	if r.open {
		res.Mode = "open"
		res.TargetRate = o.Rate
		st, lag := summarise(res.ServiceHist), summarise(res.LagHist)
		res.ServiceTime, res.SendLag = &st, &lag
		// Requests due in [measureStart, windowEnd): the schedule's count.
		first := math.Ceil(o.Warmup.Seconds() * o.Rate)
		last := math.Ceil(windowEnd.Sub(r.start).Seconds() * o.Rate)
		if scheduled := uint64(max(last-first, 0)); scheduled > res.Sent {
			res.Unsent = scheduled - res.Sent
		}
		res.Behind = res.Unsent > 0 || res.LagHist.Quantile(0.99) > behindLag
	}
	return res
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
