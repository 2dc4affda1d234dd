package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/joingate/joingate/pkg/ratelimit"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/testenv"
)

// started is an App running in this process until the test ends.
type started struct {
	*App
	cancel context.CancelFunc
	done   chan error
	logs   *testenv.Logs
}

// start builds and runs an App of role with cfg; the test's cleanup stops
// it and fails the test if it did not stop cleanly.
func start(t *testing.T, cfg config.Config, opts Options) *started {
	t.Helper()
	log, logs := testenv.NewLogger(t)
	opts.Logger = log
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{App: a, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { s.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if !testenv.Eventually(10*time.Second, func() bool { return s.status("/readyz") == http.StatusOK }) {
		t.Fatalf("not ready: /readyz %d", s.status("/readyz"))
	}
	return s
}

// stop cancels Run (again, harmlessly) and returns what it returned.
func (s *started) stop() error {
	s.cancel()
	err, ok := <-s.done
	if ok {
		close(s.done)
	}
	return err
}

func (s *started) status(path string) int {
	resp, err := http.Get("http://" + s.AdminAddr() + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// join posts IMServer's bytes for applicant's application to group and
// returns the answer's errCode.
func (s *started) join(t *testing.T, group, applicant string) int {
	t.Helper()
	resp, err := http.Post("http://"+s.GatewayAddr()+"/"+callback.JoinGroupCommand, "application/json; charset=utf-8",
		strings.NewReader(callback.IMServerJoinGroup(group, applicant, "")))
	if err != nil {
		t.Fatal(err)
	}
	return errCode(t, resp)
}

func errCode(t *testing.T, resp *http.Response) int {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var a struct {
		ErrCode int `json:"errCode"`
	}
	if err := json.Unmarshal(body, &a); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("answer %d %q: %v", resp.StatusCode, body, err)
	}
	return a.ErrCode
}

func testConfig() config.Config {
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Log.Level = slog.LevelDebug
	// A loaded -race run must not turn a decision into the fallback.
	cfg.Gateway.DecisionTimeout = 2 * time.Second
	cfg.JoinGroup.DenyApplicants = []string{"mallory"}
	return cfg
}

// The stop order, seen from IMServer: a callback that is still arriving
// when shutdown starts is decided by the worker (mallory is refused), not
// answered the fallback, because the gateway stops, answering what it has,
// before the worker does. Run then returns nil.
func TestShutdownDecidesInFlightCallbacks(t *testing.T) {
	s := start(t, testConfig(), Options{Role: "all"})
	deny := testConfig().JoinGroup.DenyRefusal.ErrCode
	if got := s.join(t, "g1", "mallory"); got != deny {
		t.Fatalf("mallory before shutdown: errCode %d, want %d", got, deny)
	}

	conn, err := net.Dial("tcp", s.GatewayAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := callback.IMServerJoinGroup("g1", "mallory", "")
	head := fmt.Sprintf("POST /%s HTTP/1.1\r\nHost: joingate\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n\r\n",
		callback.JoinGroupCommand, len(body))
	if _, err := io.WriteString(conn, head+body[:10]); err != nil {
		t.Fatal(err)
	}
	s.cancel()
	// The gateway has begun to stop when it takes no new connection.
	if !testenv.Eventually(5*time.Second, func() bool {
		c, err := net.Dial("tcp", s.GatewayAddr())
		if err == nil {
			c.Close()
		}
		return err != nil
	}) {
		t.Fatal("the gateway still takes connections after shutdown began")
	}
	if _, err := io.WriteString(conn, body[10:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the in-flight callback got no answer: %v", err)
	}
	if got := errCode(t, resp); got != deny {
		t.Fatalf("in-flight callback of mallory: errCode %d, want %d (decided, not the fallback)", got, deny)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if fb := s.logs.Lines("fallback"); len(fb) > 0 {
		t.Fatalf("fallbacks during shutdown: %q", fb)
	}
}

// A component that fails stops the process: Run returns its error after
// stopping the others. The one failing here is the reload watcher, whose
// config file's directory is gone by the time Run starts it.
func TestComponentFailureStopsTheProcess(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "joingate.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("log:\n  level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log, logs := testenv.NewLogger(t)
	a, err := New(testConfig(), Options{Role: "all", ConfigPath: path, Load: func() (config.Config, error) { return config.Load(path, nil, nil) }, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "reload:") {
			t.Fatalf("Run = %v, want the reload watcher's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after a component failed")
	}
	if len(logs.Lines("a component failed, shutting down")) != 1 {
		t.Fatal("no log line says why the process stopped")
	}
}

// Start-up warns about a Redis clock more than maxClockOffset away, ahead
// or behind, and says nothing when it is close or Redis does not answer.
func TestCheckClock(t *testing.T) {
	for _, c := range []struct {
		offset time.Duration
		err    error
		warn   bool
	}{
		{10 * time.Millisecond, nil, false},
		{-maxClockOffset, nil, false},
		{maxClockOffset + time.Millisecond, nil, true},
		{-300 * time.Millisecond, nil, true},
		{time.Hour, errors.New("redis down"), false},
	} {
		var buf bytes.Buffer
		checkClock(func(context.Context) (time.Duration, error) { return c.offset, c.err }, time.Second, slog.New(slog.NewTextHandler(&buf, nil)))
		warned := strings.Contains(buf.String(), "redis clock differs")
		if warned != c.warn {
			t.Errorf("offset %s, error %v: warned %v (%q), want %v", c.offset, c.err, warned, buf.String(), c.warn)
		}
		if warned && !strings.Contains(buf.String(), "offset="+c.offset.Round(time.Millisecond).String()) {
			t.Errorf("offset %s: the warning does not give it: %q", c.offset, buf.String())
		}
	}
}

// worker.batch_redis puts the Batcher in front of Redis, for the worker and
// the control API alike; the store decides either way, and closing it
// ends the Batcher's goroutines before the client.
func TestNewStoreBatches(t *testing.T) {
	srv := testenv.StartRedis(t)
	for _, batch := range []bool{true, false} {
		cfg := config.Default()
		cfg.Redis.URL, cfg.Worker.BatchRedis = srv.URL, batch
		st, closeStore, err := newStore(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if _, isBatcher := st.(*ratelimit.Batcher); isBatcher != batch {
			t.Fatalf("batch_redis %v: store %T", batch, st)
		}
		q := ratelimit.Query{Checks: []ratelimit.Check{{Key: fmt.Sprint("jg:batch-", batch), Limit: ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}
		var a ratelimit.Answer
		if err := st.Decide(context.Background(), &q, &a); err != nil || !a.Admitted(&q) {
			t.Fatalf("batch_redis %v: decision %+v, %v", batch, a, err)
		}
		closeStore()
	}
}

// The reload wiring: a change of the file applies the new policy at once
// and the log names the keys it changed and why; a key that needs a
// restart is named as such; a reload asked for (SIGHUP in main) reloads.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	const base = `listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
join_group:
  limits:
    - {name: per-applicant, key: applicant, limit: 1, period: 1h, burst: 1}
`
	write := func(content string) { // whole, as an editor saves: one change
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write(base)
	load := func() (config.Config, error) { return config.Load(path, nil, nil) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	hup := make(chan struct{})
	s := start(t, cfg, Options{Role: "all", ConfigPath: path, Load: load, Reload: hup})
	if !testenv.Eventually(10*time.Second, func() bool { return len(s.logs.Lines("watching config file")) == 1 }) {
		t.Fatal("the config file is not watched")
	}
	limited := cfg.JoinGroup.Limits[0].ErrCode
	if a, b := s.join(t, "g1", "alice"), s.join(t, "g1", "alice"); a != 0 || b != limited {
		t.Fatalf("alice twice: errCodes %d, %d; want 0, %d", a, b, limited)
	}

	write(base + "  deny_applicants: [bob]\ngateway:\n  decision_timeout: 250ms\n")
	deny := cfg.JoinGroup.DenyRefusal.ErrCode
	if !testenv.Eventually(10*time.Second, func() bool { return s.join(t, "g1", "bob") == deny }) {
		t.Fatal("the new deny list was not applied after the file changed")
	}
	// The reload is logged after it is applied.
	testenv.Eventually(10*time.Second, func() bool { return len(s.logs.Lines("config reloaded", `cause="file changed"`)) > 0 })
	if got := s.logs.Lines("config reloaded", `cause="file changed"`, "changed=[join_group.deny_applicants]"); len(got) != 1 {
		t.Fatalf("reload log lines naming the cause and the key: %q", got)
	}
	if got := s.logs.Lines("only after a restart", "keys=[gateway.decision_timeout]"); len(got) != 1 {
		t.Fatalf("lines naming the key that needs a restart: %q", got)
	}

	hup <- struct{}{}
	if !testenv.Eventually(10*time.Second, func() bool {
		return len(s.logs.Lines("config reloaded", "cause=SIGHUP", "changed=[]")) == 1
	}) {
		t.Fatal("no reload after SIGHUP")
	}
	if got := s.join(t, "g1", "bob"); got != deny {
		t.Fatalf("bob after SIGHUP: errCode %d, want %d", got, deny)
	}
}

// With Redis, a worker refuses a refused applicant again from memory; an
// operator's change through the admin API (what joingate ctl sends) is
// followed by the broadcast, so the very next callback sees it.
func TestOperatorChangeClearsRefusalMemory(t *testing.T) {
	cfg := testConfig()
	cfg.Redis.URL = testenv.StartRedis(t).URL
	cfg.AdminToken = "t0ken"
	cfg.JoinGroup.Limits = cfg.JoinGroup.Limits[:1]
	cfg.JoinGroup.Limits[0].Limit, cfg.JoinGroup.Limits[0].Burst, cfg.JoinGroup.Limits[0].Period = 1, 1, time.Hour
	s := start(t, cfg, Options{Role: "all"})
	limited := cfg.JoinGroup.Limits[0].ErrCode
	hits := func() string {
		resp, err := http.Get("http://" + s.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprint(testenv.TextValue(t, string(b), "joingate_worker_refusal_memory_hits_total"))
	}
	for i, want := range []int{0, limited, limited, limited} {
		if got := s.join(t, "g1", "alice"); got != want {
			t.Fatalf("application %d of alice: errCode %d, want %d", i+1, got, want)
		}
	}
	// The admission that took alice's one application taught the memory
	// that the next is refused: every refusal came from memory.
	if got := hits(); got != "3" {
		t.Fatalf("refusals from memory: %s, want 3", got)
	}
	req, _ := http.NewRequest(http.MethodPut, "http://"+s.AdminAddr()+"/api/v1/lists/allow_applicants/alice", nil)
	req.Header.Set("Authorization", "Bearer t0ken")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("allow add: %s", resp.Status)
	}
	if got := s.join(t, "g1", "alice"); got != 0 {
		t.Fatalf("alice after she was allow-listed: errCode %d, want 0", got)
	}
}

// A start that fails half-way (the admin port is taken) undoes what it
// started: the callback port it had bound is free again.
func TestFailedStartReleasesListeners(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig()
	cfg.Listen, cfg.AdminListen = testenv.Loopback(t), taken.Addr().String()
	if _, err := New(cfg, Options{Role: "all"}); err == nil {
		t.Fatal("New succeeded with the admin port taken")
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatalf("the callback port is still bound after the failed start: %v", err)
	}
	ln.Close()
}
