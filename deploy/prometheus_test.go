package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestPromtoolCheckConfig(t *testing.T) {
	out := runPromtool(t, "prometheus", "check", "config", "prometheus.yml")
	// check config also checks the rule files the config names: make sure
	// it found the alerts rather than an empty glob.
	if !strings.Contains(out, "Checking alerts.yml") {
		t.Errorf("promtool check config did not check alerts.yml:\n%s", out)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	out := runPromtool(t, "prometheus", "check", "rules", "alerts.yml")
	n := 0
	for _, g := range readAlerts(t).Groups {
		n += len(g.Rules)
	}
	if want := fmt.Sprintf("SUCCESS: %d rules found", n); !strings.Contains(out, want) {
		t.Errorf("promtool check rules: want %q in\n%s", want, out)
	}
}

// rulesTests is the part of prometheus/rules_test.yml that says which
// alerts are tested.
type rulesTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func TestPromtoolTestRules(t *testing.T) {
	out := runPromtool(t, "prometheus", "test", "rules", "rules_test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}

	// Every alert is tested both ways: a case where it fires and one where
	// it does not.
	var rt rulesTests
	data, err := os.ReadFile("prometheus/rules_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &rt); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rt.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("rules_test.yml tests rule files %q, want [alerts.yml]", rt.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			if !fires[r.Alert] {
				t.Errorf("alert %s: no case in rules_test.yml where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alert %s: no case in rules_test.yml where it does not fire", r.Alert)
			}
		}
	}
}

// Each alert says how bad it is and what to do, and OPERATIONS.md has a
// section for it.
func TestAlertsAreActionable(t *testing.T) {
	ops, err := os.ReadFile("OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule that is not an alert (%q): recording rules need their own checks", g.Name, r.Expr)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if !regexp.MustCompile(`^Joingate[A-Z][A-Za-z]+$`).MatchString(r.Alert) {
				t.Errorf("alert %s: name it Joingate<What>", r.Alert)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.For == "" {
				t.Errorf("alert %s: no `for`: one bad scrape would page", r.Alert)
			}
			if len(r.Annotations["summary"]) < 20 {
				t.Errorf("alert %s: summary %q too short", r.Alert, r.Annotations["summary"])
			}
			// The description is the runbook: what it means and what to do.
			if d := r.Annotations["description"]; len(d) < 150 || !regexp.MustCompile(`(?i)\b(check|add|look|fix)\b`).MatchString(d) {
				t.Errorf("alert %s: description does not say what to check or do: %q", r.Alert, d)
			}
			if !regexp.MustCompile(`(?m)^#+ .*\b` + r.Alert + `\b`).Match(ops) {
				t.Errorf("alert %s: no section (heading) for it in OPERATIONS.md", r.Alert)
			}
		}
	}
	if len(seen) == 0 {
		t.Fatal("no alert in " + alertsPath)
	}
	// And OPERATIONS.md documents no alert that does not exist.
	for _, m := range regexp.MustCompile(`(?m)^#+ .*\b(Joingate[A-Z][A-Za-z]+)\b`).FindAllSubmatch(ops, -1) {
		if !seen[string(m[1])] {
			t.Errorf("OPERATIONS.md has a section for %s, which is not in %s", m[1], alertsPath)
		}
	}
}

// The Kubernetes PrometheusRule carries the same groups as alerts.yml.
func TestPrometheusRuleMatchesAlerts(t *testing.T) {
	want := readYAML(t, alertsPath)[0].(map[string]any)["groups"]
	docs := readYAML(t, "k8s/monitoring/prometheusrule.yaml")
	if len(docs) != 1 {
		t.Fatalf("k8s/monitoring/prometheusrule.yaml: %d documents, want 1", len(docs))
	}
	doc := docs[0].(map[string]any)
	if doc["kind"] != "PrometheusRule" || doc["apiVersion"] != "monitoring.coreos.com/v1" {
		t.Fatalf("k8s/monitoring/prometheusrule.yaml is a %v %v", doc["apiVersion"], doc["kind"])
	}
	got := doc["spec"].(map[string]any)["groups"]
	if !reflect.DeepEqual(got, want) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(want)
		t.Errorf("k8s/monitoring/prometheusrule.yaml spec.groups differ from %s; regenerate it:\n"+
			"sed -n '/^groups:/,$p' deploy/prometheus/alerts.yml | sed 's/^/  /; s/^  $//'\n--- got\n%s\n--- want\n%s", alertsPath, gy, wy)
	}
}

// promtool checks the syntax of every query that is not an alert rule
// (dashboard panels, the KEDA trigger): they are written into a rule file
// as recording rules.
func TestQueriesParse(t *testing.T) {
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	var where []string
	for _, q := range allQueries(t) {
		where = append(where, q.Where)
		rules = append(rules, rule{Record: fmt.Sprintf("joingate:query_%d", len(rules)), Expr: q.Expr})
	}
	file := map[string]any{"groups": []any{map[string]any{"name": "queries", "rules": rules}}}
	data, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "queries.yml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := runPromtoolErr(t, dir, "check", "rules", "queries.yml")
	if cmd != "" {
		// Name the query behind each joingate:query_N in the output.
		for i := len(where) - 1; i >= 0; i-- {
			cmd = strings.ReplaceAll(cmd, fmt.Sprintf("joingate:query_%d", i), where[i])
		}
		t.Fatalf("a query does not parse:\n%s", cmd)
	}
	// Each query also names at least one metric: an expression without a
	// selector checks nothing.
	for _, q := range allQueries(t) {
		sels, err := selectors(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
		} else if len(sels) == 0 {
			t.Errorf("%s: no metric in %q", q.Where, q.Expr)
		}
	}
}

// runPromtoolErr runs promtool and returns its output when it fails, ""
// when it succeeds.
func runPromtoolErr(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promTool(t, "promtool"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return ""
}
