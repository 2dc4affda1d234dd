package main

// The end-to-end test runs joingate as an operator would in distributed
// mode: a real nats-server process, a real redis-server, one `joingate
// gateway` and two `joingate worker` processes, and IMServer-like HTTP
// requests against the gateway.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/launch"
	"github.com/joingate/joingate/pkg/testenv"
)

// builds holds the binaries the end-to-end and chaos tests run: joingate
// from this package, nats-server from the module cache.
var builds = &testenv.Builds{Main: "."}

func TestMain(m *testing.M) {
	code := m.Run()
	builds.Remove()
	os.Exit(code)
}

// binaries builds joingate and nats-server once per test run and returns
// their paths.
func binaries(t *testing.T) (joingate, natsServer string) { return builds.Get(t) }

func startProcess(t *testing.T, logDir, name, bin string, args ...string) *testenv.Process {
	t.Helper()
	return testenv.StartProcess(t, logDir, name, nil, bin, args...)
}

var client = &http.Client{Timeout: 5 * time.Second}

// waitReady polls GET http://admin/readyz until it answers 200.
func waitReady(t *testing.T, p *testenv.Process, admin string) {
	t.Helper()
	testenv.WaitHTTP(t, p, "http://"+admin+"/readyz", 15*time.Second)
}

// answer is the callback response IMServer parses.
type answer struct {
	ActionCode *int    `json:"actionCode"`
	ErrCode    *int    `json:"errCode"`
	ErrMsg     *string `json:"errMsg"`
	ErrDlt     *string `json:"errDlt"`
	NextCode   *int    `json:"nextCode"`
}

func (a answer) String() string {
	return fmt.Sprintf("actionCode=%d errCode=%d errMsg=%q errDlt=%q nextCode=%d", *a.ActionCode, *a.ErrCode, *a.ErrMsg, *a.ErrDlt, *a.NextCode)
}

func (a answer) allowed() bool {
	return *a.ActionCode == 0 && *a.ErrCode == 0 && *a.NextCode == 0
}

// decodeAnswer reports whether body is exactly one JSON object with the
// five response fields, and nothing else.
func decodeAnswer(body []byte) (answer, error) {
	var a answer
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, fmt.Errorf("body %q is not a callback response: %v", body, err)
	}
	if dec.More() {
		return a, fmt.Errorf("body %q has data after the JSON object", body)
	}
	if a.ActionCode == nil || a.ErrCode == nil || a.ErrMsg == nil || a.ErrDlt == nil || a.NextCode == nil {
		return a, fmt.Errorf("body %q lacks a response field", body)
	}
	return a, nil
}

// postCallback POSTs body as IMServer does and returns the status and the raw
// and decoded answer. Any answer that is not JSON fails the test.
func postCallback(t *testing.T, gateway, command, opID, body string) (int, []byte, answer) {
	t.Helper()
	status, raw, a, err := tryCallback(gateway, command, opID, body)
	if err != nil {
		t.Fatalf("callback %s (operation %s): %v", command, opID, err)
	}
	return status, raw, a
}

func tryCallback(gateway, command, opID, body string) (int, []byte, answer, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+gateway+"/callbackExample/"+command, strings.NewReader(body))
	if err != nil {
		return 0, nil, answer{}, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Operationid", opID)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, answer{}, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return resp.StatusCode, raw, answer{}, fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	a, err := decodeAnswer(raw)
	return resp.StatusCode, raw, a, err
}

// joinBody is the body IMServer posts, byte for byte (groupType "\u0002").
func joinBody(group, applicant string) string {
	return callback.IMServerJoinGroup(group, applicant, "hi")
}

const (
	joinCommand         = "callbackBeforeJoinGroupCommand"
	workerDecided       = `joingate_worker_requests_total{outcome="decided"}`
	gatewayDecided      = `joingate_gateway_requests_total{command="callbackBeforeJoinGroupCommand",outcome="decided"}`
	gatewayFallbacks    = `joingate_gateway_fallbacks_total{`
	gatewayNoResponders = `joingate_gateway_fallbacks_total{cause="no_responders"}`
)

func TestEndToEnd(t *testing.T) {
	joingate, natsServer := binaries(t)
	config, err := filepath.Abs("testdata/joingate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rdb := testenv.StartRedis(t)
	set := testenv.StartSet(t, launch.SetOptions{Joingate: joingate, NATSServer: natsServer, Config: config, RedisURL: rdb.URL, Workers: 2})
	gw, gwAddr, gwAdmin := set.Gateway, set.GatewayAddr, set.GatewayAdmin
	workers, workerAdmins := set.Workers, set.WorkerAdmins
	// A gateway serves no admin API, and says where it is.
	if resp, err := client.Get("http://" + gwAdmin + "/api/v1/lists/deny_applicants"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "this is a joingate gateway") {
			t.Fatalf("gateway /api/: %d %s; want 404 saying where the API is", resp.StatusCode, body)
		}
	}

	// reached counts the join-group callbacks that must reach a worker.
	reached := 0
	join := func(t *testing.T, opID, group, applicant string) answer {
		t.Helper()
		reached++
		status, _, a := postCallback(t, gwAddr, joinCommand, opID, joinBody(group, applicant))
		if status != http.StatusOK {
			t.Fatalf("%s: HTTP %d, want 200 (%s)", opID, status, a)
		}
		return a
	}

	t.Run("rate limit", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			if a := join(t, fmt.Sprintf("e2e-limit-%d", i), "g1", "u1"); !a.allowed() {
				t.Errorf("request %d of applicant u1: %s, want allowed", i, a)
			}
		}
		a := join(t, "e2e-limit-4", "g1", "u1")
		if *a.ActionCode != 0 || *a.ErrCode != 5009 || *a.ErrMsg != "slow down" || *a.NextCode != 1 || !strings.HasPrefix(*a.ErrDlt, "retry in ") {
			t.Errorf("request 4 of applicant u1: %s, want refused by per-applicant (5009 \"slow down\", errDlt \"retry in ...\")", a)
		}
	})

	t.Run("deny group", func(t *testing.T) {
		a := join(t, "e2e-closed", "closed", "u-closed")
		if *a.ActionCode != 0 || *a.ErrCode != 5002 || *a.NextCode != 1 {
			t.Errorf("join of group closed: %s, want refused with 5002", a)
		}
	})

	t.Run("groupType as the docs' number", func(t *testing.T) {
		reached++
		body := `{"callbackCommand":"callbackBeforeJoinGroupCommand","groupID":"g1","groupType":2,"applyID":"u-number","reqMessage":"","ex":"","unknownField":[1,{"a":null}]}`
		status, _, a := postCallback(t, gwAddr, joinCommand, "e2e-number", body)
		if status != http.StatusOK || !a.allowed() {
			t.Errorf("numeric groupType and an unknown field: HTTP %d %s, want 200 allowed", status, a)
		}
	})

	t.Run("malformed body", func(t *testing.T) {
		status, raw, a := postCallback(t, gwAddr, joinCommand, "e2e-malformed", `{"callbackCommand":"callbackBeforeJoinGroupCommand","groupID":`)
		if status != http.StatusBadRequest || *a.ActionCode != 1 || *a.NextCode != 0 || *a.ErrMsg == "" {
			t.Errorf("malformed body: HTTP %d %s, want 400 with actionCode 1 and an explanation", status, raw)
		}
	})

	t.Run("other command", func(t *testing.T) {
		// Allowed at the edge: it never reaches a worker.
		status, raw, a := postCallback(t, gwAddr, "callbackAfterJoinGroupCommand", "e2e-other", `{"callbackCommand":"callbackAfterJoinGroupCommand"}`)
		if status != http.StatusOK || !a.allowed() {
			t.Errorf("callbackAfterJoinGroupCommand: HTTP %d %s, want 200 allowed", status, raw)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("queue group shares the load", func(t *testing.T) {
		const n = 40
		var (
			wg     sync.WaitGroup
			failed atomic.Int32
			next   atomic.Int32
		)
		reached += n
		for range 8 {
			wg.Go(func() {
				for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
					opID := fmt.Sprintf("e2e-load-%02d", i)
					status, raw, a, err := tryCallback(gwAddr, joinCommand, opID, joinBody("g-load", fmt.Sprintf("load-%02d", i)))
					switch {
					case err != nil:
						t.Errorf("%s: %v", opID, err)
					case status != http.StatusOK || !a.allowed():
						t.Errorf("%s: HTTP %d %s, want 200 allowed", opID, status, raw)
					default:
						continue
					}
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.FailNow()
		}

		// A worker counts a decision just after replying: poll until every
		// decision the gateway got is counted.
		var counts []float64
		var sum float64
		testenv.Eventually(5*time.Second, func() bool {
			counts, sum = nil, 0
			for _, admin := range workerAdmins {
				v := testenv.TextValue(t, testenv.Scrape(t, admin), workerDecided)
				counts = append(counts, v)
				sum += v
			}
			return sum >= float64(reached)
		})
		t.Logf("decided by worker1, worker2: %v; join requests sent to workers: %d", counts, reached)
		if sum != float64(reached) {
			t.Errorf("workers decided %v (sum %v) join requests, want %d in all", counts, sum, reached)
		}
		for i, c := range counts {
			if c < 1 {
				t.Errorf("worker%d decided %v requests, want at least 1 (workers %v): the queue group does not share the load", i+1, c, counts)
			}
		}
		gm := testenv.Scrape(t, gwAdmin)
		if got := testenv.TextValue(t, gm, gatewayDecided); got != float64(reached) {
			t.Errorf("gateway counted %v decided join requests, want %d", got, reached)
		}
		if got := testenv.TextValue(t, gm, gatewayFallbacks); got != 0 {
			t.Errorf("gateway answered %v fallbacks while both workers ran, want 0", got)
		}
	})

	t.Run("operation ID reaches the worker", func(t *testing.T) {
		// Workers log each decision at debug level with IMServer's
		// Operationid, which crosses NATS as a header.
		if !testenv.Eventually(5*time.Second, func() bool {
			return strings.Contains(workers[0].Output()+workers[1].Output(), "operationID=e2e-limit-4")
		}) {
			t.Error("no worker logged operationID=e2e-limit-4")
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("fallback without workers", func(t *testing.T) {
		for _, w := range workers {
			if err := w.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill %s: %v", w.Name, err)
			}
		}
		for _, w := range workers {
			if !w.Wait(5 * time.Second) {
				t.Fatalf("%s still running 5s after SIGKILL", w.Name)
			}
		}
		// Until nats-server notices the dead connections a request may wait
		// out the decision timeout; after, there are no responders. Both
		// answer the fallback, allow.
		var lastErr error
		var noResponders float64
		attempt := 0
		ok := testenv.Eventually(10*time.Second, func() bool {
			attempt++
			opID := fmt.Sprintf("e2e-fallback-%d", attempt)
			status, raw, _, err := tryCallback(gwAddr, joinCommand, opID, joinBody("g1", "u1"))
			if err != nil {
				lastErr = err
				return false
			}
			if status != http.StatusOK || string(raw) != `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}` {
				lastErr = fmt.Errorf("%s: HTTP %d %s, want 200 and the fallback allow body", opID, status, raw)
				return false
			}
			noResponders = testenv.TextValue(t, testenv.Scrape(t, gwAdmin), gatewayNoResponders)
			return noResponders >= 1
		})
		if !ok {
			t.Fatalf("no no_responders fallback within 10s (%d attempts, %s = %v): %v", attempt, gatewayNoResponders, noResponders, lastErr)
		}
		t.Logf("no_responders fallback after %d request(s)", attempt)
		if lastErr != nil {
			t.Errorf("a request without workers was not answered the fallback: %v", lastErr)
		}
	})

	t.Run("gateway stops on SIGTERM", func(t *testing.T) {
		if err := gw.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if !gw.Wait(10 * time.Second) {
			t.Fatal("gateway still running 10s after SIGTERM")
		}
		if code := gw.Cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("gateway exited with %s, want status 0", gw.Cmd.ProcessState)
		}
	})
}

// `joingate all --redis` keeps limits in Redis, and nats.embedded_listen lets
// a worker in another process join its embedded NATS server and share the
// load and the limits.
func TestAllWithRedisAndOutsideWorker(t *testing.T) {
	joingate, _ := binaries(t)
	config, err := filepath.Abs("testdata/joingate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := t.TempDir()
	rdb := testenv.StartRedis(t)
	natsAddr, gwAddr, allAdmin, workerAdmin := testenv.Loopback(t), testenv.Loopback(t), testenv.Loopback(t), testenv.Loopback(t)

	all := testenv.StartProcess(t, logs, "all", []string{"JOINGATE_NATS_EMBEDDED_LISTEN=" + natsAddr}, joingate, "all",
		"--config", config, "--redis", rdb.URL, "--listen", gwAddr, "--admin-listen", allAdmin)
	waitReady(t, all, allAdmin)
	outside := startProcess(t, logs, "worker", joingate, "worker",
		"--config", config, "--nats", "nats://"+natsAddr, "--redis", rdb.URL, "--admin-listen", workerAdmin)
	waitReady(t, outside, workerAdmin)

	// /debug/pprof/ is unauthenticated: off unless admin_pprof turns it on.
	pprofStatus := func(admin string) int {
		resp, err := client.Get("http://" + admin + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := pprofStatus(allAdmin); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ by default: %d, want 404", code)
	}
	pprofAdmin := testenv.Loopback(t)
	// On a subject of its own: it takes no share of the callbacks below.
	profiled := testenv.StartProcess(t, logs, "worker-pprof", []string{"JOINGATE_ADMIN_PPROF=true", "JOINGATE_NATS_SUBJECT=pprof-check"}, joingate, "worker",
		"--config", config, "--nats", "nats://"+natsAddr, "--redis", rdb.URL, "--admin-listen", pprofAdmin)
	waitReady(t, profiled, pprofAdmin)
	if code := pprofStatus(pprofAdmin); code != http.StatusOK {
		t.Fatalf("/debug/pprof/ with JOINGATE_ADMIN_PPROF=true: %d, want 200", code)
	}

	// Applicant u1 gets 3 (the configured limit) whichever worker decides.
	for i := 1; i <= 4; i++ {
		_, _, a := postCallback(t, gwAddr, joinCommand, fmt.Sprint("all-", i), joinBody("g1", "u1"))
		if a.allowed() != (i <= 3) {
			t.Fatalf("request %d of u1: %s", i, a)
		}
	}
	for i := range 30 {
		if _, _, a := postCallback(t, gwAddr, joinCommand, fmt.Sprint("all-load-", i), joinBody("g2", fmt.Sprint("load-", i))); !a.allowed() {
			t.Fatalf("load request %d: %s", i, a)
		}
	}
	var inProcess, outsideCount float64
	testenv.Eventually(5*time.Second, func() bool {
		inProcess = testenv.TextValue(t, testenv.Scrape(t, allAdmin), workerDecided)
		outsideCount = testenv.TextValue(t, testenv.Scrape(t, workerAdmin), workerDecided)
		return inProcess+outsideCount == 34
	})
	if inProcess < 1 || outsideCount < 1 || inProcess+outsideCount != 34 {
		t.Fatalf("decided in process %v, by the outside worker %v; want both, 34 in all", inProcess, outsideCount)
	}
	if got := testenv.TextValue(t, testenv.Scrape(t, allAdmin), "joingate_build_info{"); got != 1 {
		t.Fatalf("joingate_build_info = %v, want one series at 1", got)
	}
	keys, err := rdb.Client.Keys(t.Context(), "joingate:*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("no joingate keys in Redis (%v): `all --redis` did not use Redis", err)
	}

	for _, p := range []*testenv.Process{outside, all} {
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if !p.Wait(10*time.Second) || p.Cmd.ProcessState.ExitCode() != 0 {
			t.Fatalf("%s did not exit 0 within 10s of SIGTERM: %v", p.Name, p.Cmd.ProcessState)
		}
	}
}

// The policy follows the config file without a restart: a change of the
// file applies, a bad file keeps the old policy and is counted, SIGHUP
// reloads.
// `joingate all` keeps its limits in a TLS-only, password-protected Redis
// through redis.tls.ca_file (the configuration reaches the client), and is
// not ready without the CA file: the server's certificate is not trusted.
func TestAllWithTLSRedis(t *testing.T) {
	joingate, _ := binaries(t)
	config, err := filepath.Abs("testdata/joingate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, _ := testenv.SelfSigned(t)
	port := testenv.StartRedisServer(t, true, "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", cert, "--tls-auth-clients", "no", "--requirepass", "tls-s3cret")
	redisURL := fmt.Sprintf("rediss://:tls-s3cret@127.0.0.1:%d", port)
	logs := t.TempDir()

	gwAddr, admin := testenv.Loopback(t), testenv.Loopback(t)
	all := testenv.StartProcess(t, logs, "all", []string{"JOINGATE_REDIS_TLS_CA_FILE=" + cert}, joingate, "all",
		"--config", config, "--redis", redisURL, "--listen", gwAddr, "--admin-listen", admin)
	waitReady(t, all, admin) // the worker's readiness pings Redis
	for i := 1; i <= 4; i++ {
		_, _, a := postCallback(t, gwAddr, joinCommand, fmt.Sprint("tls-", i), joinBody("g1", "u1"))
		if a.allowed() != (i <= 3) {
			t.Fatalf("request %d of u1 (limit 3, kept in Redis): %s", i, a)
		}
	}
	if got := testenv.TextValue(t, testenv.Scrape(t, admin), `joingate_worker_store_errors_total{call="decide",`); got != 0 {
		t.Fatalf("%v decisions failed in the store", got)
	}

	untrusted, untrustedAdmin := testenv.Loopback(t), testenv.Loopback(t)
	bad := startProcess(t, logs, "all-untrusted", joingate, "all",
		"--config", config, "--redis", redisURL, "--listen", untrusted, "--admin-listen", untrustedAdmin)
	testenv.WaitHTTP(t, bad, "http://"+untrustedAdmin+"/healthz", 15*time.Second)
	var (
		status int
		body   []byte
	)
	// Ready names the cause once the worker's first probe has failed.
	if !testenv.Eventually(10*time.Second, func() bool {
		resp, err := client.Get("http://" + untrustedAdmin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		return strings.Contains(string(body), "certificate")
	}) || status != http.StatusServiceUnavailable || !strings.Contains(string(body), "tls") {
		t.Fatalf("readyz without the CA file: %d %s; want 503 naming the cause (tls) and the certificate", status, body)
	}
	if !strings.Contains(bad.Output(), "level=ERROR") || !strings.Contains(bad.Output(), "cause=tls") {
		t.Fatalf("no ERROR line naming the cause in the log:\n%s", bad.Output())
	}
	if strings.Contains(string(body), "tls-s3cret") || strings.Contains(bad.Output(), "tls-s3cret") {
		t.Fatal("the Redis password is in readyz or the log")
	}
}

func TestReloadPolicy(t *testing.T) {
	joingate, _ := binaries(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "joingate.yaml")
	policy := func(limit int, extra string) {
		t.Helper()
		body := fmt.Sprintf("join_group:\n  limits:\n    - {name: per-applicant, key: applicant, limit: %d, period: 1h, err_code: 5009, err_msg: slow down}\n%s", limit, extra)
		if err := os.WriteFile(cfgPath+".tmp", []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfgPath+".tmp", cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	policy(1, "")
	gwAddr, admin := testenv.Loopback(t), testenv.Loopback(t)
	all := startProcess(t, t.TempDir(), "all", joingate, "all", "--config", cfgPath, "--listen", gwAddr, "--admin-listen", admin)
	waitReady(t, all, admin)
	reloads := func(result string) float64 {
		return testenv.TextValue(t, testenv.Scrape(t, admin), fmt.Sprintf(`joingate_config_reloads_total{result=%q}`, result))
	}
	allowed := func(applicant string) bool {
		t.Helper()
		_, _, a := postCallback(t, gwAddr, joinCommand, "reload", joinBody("g", applicant))
		return a.allowed()
	}
	if !allowed("u1") || allowed("u1") {
		t.Fatal("limit 1: want the first request allowed and the second refused")
	}

	// Raise the limit to 3 for everyone.
	policy(3, "")
	if !testenv.Eventually(10*time.Second, func() bool { return reloads("success") >= 1 }) {
		t.Fatalf("no successful reload after the file changed:\n%s", all.Output())
	}
	for i := 1; i <= 4; i++ {
		if allowed("u5") != (i <= 3) {
			t.Fatalf("limit 3 after reload: request %d of u5 answered wrong", i)
		}
	}

	// A bad file keeps the policy in force.
	if err := os.WriteFile(cfgPath, []byte("join_group:\n  limits: [{name: x, key: ip, limit: 1, period: 1h}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool { return reloads("failure") >= 1 }) {
		t.Fatal("a bad file was not counted as a failed reload")
	}
	if got := testenv.TextValue(t, testenv.Scrape(t, admin), "joingate_config_last_reload_successful"); got != 0 {
		t.Fatalf("last_reload_successful = %v after a bad file", got)
	}
	if !strings.Contains(all.Output(), "join_group.limits[0].key") {
		t.Fatalf("the log does not name the bad key:\n%s", all.Output())
	}
	if !allowed("u2") {
		t.Fatal("the policy was lost with the bad file")
	}

	// SIGHUP reloads the (fixed) file: deny group g now.
	before := reloads("success")
	policy(3, "  deny_groups: [g]\n")
	if !testenv.Eventually(10*time.Second, func() bool { return reloads("success") > before }) {
		t.Fatal("no reload after the file was fixed")
	}
	before = reloads("success")
	if err := all.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool { return reloads("success") > before }) {
		t.Fatal("SIGHUP did not reload")
	}
	if allowed("u3") {
		t.Fatal("deny_groups [g] not in force after reload")
	}
	if err := all.Cmd.Process.Signal(syscall.SIGTERM); err != nil || !all.Wait(10*time.Second) || all.Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("all did not stop cleanly: %v %v", err, all.Cmd.ProcessState)
	}
}

// Secrets never reach logs, metrics or answers: a run with planted secrets
// in every place joingate takes one (NATS credentials in the URL, the
// callback's Basic auth password, the admin token), driven through good and
// bad paths, and then every byte it wrote is searched for them.
func TestSecretsStayOut(t *testing.T) {
	joingate, natsServer := binaries(t)
	const (
		natsPass  = "planted-nats-pw-7Q2"
		basicPass = "planted-basic-pw-K9"
		token     = "planted-admin-token-X4"
	)
	logs := t.TempDir()
	rdb := testenv.StartRedis(t)
	natsAddr := testenv.Loopback(t)
	_, natsPort, _ := net.SplitHostPort(natsAddr)
	ns := startProcess(t, logs, "nats-server", natsServer, "-a", "127.0.0.1", "-p", natsPort, "--user", "jg", "--pass", natsPass)
	testenv.WaitNATS(t, ns, natsAddr)
	natsURL := "nats://jg:" + natsPass + "@" + natsAddr
	env := []string{
		"JOINGATE_GATEWAY_BASIC_AUTH_USERNAME=imserver",
		"JOINGATE_GATEWAY_BASIC_AUTH_PASSWORD=" + basicPass,
		"JOINGATE_ADMIN_TOKEN=" + token,
		"JOINGATE_LOG_LEVEL=debug",
	}
	gwAddr, gwAdmin, wkAdmin := testenv.Loopback(t), testenv.Loopback(t), testenv.Loopback(t)
	gw := testenv.StartProcess(t, logs, "gateway", env, joingate, "gateway", "--nats", natsURL, "--listen", gwAddr, "--admin-listen", gwAdmin)
	wk := testenv.StartProcess(t, logs, "worker", env, joingate, "worker", "--nats", natsURL, "--redis", rdb.URL, "--admin-listen", wkAdmin)
	waitReady(t, gw, gwAdmin)
	waitReady(t, wk, wkAdmin)

	// Good and bad callbacks, right and wrong credentials.
	post := func(userinfo, body string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+userinfo+gwAddr+"/callbackExample/"+joinCommand, strings.NewReader(body))
		req.Header.Set("Operationid", "secret-test")
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	post("imserver:"+basicPass+"@", joinBody("g", "u"))
	post("imserver:wrong-"+basicPass+"@", joinBody("g", "u"))
	post("", joinBody("g", "u"))
	post("imserver:"+basicPass+"@", `{"groupID":`)
	// The admin API with the right and a wrong token.
	var out, errb bytes.Buffer
	if code := run([]string{"ctl", "--admin", "http://" + wkAdmin, "--token", token, "deny", "add", "applicant", "x"}, nil, &out, &errb); code != 0 {
		t.Fatalf("ctl with the right token: %d %s", code, errb.String())
	}
	run([]string{"ctl", "--admin", "http://" + wkAdmin, "--token", token + "-wrong", "deny", "list", "applicant"}, nil, &out, &errb)
	// A process that cannot log in to NATS says why without the password.
	bad := testenv.StartProcess(t, logs, "bad-gateway", env, joingate, "gateway", "--nats", "nats://jg:wrong-"+natsPass+"@"+natsAddr,
		"--listen", testenv.Loopback(t), "--admin-listen", testenv.Loopback(t))
	if !bad.Wait(15 * time.Second) {
		t.Fatal("a gateway with a wrong NATS password kept running")
	}

	texts := map[string]string{"ctl output": out.String() + errb.String(), "gateway metrics": testenv.Scrape(t, gwAdmin), "worker metrics": testenv.Scrape(t, wkAdmin)}
	for _, p := range []*testenv.Process{gw, wk, bad} {
		texts[p.Name+" log"] = p.Output()
	}
	if !strings.Contains(texts["bad-gateway log"], "Authorization") && !strings.Contains(texts["bad-gateway log"], "authorization") {
		t.Fatalf("the failed NATS login is not explained:\n%s", texts["bad-gateway log"])
	}
	for name, text := range texts {
		for _, secret := range []string{natsPass, basicPass, token} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains the secret %q:\n%s", name, secret, text)
			}
		}
	}
}
