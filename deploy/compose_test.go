package deploy

// No Docker engine runs where the tests run, so the compose files are
// checked by reading them as Compose would: services and their
// dependencies, published ports, bind mounts that must exist in the
// repository, and the joingate configuration each container would start
// with (the mounted file and the JOINGATE_* variables, loaded by joingate's
// own config package).

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/config"
)

const (
	composePath       = "docker-compose.yml"
	composeOpenIMPath = "docker-compose.openim.yml"
)

// composeVar is ${NAME}, ${NAME:-default} or ${NAME-default}; $$ is a $.
var composeVar = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}`)

// interpolate replaces compose variables with their defaults, as with an
// empty environment. A variable without a default fails the test: the file
// must work as it is.
func interpolate(t *testing.T, where, s string) string {
	t.Helper()
	out, missing := interpolateDefaults(s)
	for _, v := range missing {
		t.Errorf("%s: ${%s} has no default: the file would need a .env", where, v)
	}
	return out
}

// interpolateDefaults replaces variables with their defaults and lists
// those without one.
func interpolateDefaults(s string) (string, []string) {
	var missing []string
	out := composeVar.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := composeVar.FindStringSubmatch(m)
		if sub[2] == "" {
			missing = append(missing, sub[1])
		}
		return sub[3]
	})
	return out, missing
}

// interpolateAll interpolates every string of a decoded YAML value.
func interpolateAll(t *testing.T, where string, v any) any {
	switch v := v.(type) {
	case string:
		return interpolate(t, where, v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = interpolateAll(t, where+"."+k, x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = interpolateAll(t, fmt.Sprintf("%s[%d]", where, i), x)
		}
		return out
	}
	return v
}

type composeFile struct {
	Services map[string]map[string]any
	Volumes  map[string]any
	Networks map[string]any
}

func readCompose(t *testing.T, path string) composeFile {
	t.Helper()
	docs := readYAML(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d YAML documents, want 1", path, len(docs))
	}
	doc := interpolateAll(t, path, docs[0]).(map[string]any)
	for k := range doc {
		if !slices.Contains([]string{"name", "services", "volumes", "networks", "configs", "secrets"}, k) && !strings.HasPrefix(k, "x-") {
			t.Errorf("%s: unknown top-level key %q", path, k)
		}
	}
	c := composeFile{Services: map[string]map[string]any{}}
	svcs, _ := doc["services"].(map[string]any)
	for name, s := range svcs {
		c.Services[name], _ = s.(map[string]any)
	}
	c.Volumes, _ = doc["volumes"].(map[string]any)
	c.Networks, _ = doc["networks"].(map[string]any)
	return c
}

// strings of a compose value that is a list or a single string.
func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, fmt.Sprint(x))
		}
		return out
	}
	return nil
}

// environment of a service, as NAME=value (list or mapping form).
func environment(s map[string]any) []string {
	switch env := s["environment"].(type) {
	case []any:
		return stringList(env)
	case map[string]any:
		var out []string
		for k, v := range env {
			out = append(out, k+"="+fmt.Sprint(v))
		}
		slices.Sort(out)
		return out
	}
	return nil
}

func dependsOn(s map[string]any) map[string]string {
	out := map[string]string{}
	switch d := s["depends_on"].(type) {
	case []any:
		for _, x := range d {
			out[fmt.Sprint(x)] = "service_started"
		}
	case map[string]any:
		for k, v := range d {
			cond, _ := v.(map[string]any)["condition"].(string)
			out[k] = cond
		}
	}
	return out
}

func replicas(s map[string]any) int {
	if d, ok := s["deploy"].(map[string]any); ok {
		if n, ok := d["replicas"].(int); ok {
			return n
		}
	}
	return 1
}

// A mount is a bind mount (Source is a host path, relative to the compose
// file) or a named volume.
type mount struct {
	Source, Target string
	Bind           bool
}

func mounts(t *testing.T, name string, s map[string]any) []mount {
	t.Helper()
	var out []mount
	for _, v := range stringList(s["volumes"]) {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			t.Errorf("service %s: volume %q: want source:target[:mode]", name, v)
			continue
		}
		if len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw" {
			t.Errorf("service %s: volume %q: mode %q", name, v, parts[2])
		}
		src := parts[0]
		bind := strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/")
		out = append(out, mount{Source: src, Target: parts[1], Bind: bind})
	}
	return out
}

// hostPath maps a path inside a service's container to the repository
// file behind it, through the service's bind mounts ("" if none).
func hostPath(ms []mount, containerPath string) string {
	best, host := -1, ""
	for _, m := range ms {
		if !m.Bind {
			continue
		}
		if rel, err := filepath.Rel(m.Target, containerPath); err == nil && !strings.HasPrefix(rel, "..") && len(m.Target) > best {
			best, host = len(m.Target), filepath.Join(m.Source, rel)
		}
	}
	return host
}

// A published port: host ports (a range gives several) to a container port.
type publish struct {
	IP        string
	HostPorts []int
	Container int
}

func ports(t *testing.T, name string, s map[string]any) []publish {
	t.Helper()
	var out []publish
	for _, p := range stringList(s["ports"]) {
		spec, _, _ := strings.Cut(p, "/")
		parts := strings.Split(spec, ":")
		var ip, host, cont string
		switch len(parts) {
		case 2:
			host, cont = parts[0], parts[1]
		case 3:
			ip, host, cont = parts[0], parts[1], parts[2]
		default:
			t.Errorf("service %s: port %q: want [ip:]host:container", name, p)
			continue
		}
		c, err := strconv.Atoi(cont)
		if err != nil {
			t.Errorf("service %s: port %q: container port %q", name, p, cont)
			continue
		}
		pub := publish{IP: ip, Container: c}
		lo, hi, isRange := strings.Cut(host, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || b < a || a < 1 || b > 65535 {
			t.Errorf("service %s: port %q: host port %q", name, p, host)
			continue
		}
		for q := a; q <= b; q++ {
			pub.HostPorts = append(pub.HostPorts, q)
		}
		out = append(out, pub)
	}
	return out
}

// joingateService is a compose service that runs joingate, with the
// configuration it would start with.
type joingateService struct {
	Name     string
	Command  string
	Replicas int
	Config   config.Config
}

// loadServiceConfig loads the configuration of a joingate service as the
// binary would: flags from its command, the --config file through its
// mounts, its JOINGATE_* environment.
func loadServiceConfig(t *testing.T, name string, s map[string]any) (joingateService, error) {
	t.Helper()
	args := stringList(s["command"])
	if len(args) == 0 {
		return joingateService{}, fmt.Errorf("no command: the image would run `all`")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "")
	flagValues := config.FlagValues(fs, "")
	if err := fs.Parse(args[1:]); err != nil {
		return joingateService{}, fmt.Errorf("command %q: %v", args, err)
	}
	if fs.NArg() > 0 {
		return joingateService{}, fmt.Errorf("command %q: unexpected arguments %q", args, fs.Args())
	}
	file := ""
	if *configPath != "" {
		file = hostPath(mounts(t, name, s), *configPath)
		if file == "" {
			return joingateService{}, fmt.Errorf("--config %s is not in a bind-mounted directory", *configPath)
		}
	}
	cfg, err := loadConfig(args[0], file, environment(s), flagValues())
	if err != nil {
		return joingateService{}, fmt.Errorf("configuration (file %s, environment %q): %v", file, environment(s), err)
	}
	return joingateService{Name: name, Command: args[0], Replicas: replicas(s), Config: cfg}, nil
}

func isJoingate(s map[string]any) bool {
	img, _ := s["image"].(string)
	return strings.HasPrefix(img, "joingate:") || s["build"] != nil
}

func TestCompose(t *testing.T) {
	c := readCompose(t, composePath)
	for _, name := range []string{"nats", "redis", "gateway-1", "gateway-2", "worker", "prometheus", "grafana"} {
		if c.Services[name] == nil {
			t.Errorf("no service %q", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	hostPorts := map[int]string{}
	jg := map[string]joingateService{}
	count := map[string]int{}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		// Images pinned to a version, except joingate's own build.
		img, _ := s["image"].(string)
		if img == "" {
			t.Errorf("service %s: no image", name)
		} else if !isJoingate(s) && (!strings.Contains(img, ":") || strings.HasSuffix(img, ":latest")) {
			t.Errorf("service %s: image %q not pinned to a version", name, img)
		}
		for dep, cond := range dependsOn(s) {
			d := c.Services[dep]
			switch {
			case d == nil:
				t.Errorf("service %s depends on %q, which is not a service", name, dep)
			case cond == "service_healthy" && d["healthcheck"] == nil:
				t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			case cond != "service_started" && cond != "service_healthy" && cond != "service_completed_successfully":
				t.Errorf("service %s: depends_on %s condition %q", name, dep, cond)
			}
		}
		for _, m := range mounts(t, name, s) {
			if !m.Bind {
				if _, ok := c.Volumes[m.Source]; !ok {
					t.Errorf("service %s: volume %q is not declared under volumes:", name, m.Source)
				}
				continue
			}
			if _, err := os.Stat(m.Source); err != nil {
				t.Errorf("service %s: bind mount source %s: %v", name, m.Source, err)
			}
			if !under(absPath(t, m.Source), absPath(t, "..")) {
				t.Errorf("service %s: bind mount source %s is outside the repository", name, m.Source)
			}
		}
		for _, p := range ports(t, name, s) {
			if len(p.HostPorts) > 1 && len(p.HostPorts) < replicas(s) {
				t.Errorf("service %s: host port range %v is smaller than its %d replicas", name, p.HostPorts, replicas(s))
			}
			if len(p.HostPorts) == 1 && replicas(s) > 1 {
				t.Errorf("service %s: one host port %d for %d replicas", name, p.HostPorts[0], replicas(s))
			}
			for _, hp := range p.HostPorts {
				if prev, ok := hostPorts[hp]; ok {
					t.Errorf("host port %d published by %s and %s", hp, prev, name)
				}
				hostPorts[hp] = name
			}
		}

		if !isJoingate(s) {
			continue
		}
		if b, ok := s["build"].(map[string]any); ok {
			ctx, _ := b["context"].(string)
			df, _ := b["dockerfile"].(string)
			if _, err := os.Stat(filepath.Join(ctx, df)); err != nil || absPath(t, filepath.Join(ctx, df)) != absPath(t, "Dockerfile") || absPath(t, ctx) != absPath(t, "..") {
				t.Errorf("service %s: build context %q dockerfile %q is not deploy/Dockerfile with the repository as context", name, ctx, df)
			}
		}
		js, err := loadServiceConfig(t, name, s)
		if err != nil {
			t.Errorf("service %s: %v", name, err)
			continue
		}
		jg[name] = js
		count[js.Command] += js.Replicas
		cfg := js.Config

		// Addresses name services of this file.
		wantDeps := []string{"nats"}
		checkURL(t, name, "nats.url", cfg.NATS.URL, c, "nats", 4222)
		if js.Command == "worker" {
			wantDeps = append(wantDeps, "redis")
			checkURL(t, name, "redis.url", cfg.Redis.URL, c, "redis", 6379)
		}
		for _, d := range wantDeps {
			if _, ok := dependsOn(s)[d]; !ok {
				t.Errorf("service %s: does not depend on %s", name, d)
			}
		}
		// Published ports are joingate's listeners.
		listen, admin := portOf(t, cfg.Listen), portOf(t, cfg.AdminListen)
		publishesListen := false
		for _, p := range ports(t, name, s) {
			switch {
			case p.Container == listen && js.Command == "gateway":
				publishesListen = true
			case p.Container == admin:
				if p.IP != "127.0.0.1" {
					t.Errorf("service %s: admin port (pprof) published on %q, want 127.0.0.1 only", name, p.IP)
				}
			default:
				t.Errorf("service %s: publishes container port %d, which joingate %s does not listen on (listen %d, admin %d)", name, p.Container, js.Command, listen, admin)
			}
		}
		if js.Command == "gateway" && !publishesListen {
			t.Errorf("service %s: gateway does not publish its callback port %d", name, listen)
		}
		// Docker's stop timeout covers the shutdown: shutdown_delay, then
		// every drain within shutdown_timeout.
		grace, err := time.ParseDuration(fmt.Sprint(s["stop_grace_period"]))
		if err != nil || grace <= cfg.ShutdownDelay+cfg.ShutdownTimeout {
			t.Errorf("service %s: stop_grace_period %v, want more than shutdown_delay + shutdown_timeout (%v + %v)", name, s["stop_grace_period"], cfg.ShutdownDelay, cfg.ShutdownTimeout)
		}
	}
	if count["gateway"] != 2 || count["worker"] != 3 {
		t.Errorf("compose runs %d gateways and %d workers, want 2 and 3", count["gateway"], count["worker"])
	}
	checkComposePrometheus(t, c, jg)
	checkComposeGrafana(t, c)
}

func absPath(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// checkURL checks that a joingate address names the compose service want on
// its port.
func checkURL(t *testing.T, svc, key, raw string, c composeFile, want string, port int) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Errorf("service %s: %s %q: %v", svc, key, raw, err)
		return
	}
	if u.Hostname() != want || u.Port() != strconv.Itoa(port) || c.Services[want] == nil {
		t.Errorf("service %s: %s %q, want service %s on port %d", svc, key, raw, want, port)
	}
}

// The compose Prometheus reads prometheus/prometheus.yml (the file promtool
// checks) and scrapes every joingate service's admin port.
func checkComposePrometheus(t *testing.T, c composeFile, jg map[string]joingateService) {
	t.Helper()
	s := c.Services["prometheus"]
	var configFile string
	for _, a := range stringList(s["command"]) {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configFile = v
		}
		if strings.HasPrefix(a, "--web.listen-address") {
			t.Errorf("prometheus: --web.listen-address changes the port that Grafana's data source and the scrape config expect (9090)")
		}
	}
	host := hostPath(mounts(t, "prometheus", s), configFile)
	if filepath.Clean(host) != "prometheus/prometheus.yml" {
		t.Fatalf("prometheus: --config.file %q is %q in the repository, want prometheus/prometheus.yml", configFile, host)
	}
	if host := hostPath(mounts(t, "prometheus", s), filepath.Join(filepath.Dir(configFile), "alerts.yml")); host == "" {
		t.Error("prometheus: alerts.yml is not mounted beside prometheus.yml")
	}

	var pc struct {
		Global       map[string]any `yaml:"global"`
		RuleFiles    []string       `yaml:"rule_files"`
		ScrapeConfig []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
			DNSSDConfigs []struct {
				Names           []string `yaml:"names"`
				Type            string   `yaml:"type"`
				Port            int      `yaml:"port"`
				RefreshInterval string   `yaml:"refresh_interval"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeYAML(t, "prometheus/prometheus.yml", &pc)
	jobRegexp := targetDownJobs(t)
	scraped := map[string]string{} // service -> job
	for _, sc := range pc.ScrapeConfig {
		var targets [][2]string // service, port
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				h, p, _ := strings.Cut(tg, ":")
				targets = append(targets, [2]string{h, p})
			}
		}
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				targets = append(targets, [2]string{n, strconv.Itoa(d.Port)})
			}
		}
		for _, tg := range targets {
			if tg[0] == "localhost" {
				continue
			}
			js, ok := jg[tg[0]]
			if !ok {
				t.Errorf("prometheus job %s: target %s:%s is not a joingate service", sc.JobName, tg[0], tg[1])
				continue
			}
			if want := strconv.Itoa(portOf(t, js.Config.AdminListen)); tg[1] != want {
				t.Errorf("prometheus job %s: scrapes %s on port %s, its admin port is %s", sc.JobName, tg[0], tg[1], want)
			}
			if !jobRegexp.MatchString(sc.JobName) || !strings.HasSuffix(sc.JobName, js.Command) {
				t.Errorf("prometheus job %s scrapes %s (a %s): want job joingate-%s, which the alerts match with %s", sc.JobName, tg[0], js.Command, js.Command, jobRegexp)
			}
			scraped[tg[0]] = sc.JobName
		}
		// A service with replicas is found through DNS, not a fixed target.
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				h, _, _ := strings.Cut(tg, ":")
				if js, ok := jg[h]; ok && js.Replicas > 1 {
					t.Errorf("prometheus job %s: static target %s has %d replicas: use dns_sd_configs", sc.JobName, h, js.Replicas)
				}
			}
		}
	}
	for name := range jg {
		if scraped[name] == "" {
			t.Errorf("prometheus does not scrape joingate service %s", name)
		}
	}
}

// targetDownJobs is the job regexp of the JoingateTargetDown alert.
func targetDownJobs(t *testing.T) *regexp.Regexp {
	t.Helper()
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "JoingateTargetDown" {
				continue
			}
			sels, err := selectors(r.Expr)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sels {
				for _, m := range s.Matchers {
					if s.Name == "up" && m.Label == "job" && m.Op == "=~" {
						return regexp.MustCompile("^(?:" + m.Value + ")$")
					}
				}
			}
		}
	}
	t.Fatal(`JoingateTargetDown has no up{job=~"..."} selector`)
	return nil
}

// Grafana gets the provisioning directory, the dashboards where the
// provider looks for them, and a data source that is the compose
// Prometheus.
func checkComposeGrafana(t *testing.T, c composeFile) {
	t.Helper()
	s := c.Services["grafana"]
	ms := mounts(t, "grafana", s)
	if filepath.Clean(hostPath(ms, "/etc/grafana/provisioning")) != "grafana/provisioning" {
		t.Errorf("grafana: /etc/grafana/provisioning is %q, want grafana/provisioning", hostPath(ms, "/etc/grafana/provisioning"))
	}

	var providers struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string `yaml:"name"`
			OrgID                 int    `yaml:"orgId"`
			Folder                string `yaml:"folder"`
			Type                  string `yaml:"type"`
			DisableDeletion       bool   `yaml:"disableDeletion"`
			AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
			UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `yaml:"path"`
				FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeYAML(t, "grafana/provisioning/dashboards/joingate.yml", &providers)
	if providers.APIVersion != 1 || len(providers.Providers) != 1 || providers.Providers[0].Type != "file" {
		t.Fatalf("grafana dashboard provisioning: want one file provider (apiVersion 1), got %+v", providers)
	}
	dir := hostPath(ms, providers.Providers[0].Options.Path)
	if _, err := os.Stat(filepath.Join(dir, filepath.Base(dashboardPath))); err != nil || filepath.Clean(dir) != filepath.Dir(dashboardPath) {
		t.Errorf("grafana: the provider reads %s, which is %q in the repository, want %s", providers.Providers[0].Options.Path, dir, filepath.Dir(dashboardPath))
	}
	for _, kv := range environment(s) {
		if v, ok := strings.CutPrefix(kv, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH="); ok {
			if h := hostPath(ms, v); filepath.Clean(h) != dashboardPath {
				t.Errorf("grafana: home dashboard %s is %q in the repository, want %s", v, h, dashboardPath)
			}
		}
	}

	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string         `yaml:"name"`
			Type      string         `yaml:"type"`
			UID       string         `yaml:"uid"`
			Access    string         `yaml:"access"`
			URL       string         `yaml:"url"`
			IsDefault bool           `yaml:"isDefault"`
			Editable  bool           `yaml:"editable"`
			JSONData  map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	decodeYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || !ds.Datasources[0].IsDefault {
		t.Fatalf("grafana data sources: want one default prometheus, got %+v", ds.Datasources)
	}
	u, err := url.Parse(ds.Datasources[0].URL)
	if err != nil || c.Services[u.Hostname()] == nil || u.Hostname() != "prometheus" || u.Port() != "9090" {
		t.Errorf("grafana data source URL %q: want the compose service prometheus on 9090", ds.Datasources[0].URL)
	}
}

// The OpenIM override attaches the gateways to OpenIM's (external) network
// under one name, and keeps them on the default network where NATS is.
func TestComposeOpenIM(t *testing.T) {
	base := readCompose(t, composePath)
	o := readCompose(t, composeOpenIMPath)
	net, _ := o.Networks["openim"].(map[string]any)
	if net == nil || net["external"] != true || net["name"] == "" || net["name"] == nil {
		t.Fatalf("%s: network openim must be external with a name, got %v", composeOpenIMPath, o.Networks["openim"])
	}
	if len(o.Services) == 0 {
		t.Fatalf("%s attaches no service", composeOpenIMPath)
	}
	gateways := 0
	for name, s := range o.Services {
		b := base.Services[name]
		if b == nil {
			t.Errorf("%s: service %s is not in %s", composeOpenIMPath, name, composePath)
			continue
		}
		if args := stringList(b["command"]); len(args) == 0 || args[0] != "gateway" {
			t.Errorf("%s: service %s is not a gateway: only gateways need to be reachable from IMServer", composeOpenIMPath, name)
		}
		gateways++
		nets, _ := s["networks"].(map[string]any)
		if _, ok := nets["default"]; !ok {
			t.Errorf("%s: service %s leaves the default network, where NATS is", composeOpenIMPath, name)
		}
		onOpenIM, _ := nets["openim"].(map[string]any)
		if !slices.Contains(stringList(onOpenIM["aliases"]), "joingate") {
			t.Errorf("%s: service %s has no alias joingate on the openim network", composeOpenIMPath, name)
		}
		for k := range s {
			if k != "networks" {
				t.Errorf("%s: service %s overrides %s; the override should only attach networks", composeOpenIMPath, name, k)
			}
		}
	}
	if gateways != 2 {
		t.Errorf("%s attaches %d gateways, want both", composeOpenIMPath, gateways)
	}
	// The documented webhook URL is the alias on the gateways' callback port.
	data, err := os.ReadFile(composeOpenIMPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "url: http://joingate:10006/callbackExample") {
		t.Errorf("%s does not show the webhooks.yml url http://joingate:10006/callbackExample", composeOpenIMPath)
	}
}

func TestComposeInterpolation(t *testing.T) {
	f := func(in, want string, missing ...string) {
		t.Helper()
		got, gotMissing := interpolateDefaults(in)
		if got != want || !slices.Equal(gotMissing, missing) {
			t.Errorf("interpolateDefaults(%q) = %q, %q; want %q, %q", in, got, gotMissing, want, missing)
		}
	}
	f("a ${X:-b} c", "a b c")
	f("${X-}", "")
	f("$$HOME ${Y:-1:2}", "$HOME 1:2")
	f("plain", "plain")
	f("${NEEDED} and ${ALSO}", " and ", "NEEDED", "ALSO")
}
