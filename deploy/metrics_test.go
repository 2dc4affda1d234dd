package deploy

// The dashboard, the alert rules and the KEDA trigger name metrics and
// label values; joingate defines them. This test runs the real binary,
// drives traffic through every path (allow, refuse, bad input, fallback,
// a policy reload that fails), and checks that every metric and label value
// the artefacts name is exported, then runs every query in a real
// Prometheus scraping those processes: each must evaluate without error,
// each dashboard panel must show data, and the alerts that the traffic
// should trip must trip.

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/testenv"
)

var httpClient = &http.Client{Timeout: 5 * time.Second}

func start(t *testing.T, name string, env []string, bin string, args ...string) *testenv.Process {
	t.Helper()
	return testenv.StartProcess(t, t.TempDir(), name, env, bin, args...)
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, p *testenv.Process, url string) {
	t.Helper()
	testenv.WaitHTTP(t, p, url, 20*time.Second)
}

// buildJoingate builds the joingate binary of this checkout.
func buildJoingate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "joingate")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/joingate/joingate/cmd/joingate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// answer is a callback response as IMServer reads it.
type answer struct {
	ActionCode, ErrCode, NextCode int
	ErrMsg, ErrDlt                string
}

// call sends one request as IMServer does and decodes the JSON answer;
// any answer that is not JSON fails the test.
func call(t *testing.T, method, gateway, command, body string) (int, answer) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+gateway+"/callbackExample/"+command, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Operationid", "deploy-test")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, command, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s %s: HTTP %d, body %q is not JSON: %v", method, command, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, a
}

// joinBody is the body IMServer posts, byte for byte (groupType "\u0002").
func joinBody(group, applicant string) string {
	return callback.IMServerJoinGroup(group, applicant, "hi")
}

// scrape fetches and parses the /metrics of an admin listener.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := httpClient.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http://%s/metrics: %s", admin, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("http://%s/metrics: %v", admin, err)
	}
	return mfs
}

// value is the value of the series of mf with exactly the labels given
// (name=value pairs), or -1 when there is none.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		want := map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			want[labels[i]] = labels[i+1]
		}
		if maps.Equal(got, want) {
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return -1
}

// Metrics that Prometheus makes itself for each target.
var prometheusSynthetic = set("up", "scrape_duration_seconds", "scrape_samples_scraped",
	"scrape_samples_post_metric_relabeling", "scrape_series_added")

// Labels that Prometheus or the Prometheus Operator attach to targets.
var targetLabels = set("job", "instance", "namespace", "pod", "service", "container", "endpoint")

// checkExported fails the test for each metric of sel that no process
// exports and each label value it matches that no exported series has.
func checkExported(t *testing.T, where string, sel selector, families map[string]*dto.MetricFamily) {
	t.Helper()
	if prometheusSynthetic[sel.Name] {
		return
	}
	name := sel.Name
	mf := families[name]
	if mf == nil {
		// A histogram's or summary's series: <name>_bucket, _count, _sum.
		for suffix, types := range map[string][]dto.MetricType{
			"_bucket": {dto.MetricType_HISTOGRAM},
			"_count":  {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
			"_sum":    {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
		} {
			if base, ok := strings.CutSuffix(name, suffix); ok && families[base] != nil && slices.Contains(types, families[base].GetType()) {
				mf = families[base]
			}
		}
	}
	if mf == nil {
		t.Errorf("%s: metric %s is not exported by joingate", where, name)
		return
	}
	if mf.GetType() == dto.MetricType_HISTOGRAM && name == mf.GetName() {
		t.Errorf("%s: %s is a histogram: query %s_bucket, _count or _sum", where, name, name)
	}
	for _, m := range sel.Matchers {
		if targetLabels[m.Label] || m.Label == "__name__" || m.Label == "le" || m.Op == "!=" || m.Op == "!~" {
			continue
		}
		re, err := regexp.Compile("^(?:" + m.Value + ")$")
		if m.Op == "=" {
			re = regexp.MustCompile("^" + regexp.QuoteMeta(m.Value) + "$")
		} else if err != nil {
			t.Errorf("%s: %s{%s=~%q}: %v", where, name, m.Label, m.Value, err)
			continue
		}
		found := false
		var values []string
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == m.Label {
					values = append(values, l.GetValue())
					found = found || re.MatchString(l.GetValue())
				}
			}
		}
		if !found {
			t.Errorf("%s: no series %s{%s%s%q}; the exported values of %s are %q", where, name, m.Label, m.Op, m.Value, m.Label, values)
		}
	}
}

func TestArtefactsUseExportedMetrics(t *testing.T) {
	prometheusBin := promTool(t, "prometheus")
	bin := buildJoingate(t)

	// joingate all: gateway, worker and an embedded NATS server that a
	// second gateway joins. That gateway publishes on a subject no worker
	// listens on, so each of its join callbacks falls back (no_responders).
	// It runs with the compose configuration file (the default policy:
	// 5 joins per applicant per minute), copied so that the test can break
	// it: a --config file is what makes a process report reloads.
	policy, err := os.ReadFile("compose/joingate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(t.TempDir(), "joingate.yaml")
	if err := os.WriteFile(configFile, policy, 0o644); err != nil {
		t.Fatal(err)
	}
	natsAddr, allListen, allAdmin := testenv.Loopback(t), testenv.Loopback(t), testenv.Loopback(t)
	all := start(t, "all", []string{"JOINGATE_NATS_EMBEDDED_LISTEN=" + natsAddr},
		bin, "all", "--config", configFile, "--listen", allListen, "--admin-listen", allAdmin)
	waitHTTP(t, all, "http://"+allAdmin+"/readyz")
	gwListen, gwAdmin := testenv.Loopback(t), testenv.Loopback(t)
	gw := start(t, "gateway", []string{"JOINGATE_NATS_SUBJECT=nobody"},
		bin, "gateway", "--nats", "nats://"+natsAddr, "--listen", gwListen, "--admin-listen", gwAdmin)
	waitHTTP(t, gw, "http://"+gwAdmin+"/readyz")

	// Prometheus scrapes both from before the traffic, so that rates see it.
	prom := startPrometheus(t, prometheusBin, map[string]string{"joingate-all": allAdmin, "joingate-gateway": gwAdmin})
	prom.waitSamples(t, `min(count_over_time(up[1m])) >= 2 and min(up) == 1`)

	// allow x5, then refuse: the default policy allows 5 per applicant per minute.
	for i := 1; i <= 6; i++ {
		status, a := call(t, http.MethodPost, allListen, "callbackBeforeJoinGroupCommand", joinBody("g1", "u1"))
		allowed := status == http.StatusOK && a.ActionCode == 0 && a.ErrCode == 0 && a.NextCode == 0
		refused := status == http.StatusOK && a.ActionCode == 0 && a.ErrCode == 5001 && a.NextCode == 1
		if (i <= 5 && !allowed) || (i == 6 && !refused) {
			t.Fatalf("join %d of applicant u1: HTTP %d %+v", i, status, a)
		}
	}
	// Bad input: a malformed body, a GET.
	if status, a := call(t, http.MethodPost, allListen, "callbackBeforeJoinGroupCommand", `{"groupID":`); status != http.StatusBadRequest || a.ActionCode != 1 {
		t.Fatalf("malformed body: HTTP %d %+v, want 400 and actionCode 1", status, a)
	}
	if status, a := call(t, http.MethodGet, allListen, "callbackBeforeJoinGroupCommand", ""); status != http.StatusMethodNotAllowed || a.ActionCode != 1 {
		t.Fatalf("GET: HTTP %d %+v, want 405 and actionCode 1", status, a)
	}
	// Another callback: allowed at the edge.
	if status, a := call(t, http.MethodPost, allListen, "callbackAfterJoinGroupCommand", `{}`); status != http.StatusOK || a.ActionCode != 0 || a.NextCode != 0 {
		t.Fatalf("callbackAfterJoinGroupCommand: HTTP %d %+v, want 200 allowed", status, a)
	}
	// Fallback: no worker on the second gateway's subject.
	if status, a := call(t, http.MethodPost, gwListen, "callbackBeforeJoinGroupCommand", joinBody("g2", "u2")); status != http.StatusOK || a.ActionCode != 0 || a.NextCode != 0 {
		t.Fatalf("join through the gateway without workers: HTTP %d %+v, want 200 and the fallback (allow)", status, a)
	}

	// A policy file that does not load: the old policy stays in force.
	broken := filepath.Join(filepath.Dir(configFile), "joingate.yaml.new")
	if err := os.WriteFile(broken, append(policy, "\nno_such_key: 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, configFile); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool {
		return value(scrape(t, allAdmin), "joingate_config_last_reload_successful") == 0
	}) {
		t.Fatal("joingate_config_last_reload_successful is not 0 within 10s of writing a bad config file")
	}

	allMetrics, gwMetrics := scrape(t, allAdmin), scrape(t, gwAdmin)
	// The traffic went where it should.
	const join = "callbackBeforeJoinGroupCommand"
	for _, c := range []struct {
		mfs    map[string]*dto.MetricFamily
		want   float64
		name   string
		labels []string
	}{
		{allMetrics, 5, "joingate_gateway_answers_total", []string{"answer", "allow", "command", join}},
		{allMetrics, 1, "joingate_gateway_answers_total", []string{"answer", "refuse", "command", join}},
		{allMetrics, 6, "joingate_gateway_requests_total", []string{"command", join, "outcome", "decided"}},
		{allMetrics, 1, "joingate_gateway_requests_total", []string{"command", join, "outcome", "invalid"}},
		{allMetrics, 1, "joingate_gateway_requests_total", []string{"command", "none", "outcome", "rejected"}},
		{allMetrics, 1, "joingate_gateway_requests_total", []string{"command", "other", "outcome", "no_policy"}},
		{allMetrics, 1, "joingate_worker_rule_refusals_total", []string{"command", join, "rule", "applicant-per-minute", "mode", "enforce"}},
		{gwMetrics, 1, "joingate_gateway_fallbacks_total", []string{"cause", "no_responders"}},
		{gwMetrics, 1, "joingate_gateway_answers_total", []string{"answer", "allow", "command", join}},
		{allMetrics, 1, "joingate_config_reloads_total", []string{"result", "failure"}},
	} {
		if got := value(c.mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%q = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Worker counts come just after the reply: poll.
	if !testenv.Eventually(5*time.Second, func() bool {
		return value(scrape(t, allAdmin), "joingate_worker_requests_total", "outcome", "decided") == 6
	}) {
		t.Errorf("worker decided %v requests, want 6", value(scrape(t, allAdmin), "joingate_worker_requests_total", "outcome", "decided"))
	}
	// "Workers up" counts joingate_worker_concurrency series: a gateway
	// must not export worker metrics.
	for name := range gwMetrics {
		if strings.HasPrefix(name, "joingate_worker_") {
			t.Errorf("the gateway process exports %s: the dashboard would count it as a worker", name)
		}
	}

	families := maps.Clone(gwMetrics)
	maps.Copy(families, allMetrics)
	queries := allQueries(t)
	for _, q := range queries {
		sels, err := selectors(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
		}
		for _, s := range sels {
			checkExported(t, q.Where, s, families)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// In Prometheus: wait for a scrape after the traffic, then run every
	// query.
	prom.waitSamples(t, `sum(joingate_gateway_fallbacks_total{cause="no_responders"}) >= 1 and sum(joingate_gateway_answers_total{answer="refuse"}) >= 1 and sum(joingate_config_reloads_total{result="failure"}) >= 1`)
	results := map[string]int{}
	for _, q := range queries {
		n, err := prom.query(q.Expr)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.Where, err, q.Expr)
			continue
		}
		results[q.Where] = n
		if q.Panel && n == 0 {
			t.Errorf("%s: no data in Prometheus while joingate runs and has traffic:\n%s", q.Where, q.Expr)
		}
	}
	// What the traffic trips: no worker answers the second gateway (1 of 8
	// join callbacks falls back), one callback in 8 is malformed, the policy
	// file is broken; and what it does not: every process is up, the store
	// answers, nothing is slow or late.
	expect := map[string]bool{
		"JoingateNoResponders":          true,
		"JoingateFallbackRatioHigh":     true,
		"JoingateInvalidCallbacks":      true,
		"JoingateConfigReloadFailing":   true,
		"JoingateNoGatewayUp":           false,
		"JoingateNoWorkerUp":            false,
		"JoingateTargetDown":            false,
		"JoingateNATSUnavailable":       false,
		"JoingateGatewayLatencyHigh":    false,
		"JoingateStoreErrors":           false,
		"JoingateWorkerOutOfQueueGroup": false,
		"JoingateStoreMisconfigured":    false,
		"JoingateExpiredRequests":       false,
		"JoingateWorkerSaturated":       false,
		"JoingateConnectionsRefused":    false,
	}
	for _, q := range queries {
		if alert, ok := strings.CutPrefix(q.Where, "alert "); ok {
			if _, ok := expect[alert]; !ok {
				t.Errorf("alert %s: this test does not say whether its traffic should trip it", alert)
			}
		}
	}
	for alert, firing := range expect {
		n, ok := results["alert "+alert]
		if !ok {
			t.Errorf("alert %s: not in %s", alert, alertsPath)
		} else if (n > 0) != firing {
			t.Errorf("alert %s: expression returns %d series with live joingate metrics, want firing=%v", alert, n, firing)
		}
	}

	documentedMetrics(t, scrape(t, allAdmin))

	for _, p := range []*testenv.Process{gw, all} {
		p.Cmd.Process.Signal(syscall.SIGTERM)
		if !p.Wait(20 * time.Second) {
			t.Errorf("%s still running 20s after SIGTERM", p.Name)
		} else if !p.Cmd.ProcessState.Success() {
			t.Errorf("%s exited with %s after SIGTERM", p.Name, p.Cmd.ProcessState)
		}
	}
}

// documentedMetrics checks that the metrics table of OPERATIONS.md names
// every joingate metric a process exports, and only those.
func documentedMetrics(t *testing.T, exported map[string]*dto.MetricFamily) {
	t.Helper()
	ops, err := os.ReadFile("OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(ops), "\n## Admin endpoints and metrics\n")
	if !ok {
		t.Fatal(`OPERATIONS.md has no section "Admin endpoints and metrics"`)
	}
	table, _, _ = strings.Cut(table, "\n## ")
	documented := map[string]bool{}
	for line := range strings.SplitSeq(table, "\n") {
		if cell, _, ok := strings.Cut(strings.TrimPrefix(line, "| "), " |"); ok && strings.HasPrefix(line, "| `") {
			for _, m := range regexp.MustCompile("`(joingate_[a-z_]+)`").FindAllStringSubmatch(cell, -1) {
				documented[m[1]] = true
			}
		}
	}
	for name := range exported {
		if strings.HasPrefix(name, "joingate_") && !documented[name] {
			t.Errorf("metric %s is exported but not in OPERATIONS.md's metrics table", name)
		}
	}
	for name := range documented {
		if exported[name] == nil {
			t.Errorf("OPERATIONS.md's metrics table names %s, which joingate all does not export", name)
		}
	}
	if len(documented) < 20 {
		t.Errorf("OPERATIONS.md's metrics table names %d metrics; the table was not found whole", len(documented))
	}
}

// prometheus is a Prometheus server run by the test.
type prometheus struct {
	addr string
	proc *testenv.Process
}

// startPrometheus runs prometheus scraping each admin address (job name to
// address) every second, and waits until it answers.
func startPrometheus(t *testing.T, bin string, targets map[string]string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n")
	for _, job := range slices.Sorted(maps.Keys(targets)) {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: [%q]\n", job, targets[job])
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{addr: testenv.Loopback(t)}
	p.proc = start(t, "prometheus", nil, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr,
		"--log.level=warn")
	waitHTTP(t, p.proc, "http://"+p.addr+"/-/ready")
	return p
}

// query runs an instant query and returns the number of series (or 1 for
// a scalar) in its result.
func (p *prometheus) query(expr string) (int, error) {
	resp, err := httpClient.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Warnings  []string
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("HTTP %s: %v", resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("prometheus: %s: %s", r.ErrorType, r.Error)
	}
	if len(r.Warnings) > 0 {
		return 0, fmt.Errorf("prometheus warnings: %q", r.Warnings)
	}
	if r.Data.ResultType == "scalar" {
		return 1, nil
	}
	var series []json.RawMessage
	if err := json.Unmarshal(r.Data.Result, &series); err != nil {
		return 0, err
	}
	return len(series), nil
}

// waitSamples polls until expr has a result.
func (p *prometheus) waitSamples(t *testing.T, expr string) {
	t.Helper()
	var lastErr error
	if !testenv.Eventually(30*time.Second, func() bool {
		n, err := p.query(expr)
		lastErr = err
		return n > 0
	}) {
		t.Fatalf("prometheus: no result for %s within 30s (%v)", expr, lastErr)
	}
}
