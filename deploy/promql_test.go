package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// A selector is one vector selector of a PromQL expression: a metric name
// and its label matchers.
type selector struct {
	Name     string
	Matchers []matcher
}

type matcher struct {
	Label, Op, Value string
}

// PromQL words that are not metric names when they stand where a metric
// name could.
var (
	aggregators = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
		"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio")
	keywords = set("and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end")
	// Followed by a parenthesised list of label names.
	labelLists = set("by", "without", "on", "ignoring", "group_left", "group_right")
)

func set(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// selectors lists the vector selectors of a PromQL expression. It is a
// lexer, not a parser: promtool checks the syntax; this finds every metric
// name and matcher, which promtool cannot check against joingate.
func selectors(expr string) ([]selector, error) {
	var out []selector
	s := []rune(expr)
	i := 0
	next := func(j int) int { // index of the next non-space rune from j
		for j < len(s) && unicode.IsSpace(s[j]) {
			j++
		}
		return j
	}
	isIdent := func(r rune, first bool) bool {
		return r == '_' || r == ':' || unicode.IsLetter(r) || (!first && unicode.IsDigit(r))
	}
	for i < len(s) {
		r := s[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case r == '"' || r == '\'' || r == '`':
			_, j, err := stringAt(s, i)
			if err != nil {
				return nil, err
			}
			i = j
		case r == '[':
			// Range or subquery: durations, Grafana variables.
			depth := 0
			for ; i < len(s); i++ {
				if s[i] == '[' {
					depth++
				} else if s[i] == ']' {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if i == len(s) {
				return nil, fmt.Errorf("unclosed [ in %q", expr)
			}
			i++
		case r == '{':
			// A selector with no name before it: {__name__="..."}.
			ms, j, err := matchersAt(s, i)
			if err != nil {
				return nil, err
			}
			sel := selector{Matchers: ms}
			for _, m := range ms {
				if m.Label == "__name__" && m.Op == "=" {
					sel.Name = m.Value
				}
			}
			if sel.Name == "" {
				return nil, fmt.Errorf("selector without a metric name in %q: name it, so that it can be checked", expr)
			}
			out = append(out, sel)
			i = j
		case unicode.IsDigit(r) || (r == '.' && i+1 < len(s) && unicode.IsDigit(s[i+1])):
			// Numbers and durations: 0.99, 5m, 1e3, 0x1f.
			for i < len(s) && (unicode.IsLetter(s[i]) || unicode.IsDigit(s[i]) || s[i] == '.' || s[i] == '_') {
				i++
			}
		case isIdent(r, true):
			j := i
			for j < len(s) && isIdent(s[j], false) {
				j++
			}
			word := string(s[i:j])
			k := next(j)
			switch {
			case labelLists[word]:
				i = j
				if k < len(s) && s[k] == '(' {
					end := strings.IndexRune(string(s[k:]), ')')
					if end < 0 {
						return nil, fmt.Errorf("unclosed label list after %s in %q", word, expr)
					}
					i = k + len([]rune(string(s[k:])[:end])) + 1
				}
			case aggregators[word], keywords[word]:
				i = j
			case k < len(s) && s[k] == '(':
				i = j // a function
			default:
				sel := selector{Name: word}
				i = j
				if k < len(s) && s[k] == '{' {
					ms, end, err := matchersAt(s, k)
					if err != nil {
						return nil, err
					}
					sel.Matchers, i = ms, end
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	return out, nil
}

// stringAt reads the PromQL string literal starting at s[i] and returns its
// value and the index after it.
func stringAt(s []rune, i int) (string, int, error) {
	q := s[i]
	j := i + 1
	for j < len(s) && s[j] != q {
		if s[j] == '\\' && q != '`' {
			j++
		}
		j++
	}
	if j >= len(s) {
		return "", 0, fmt.Errorf("unterminated string in %q", string(s))
	}
	lit := string(s[i : j+1])
	if q == '\'' {
		lit = `"` + strings.ReplaceAll(strings.ReplaceAll(lit[1:len(lit)-1], `\'`, `'`), `"`, `\"`) + `"`
	}
	v, err := strconv.Unquote(lit)
	if err != nil {
		return "", 0, fmt.Errorf("string %s: %v", lit, err)
	}
	return v, j + 1, nil
}

// matchersAt reads the label matchers between the braces at s[i].
func matchersAt(s []rune, i int) ([]matcher, int, error) {
	var ms []matcher
	i++ // {
	for {
		for i < len(s) && (unicode.IsSpace(s[i]) || s[i] == ',') {
			i++
		}
		if i >= len(s) {
			return nil, 0, fmt.Errorf("unclosed { in %q", string(s))
		}
		if s[i] == '}' {
			return ms, i + 1, nil
		}
		j := i
		for j < len(s) && (s[j] == '_' || unicode.IsLetter(s[j]) || unicode.IsDigit(s[j])) {
			j++
		}
		label := string(s[i:j])
		for j < len(s) && unicode.IsSpace(s[j]) {
			j++
		}
		k := j
		for k < len(s) && strings.ContainsRune("=!~", s[k]) {
			k++
		}
		op := string(s[j:k])
		for k < len(s) && unicode.IsSpace(s[k]) {
			k++
		}
		if label == "" || (op != "=" && op != "!=" && op != "=~" && op != "!~") || k >= len(s) {
			return nil, 0, fmt.Errorf("bad label matcher at %q", string(s[i:]))
		}
		v, end, err := stringAt(s, k)
		if err != nil {
			return nil, 0, err
		}
		ms = append(ms, matcher{label, op, v})
		i = end
	}
}

func TestSelectors(t *testing.T) {
	f := func(expr string, want ...selector) {
		t.Helper()
		got, err := selectors(expr)
		if err != nil {
			t.Fatalf("selectors(%q): %v", expr, err)
		}
		if len(got) == 0 && len(want) == 0 {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("selectors(%q):\n got %+v\nwant %+v", expr, got, want)
		}
	}
	sel := func(name string, ms ...matcher) selector { return selector{Name: name, Matchers: ms} }

	f("up", sel("up"))
	f(`rate(a_total[5m])`, sel("a_total"))
	f(`sum by (le) (rate(h_bucket{x="1"}[$__rate_interval]))`, sel("h_bucket", matcher{"x", "=", "1"}))
	f(`histogram_quantile(0.99, sum without (instance, job) (rate(h_bucket[1m])))`, sel("h_bucket"))
	f(`a / ignoring (cause) group_left () sum(b{c!="x", d=~'y|z'})`,
		sel("a"), sel("b", matcher{"c", "!=", "x"}, matcher{"d", "=~", "y|z"}))
	f(`a and on (job, instance) (b or c)`, sel("a"), sel("b"), sel("c"))
	f(`count(up{job=~"joingate-(gateway|worker)"} == 0) or vector(0)`,
		sel("up", matcher{"job", "=~", "joingate-(gateway|worker)"}))
	f(`a offset 5m > bool 0.5e3`, sel("a"))
	f(`{__name__="a", b="c"}`, sel("a", matcher{"__name__", "=", "a"}, matcher{"b", "=", "c"}))
	f(`max_over_time(a[10m:1m]) # the worst minute`, sel("a"))
	f(`label_replace(a, "dst", "$1", "src", "(.*)")`, sel("a"))
	f(`absent(a{b="}{"})`, sel("a", matcher{"b", "=", "}{"}))
	f(`sum(rate(a[5m])) by (x) / 60`, sel("a"))
	f(`vector(1)`)

	for _, bad := range []string{`a{b="c"`, `a{b}`, `{b="c"}`, `a{b="c}`, `rate(a[5m)`} {
		if got, err := selectors(bad); err == nil {
			t.Errorf("selectors(%q) = %+v, want an error", bad, got)
		}
	}
}

// A query is one PromQL expression of an artefact, named by where it is.
type query struct {
	Where string
	Expr  string
	// Panel is true for dashboard panels, which must show data whenever
	// joingate runs; alert expressions are empty while all is well.
	Panel bool
}

var stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)

// Grafana's built-in variables, as Grafana replaces them in queries.
var grafanaVariables = strings.NewReplacer(
	"${__rate_interval}", "1m", "$__rate_interval", "1m",
	"${__interval}", "15s", "$__interval", "15s",
	"${__range}", "1h", "$__range", "1h",
)

// dashboard is the part of a Grafana dashboard JSON the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasourceRef           `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		Datasource *datasourceRef `json:"datasource"`
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

const dashboardPath = "grafana/dashboards/joingate.json"

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// alertRules is deploy/prometheus/alerts.yml.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

const alertsPath = "prometheus/alerts.yml"

func readAlerts(t *testing.T) alertRules {
	t.Helper()
	var r alertRules
	decodeYAML(t, alertsPath, &r)
	return r
}

// kedaQueries are the Prometheus queries of the KEDA ScaledObject.
func kedaQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, doc := range readYAML(t, "k8s/keda/scaledobject.yaml") {
		m := doc.(map[string]any)
		spec, _ := m["spec"].(map[string]any)
		triggers, _ := spec["triggers"].([]any)
		for i, tr := range triggers {
			tm := tr.(map[string]any)
			if tm["type"] != "prometheus" {
				continue
			}
			md := tm["metadata"].(map[string]any)
			qs = append(qs, query{Where: fmt.Sprintf("k8s/keda/scaledobject.yaml trigger %d", i), Expr: md["query"].(string)})
		}
	}
	if len(qs) == 0 {
		t.Fatal("k8s/keda/scaledobject.yaml has no prometheus trigger")
	}
	return qs
}

// allQueries lists every PromQL expression of the artefacts: dashboard
// panels (Grafana variables replaced), alert rules and the KEDA trigger.
func allQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, p := range allPanels(readDashboard(t).Panels) {
		for _, tg := range p.Targets {
			qs = append(qs, query{
				Where: fmt.Sprintf("dashboard panel %q (%d) target %s", p.Title, p.ID, tg.RefID),
				Expr:  grafanaVariables.Replace(tg.Expr),
				Panel: true,
			})
		}
	}
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{Where: "alert " + r.Alert, Expr: r.Expr})
		}
	}
	qs = append(qs, kedaQueries(t)...)
	for _, q := range qs {
		if strings.Contains(stringLiteral.ReplaceAllString(q.Expr, `""`), "$") {
			t.Fatalf("%s: a variable the tests do not know how to replace: %s", q.Where, q.Expr)
		}
	}
	return qs
}
