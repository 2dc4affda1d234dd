package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 39 {
		t.Errorf("schemaVersion %d, want 36-39 (Grafana 9.x to 11 read it)", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both needed for provisioning and links", d.UID, d.Title)
	}
	// Provisioned dashboards cannot resolve ${DS_...} inputs of an export
	// "for sharing externally": the data source is a variable instead.
	if strings.Contains(string(raw), `"__inputs"`) || regexp.MustCompile(`\$\{DS_`).Match(raw) {
		t.Error("the dashboard has export inputs (__inputs, ${DS_...}): provisioning cannot fill them; use the ${datasource} variable")
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" {
			hasDS = v.Type == "datasource" && v.Query == "prometheus"
		}
	}
	if !hasDS {
		t.Error(`no templating variable "datasource" of type datasource for prometheus`)
	}

	ids := map[int]string{}
	type rect struct {
		title          string
		x0, y0, x1, y1 int
	}
	var rects []rect
	metrics := map[string]bool{}
	quantiles := map[string]map[string]bool{} // histogram -> quantiles queried
	for _, p := range allPanels(d.Panels) {
		if prev, ok := ids[p.ID]; ok || p.ID == 0 {
			t.Errorf("panel %q: id %d not unique (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, r := range rects {
			if g.X < r.x1 && r.x0 < g.X+g.W && g.Y < r.y1 && r.y0 < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", p.Title, r.title)
			}
		}
		rects = append(rects, rect{p.Title, g.X, g.Y, g.X + g.W, g.Y + g.H})
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v, want ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: empty expr", p.Title, tg.RefID)
				continue
			}
			sels, err := selectors(grafanaVariables.Replace(tg.Expr))
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			for _, s := range sels {
				metrics[s.Name] = true
			}
			if m := regexp.MustCompile(`histogram_quantile\((0\.\d+), .*\b(\w+)_bucket\b`).FindStringSubmatch(tg.Expr); m != nil {
				if quantiles[m[2]] == nil {
					quantiles[m[2]] = map[string]bool{}
				}
				quantiles[m[2]][m[1]] = true
			}
		}
	}

	// What an operator looks for, by the metric that shows it.
	for _, m := range []string{
		"joingate_gateway_answers_total",          // answers by command
		"joingate_gateway_requests_total",         // requests by outcome
		"joingate_worker_decisions_total",         // decisions by reason
		"joingate_worker_rule_refusals_total",     // refusals by rule
		"joingate_worker_probation_members_total", // members muted on entry
		"joingate_gateway_fallbacks_total",        // fallback ratio by cause
		"joingate_worker_requests_total",          // expired requests
		"joingate_worker_store_errors_total",      // store errors
		"joingate_gateway_in_flight",              // in flight, gateways alive
		"joingate_worker_in_flight",               // in flight
		"joingate_worker_concurrency",             // workers alive, capacity
		"joingate_worker_store_breaker_state",     // breaker
		"joingate_config_reloads_total",           // reloads
		"joingate_config_last_reload_successful",  // policy in force
		"process_cpu_seconds_total",               // CPU
		"process_resident_memory_bytes",           // memory
		"go_build_info",                           // versions in a rollout
	} {
		if !metrics[m] {
			t.Errorf("no panel queries %s", m)
		}
	}
	for _, h := range []string{
		"joingate_gateway_request_duration_seconds",
		"joingate_gateway_nats_request_duration_seconds",
		"joingate_worker_decision_duration_seconds",
		"joingate_worker_store_duration_seconds",
	} {
		if !quantiles[h]["0.5"] || !quantiles[h]["0.99"] {
			t.Errorf("latency of %s: quantiles %v queried, want p50 (0.5) and p99 (0.99)", h, quantiles[h])
		}
	}
}
