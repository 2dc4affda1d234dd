package deploy

// The Kubernetes manifests are checked without a cluster: each object is
// decoded strictly into the fields this test knows (a misspelt field
// fails), then the cross references are followed: kustomizations and the
// files they list, selectors and the pod labels they must select, ports by
// name and number, the ConfigMap the pods mount and the configuration
// joingate would load from it, autoscaler and budget targets, and the
// ServiceMonitor's Services and job names.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/joingate/joingate/pkg/config"
)

const k8sDir = "k8s"

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type typeMeta struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// matches reports whether the selector selects an object with labels.
func (s labelSelector) matches(labels map[string]string) bool {
	return selects(s.MatchLabels, labels)
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false // an empty selector selects everything: never meant here
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

type kustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Namespace  string   `yaml:"namespace"`
	Resources  []string `yaml:"resources"`
	Components []string `yaml:"components"`
	Images     []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
	Patches []struct {
		Path   string `yaml:"path"`
		Patch  string `yaml:"patch"`
		Target struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"target"`
	} `yaml:"patches"`
}

type deployment struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Replicas             *int          `yaml:"replicas"`
		RevisionHistoryLimit int           `yaml:"revisionHistoryLimit"`
		Selector             labelSelector `yaml:"selector"`
		Strategy             struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
				MaxSurge       any `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int  `yaml:"terminationGracePeriodSeconds"`
	EnableServiceLinks            *bool `yaml:"enableServiceLinks"`
	SecurityContext               struct {
		RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
		RunAsUser      *int  `yaml:"runAsUser"`
		RunAsGroup     *int  `yaml:"runAsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		MaxSkew           int           `yaml:"maxSkew"`
		TopologyKey       string        `yaml:"topologyKey"`
		WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
		LabelSelector     labelSelector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom any    `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	Lifecycle      *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
			Exec    any `yaml:"exec"`
			HTTPGet any `yaml:"httpGet"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type service struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
			Protocol   string `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		MinAvailable   any           `yaml:"minAvailable"`
		MaxUnavailable any           `yaml:"maxUnavailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type hpa struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		ScaleTargetRef struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Name       string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas int `yaml:"minReplicas"`
		MaxReplicas int `yaml:"maxReplicas"`
		Metrics     []struct {
			Type     string `yaml:"type"`
			Resource struct {
				Name   string `yaml:"name"`
				Target struct {
					Type               string `yaml:"type"`
					AverageUtilization int    `yaml:"averageUtilization"`
				} `yaml:"target"`
			} `yaml:"resource"`
		} `yaml:"metrics"`
		Behavior map[string]any `yaml:"behavior"`
	} `yaml:"spec"`
}

type scaledObject struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		ScaleTargetRef struct {
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount int `yaml:"minReplicaCount"`
		MaxReplicaCount int `yaml:"maxReplicaCount"`
		PollingInterval int `yaml:"pollingInterval"`
		CooldownPeriod  int `yaml:"cooldownPeriod"`
		Triggers        []struct {
			Type       string            `yaml:"type"`
			MetricType string            `yaml:"metricType"`
			Metadata   map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

type serviceMonitor struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Selector  labelSelector `yaml:"selector"`
		Endpoints []struct {
			Port     string `yaml:"port"`
			Path     string `yaml:"path"`
			Interval string `yaml:"interval"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type configMap struct {
	typeMeta `yaml:",inline"`
	Data     map[string]string `yaml:"data"`
}

// manifests are the objects of every kustomization under k8s/, by kind.
type manifests struct {
	deployments     []deployment
	services        []service
	pdbs            []pdb
	hpas            []hpa
	scaledObjects   []scaledObject
	serviceMonitors []serviceMonitor
	configMaps      []configMap
	other           []typeMeta
	root            kustomization
}

// strictDecode decodes one YAML node into v, failing on unknown fields.
func strictDecode(n *yaml.Node, v any) error {
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func loadManifest(t *testing.T, path string, m *manifests) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var tm typeMeta
		if err := n.Decode(&tm); err != nil || tm.Kind == "" || tm.APIVersion == "" || tm.Metadata.Name == "" {
			t.Errorf("%s document %d: no apiVersion, kind or metadata.name (%v)", path, i, err)
			continue
		}
		where := fmt.Sprintf("%s: %s %s", path, tm.Kind, tm.Metadata.Name)
		decode := func(v any, apiVersion string) {
			if tm.APIVersion != apiVersion {
				t.Errorf("%s: apiVersion %s, want %s", where, tm.APIVersion, apiVersion)
			}
			if err := strictDecode(&n, v); err != nil {
				t.Errorf("%s: %v", where, err)
			}
		}
		switch tm.Kind {
		case "Deployment":
			var d deployment
			decode(&d, "apps/v1")
			m.deployments = append(m.deployments, d)
		case "Service":
			var s service
			decode(&s, "v1")
			m.services = append(m.services, s)
		case "PodDisruptionBudget":
			var p pdb
			decode(&p, "policy/v1")
			m.pdbs = append(m.pdbs, p)
		case "HorizontalPodAutoscaler":
			var h hpa
			decode(&h, "autoscaling/v2")
			m.hpas = append(m.hpas, h)
		case "ScaledObject":
			var s scaledObject
			decode(&s, "keda.sh/v1alpha1")
			m.scaledObjects = append(m.scaledObjects, s)
		case "ServiceMonitor":
			var s serviceMonitor
			decode(&s, "monitoring.coreos.com/v1")
			m.serviceMonitors = append(m.serviceMonitors, s)
		case "ConfigMap":
			var c configMap
			decode(&c, "v1")
			m.configMaps = append(m.configMaps, c)
		case "Namespace", "PrometheusRule": // PrometheusRule: TestPrometheusRuleMatchesAlerts
			m.other = append(m.other, tm)
		default:
			t.Errorf("%s: a kind this test does not check", where)
		}
	}
}

// loadKustomization reads dir's kustomization and the manifests it lists,
// and checks that it lists every YAML file of dir.
func loadKustomization(t *testing.T, dir, wantKind string, m *manifests) kustomization {
	t.Helper()
	var k kustomization
	decodeYAML(t, filepath.Join(dir, "kustomization.yaml"), &k)
	if k.Kind != wantKind {
		t.Errorf("%s/kustomization.yaml: kind %q, want %s", dir, k.Kind, wantKind)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s/kustomization.yaml: resource %s: %v", dir, r, err)
			continue
		}
		listed[filepath.Clean(p)] = true
		loadManifest(t, p, m)
	}
	for _, p := range k.Patches {
		if p.Path != "" {
			listed[filepath.Join(dir, p.Path)] = true
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() || e.Name() == "kustomization.yaml" || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			continue
		}
		if !listed[p] {
			t.Errorf("%s is not listed in %s/kustomization.yaml", p, dir)
		}
	}
	return k
}

func readK8s(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{}
	m.root = loadKustomization(t, k8sDir, "Kustomization", m)
	rootText, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Every sub-directory is a component: enabled in the root
	// kustomization, or named there in a comment as an option.
	comps := map[string]bool{}
	for _, c := range m.root.Components {
		comps[c] = true
	}
	err = filepath.WalkDir(k8sDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == k8sDir {
			return err
		}
		rel, _ := filepath.Rel(k8sDir, p)
		if !comps[rel] && !regexp.MustCompile(`(?m)^\s*#\s*-\s*`+regexp.QuoteMeta(rel)+`\s*$`).Match(rootText) {
			t.Errorf("k8s/%s is neither a component of k8s/kustomization.yaml nor offered there in a comment", rel)
		}
		loadKustomization(t, p, "Component", m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The distroless image's nonroot user.
const nonrootUID = 65532

func TestKubernetes(t *testing.T) {
	m := readK8s(t)
	if m.root.Namespace == "" {
		t.Error("k8s/kustomization.yaml sets no namespace")
	}
	cms := map[string]configMap{}
	for _, c := range m.configMaps {
		cms[c.Metadata.Name] = c
	}
	images := map[string]bool{}
	for _, im := range m.root.Images {
		images[im.Name] = true
	}
	if len(m.deployments) != 2 {
		t.Fatalf("%d Deployments, want 2 (gateway and worker)", len(m.deployments))
	}
	autoscaled := map[string]bool{}
	for _, h := range m.hpas {
		autoscaled[h.Spec.ScaleTargetRef.Name] = true
	}
	for _, s := range m.scaledObjects {
		autoscaled[s.Spec.ScaleTargetRef.Name] = true
	}

	roles := map[string]*deployment{}
	for i := range m.deployments {
		d := &m.deployments[i]
		where := "Deployment " + d.Metadata.Name
		pod := d.Spec.Template.Spec
		labels := d.Spec.Template.Metadata.Labels
		if !d.Spec.Selector.matches(labels) {
			t.Errorf("%s: selector %v does not select its pod labels %v", where, d.Spec.Selector.MatchLabels, labels)
		}
		for _, c := range pod.TopologySpreadConstraints {
			if !c.LabelSelector.matches(labels) {
				t.Errorf("%s: topology spread selector %v does not select its pods", where, c.LabelSelector.MatchLabels)
			}
		}
		if autoscaled[d.Metadata.Name] && d.Spec.Replicas != nil {
			t.Errorf("%s: sets replicas while an autoscaler owns them: every apply would reset the count", where)
		}
		sc := pod.SecurityContext
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != nonrootUID {
			t.Errorf("%s: want runAsNonRoot and runAsUser %d (the image's nonroot user)", where, nonrootUID)
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", where, len(pod.Containers))
		}
		c := pod.Containers[0]
		if name, _, _ := strings.Cut(c.Image, ":"); !images[name] {
			t.Errorf("%s: image %q is not set by the kustomization's images", where, c.Image)
		}
		if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation ||
			c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem ||
			!slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") {
			t.Errorf("%s: want no privilege escalation, a read-only root filesystem and all capabilities dropped", where)
		}
		if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
			t.Errorf("%s: want cpu and memory requests and a memory limit, got %+v", where, c.Resources)
		}

		// The configuration the container starts with.
		cfg, cmd := containerConfig(t, where, c, pod, cms)
		if cfg == nil {
			continue
		}
		roles[cmd] = d
		ports := map[string]int{}
		for _, p := range c.Ports {
			if _, dup := ports[p.Name]; dup || p.Name == "" {
				t.Errorf("%s: port name %q empty or repeated", where, p.Name)
			}
			ports[p.Name] = p.ContainerPort
		}
		admin := portOf(t, cfg.AdminListen)
		if ports["admin"] != admin {
			t.Errorf("%s: container port admin is %d, admin_listen is %s", where, ports["admin"], cfg.AdminListen)
		}
		if cmd == "gateway" && ports["callback"] != portOf(t, cfg.Listen) {
			t.Errorf("%s: container port callback is %d, listen is %s", where, ports["callback"], cfg.Listen)
		}
		for _, pr := range []struct {
			name, path string
			p          *probe
		}{{"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}} {
			if pr.p == nil || pr.p.HTTPGet == nil {
				t.Errorf("%s: no %s httpGet probe", where, pr.name)
				continue
			}
			if pr.p.HTTPGet.Path != pr.path {
				t.Errorf("%s: %s probe path %s, want %s", where, pr.name, pr.p.HTTPGet.Path, pr.path)
			}
			if port, ok := resolvePort(pr.p.HTTPGet.Port, ports); !ok || port != admin {
				t.Errorf("%s: %s probe port %v is not the admin port %d", where, pr.name, pr.p.HTTPGet.Port, admin)
			}
		}

		if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
			t.Errorf("%s: enableServiceLinks not false: Kubernetes would add JOINGATE_*-like variables for Services named joingate-*", where)
		}

		// Termination: preStop, shutdown_delay, then every drain within
		// shutdown_timeout must fit in the grace period.
		preStop := 0
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			ps := c.Lifecycle.PreStop
			if ps.Exec != nil {
				t.Errorf("%s: preStop exec: the distroless image has no shell or sleep; use the sleep action", where)
			}
			if ps.Sleep != nil {
				preStop = ps.Sleep.Seconds
			}
		}
		if cmd == "gateway" && preStop < 3 {
			t.Errorf("%s: preStop sleep %ds: a gateway needs a few seconds for endpoints to drop it before it stops accepting", where, preStop)
		}
		need := preStop + int((cfg.ShutdownDelay + cfg.ShutdownTimeout).Seconds())
		grace := 30 // Kubernetes' default
		if g := pod.TerminationGracePeriodSeconds; g != nil {
			grace = *g
		}
		if grace <= need {
			t.Errorf("%s: terminationGracePeriodSeconds %d, want more than preStop %ds + shutdown_delay %v + shutdown_timeout %v = %ds", where, grace, preStop, cfg.ShutdownDelay, cfg.ShutdownTimeout, need)
		}
	}
	gw, wk := roles["gateway"], roles["worker"]
	if gw == nil || wk == nil {
		t.Fatalf("want a gateway and a worker Deployment, got %v", slices.Collect(maps.Keys(roles)))
	}

	deploymentFor := func(where string, sel map[string]string) *deployment {
		t.Helper()
		var found []*deployment
		for i := range m.deployments {
			if selects(sel, m.deployments[i].Spec.Template.Metadata.Labels) {
				found = append(found, &m.deployments[i])
			}
		}
		if len(found) != 1 {
			t.Errorf("%s: selector %v selects %d Deployments' pods, want 1", where, sel, len(found))
			return nil
		}
		return found[0]
	}
	byName := func(where, name string) *deployment {
		t.Helper()
		for i := range m.deployments {
			if m.deployments[i].Metadata.Name == name {
				return &m.deployments[i]
			}
		}
		t.Errorf("%s: targets Deployment %q, which does not exist", where, name)
		return nil
	}

	svcPorts := map[string]map[string]bool{} // service -> port names
	for _, s := range m.services {
		where := "Service " + s.Metadata.Name
		d := deploymentFor(where, s.Spec.Selector)
		if d == nil {
			continue
		}
		cports := map[string]int{}
		for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
			cports[p.Name] = p.ContainerPort
		}
		svcPorts[s.Metadata.Name] = map[string]bool{}
		for _, p := range s.Spec.Ports {
			svcPorts[s.Metadata.Name][p.Name] = true
			if _, ok := resolvePort(p.TargetPort, cports); !ok {
				t.Errorf("%s: port %s targets %v, which is not a container port of %s", where, p.Name, p.TargetPort, d.Metadata.Name)
			}
		}
		if d == gw {
			found := false
			for _, p := range s.Spec.Ports {
				found = found || p.Port == 10006
			}
			if !found {
				t.Errorf("%s: no port 10006 for IMServer", where)
			}
		}
	}

	pdbFor := map[*deployment]bool{}
	for _, p := range m.pdbs {
		where := "PodDisruptionBudget " + p.Metadata.Name
		d := deploymentFor(where, p.Spec.Selector.MatchLabels)
		if d == nil {
			continue
		}
		pdbFor[d] = true
		if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
			t.Errorf("%s: set exactly one of minAvailable and maxUnavailable", where)
		}
		if n, ok := p.Spec.MinAvailable.(int); ok && d.Spec.Replicas != nil && n >= *d.Spec.Replicas {
			t.Errorf("%s: minAvailable %d with %d replicas: no pod could ever be evicted", where, n, *d.Spec.Replicas)
		}
	}
	for _, d := range []*deployment{gw, wk} {
		if !pdbFor[d] {
			t.Errorf("Deployment %s has no PodDisruptionBudget", d.Metadata.Name)
		}
	}

	cpuRequested := func(d *deployment) bool {
		return d.Spec.Template.Spec.Containers[0].Resources.Requests["cpu"] != ""
	}
	if len(m.hpas) != 1 || len(m.scaledObjects) != 1 {
		t.Errorf("%d HorizontalPodAutoscalers and %d ScaledObjects, want one of each", len(m.hpas), len(m.scaledObjects))
	}
	for _, h := range m.hpas {
		where := "HorizontalPodAutoscaler " + h.Metadata.Name
		ref := h.Spec.ScaleTargetRef
		d := byName(where, ref.Name)
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
			t.Errorf("%s: scaleTargetRef %+v, want an apps/v1 Deployment", where, ref)
		}
		if d != nil && d != wk {
			t.Errorf("%s scales %s, want the workers", where, d.Metadata.Name)
		}
		if h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < h.Spec.MinReplicas {
			t.Errorf("%s: replicas %d-%d", where, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		cpu := false
		for _, mt := range h.Spec.Metrics {
			cpu = cpu || (mt.Type == "Resource" && mt.Resource.Name == "cpu" && mt.Resource.Target.Type == "Utilization" && mt.Resource.Target.AverageUtilization > 0)
		}
		if !cpu || (d != nil && !cpuRequested(d)) {
			t.Errorf("%s: want a CPU utilisation target on a Deployment with CPU requests", where)
		}
	}
	for _, s := range m.scaledObjects {
		where := "ScaledObject " + s.Metadata.Name
		if d := byName(where, s.Spec.ScaleTargetRef.Name); d != nil && d != wk {
			t.Errorf("%s scales %s, want the workers", where, d.Metadata.Name)
		}
		if s.Spec.MinReplicaCount < 2 || s.Spec.MaxReplicaCount < s.Spec.MinReplicaCount {
			t.Errorf("%s: replicas %d-%d", where, s.Spec.MinReplicaCount, s.Spec.MaxReplicaCount)
		}
		prom := false
		for _, tr := range s.Spec.Triggers {
			if tr.Type == "prometheus" {
				prom = true
				if tr.Metadata["serverAddress"] == "" || tr.Metadata["query"] == "" {
					t.Errorf("%s: prometheus trigger without serverAddress or query", where)
				}
				if v, err := strconv.ParseFloat(tr.Metadata["threshold"], 64); err != nil || v <= 0 {
					t.Errorf("%s: prometheus trigger threshold %q", where, tr.Metadata["threshold"])
				}
			}
		}
		if !prom {
			t.Errorf("%s: no prometheus trigger", where)
		}
	}

	// The ServiceMonitor scrapes both Services' admin port, under job names
	// (the Service names) that the alerts expect.
	jobs := targetDownJobs(t)
	if len(m.serviceMonitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(m.serviceMonitors))
	}
	sm := m.serviceMonitors[0]
	var scraped []string
	for _, s := range m.services {
		if !sm.Spec.Selector.matches(s.Metadata.Labels) {
			continue
		}
		scraped = append(scraped, s.Metadata.Name)
		if !jobs.MatchString(s.Metadata.Name) {
			t.Errorf("ServiceMonitor scrapes Service %s: its job name does not match the alerts' %s", s.Metadata.Name, jobs)
		}
		for _, e := range sm.Spec.Endpoints {
			if !svcPorts[s.Metadata.Name][e.Port] {
				t.Errorf("ServiceMonitor endpoint port %q is not a port of Service %s", e.Port, s.Metadata.Name)
			}
			if e.Path != "" && e.Path != "/metrics" {
				t.Errorf("ServiceMonitor endpoint path %q", e.Path)
			}
		}
	}
	if len(scraped) != 2 {
		t.Errorf("ServiceMonitor selects Services %q, want the gateway's and the worker's", scraped)
	}

	// The keda component deletes the HPA it replaces.
	var keda kustomization
	decodeYAML(t, filepath.Join(k8sDir, "keda", "kustomization.yaml"), &keda)
	deletes := false
	for _, p := range keda.Patches {
		if p.Target.Kind == "HorizontalPodAutoscaler" && strings.Contains(p.Patch, "$patch: delete") {
			deletes = true
			if len(m.hpas) == 0 || p.Target.Name != m.hpas[0].Metadata.Name {
				t.Errorf("k8s/keda deletes HorizontalPodAutoscaler %q, which does not exist", p.Target.Name)
			}
		}
	}
	if !deletes {
		t.Error("k8s/keda does not delete the CPU HorizontalPodAutoscaler: two autoscalers would fight over the workers")
	}
}

// resolvePort resolves a port given by name or number against container
// ports (name to number).
func resolvePort(p any, ports map[string]int) (int, bool) {
	switch p := p.(type) {
	case string:
		n, ok := ports[p]
		return n, ok
	case int:
		for _, n := range ports {
			if n == p {
				return n, true
			}
		}
	}
	return 0, false
}

// containerConfig returns the configuration a joingate container would
// start with: its args, the ConfigMap file behind --config (mounted as a
// directory), its JOINGATE_* environment.
func containerConfig(t *testing.T, where string, c container, pod podSpec, cms map[string]configMap) (*config.Config, string) {
	t.Helper()
	if len(c.Args) == 0 {
		t.Errorf("%s: no args: the image would run `all`", where)
		return nil, ""
	}
	fs := flag.NewFlagSet(c.Args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "")
	flagValues := config.FlagValues(fs, "")
	if err := fs.Parse(c.Args[1:]); err != nil || fs.NArg() > 0 || *path == "" {
		t.Errorf("%s: args %q: want <command> --config FILE [flags] (%v)", where, c.Args, err)
		return nil, ""
	}
	var file string
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(*path) != filepath.Clean(vm.MountPath) {
			continue
		}
		if vm.SubPath != "" {
			t.Errorf("%s: the config volume is mounted with subPath: the kubelet never updates such a file", where)
		}
		if !vm.ReadOnly {
			t.Errorf("%s: the config volume is not mounted read-only", where)
		}
		for _, v := range pod.Volumes {
			if v.Name != vm.Name {
				continue
			}
			if v.ConfigMap == nil {
				t.Errorf("%s: volume %s behind --config is not a ConfigMap", where, v.Name)
				return nil, ""
			}
			cm, ok := cms[v.ConfigMap.Name]
			if !ok {
				t.Errorf("%s: volume %s: ConfigMap %q does not exist", where, v.Name, v.ConfigMap.Name)
				return nil, ""
			}
			data, ok := cm.Data[filepath.Base(*path)]
			if !ok {
				t.Errorf("%s: --config %s: ConfigMap %s has no key %s", where, *path, cm.Metadata.Name, filepath.Base(*path))
				return nil, ""
			}
			file = filepath.Join(t.TempDir(), filepath.Base(*path))
			if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if file == "" {
		t.Errorf("%s: --config %s is in no mounted volume", where, *path)
		return nil, ""
	}
	var env []string
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Errorf("%s: env %s from valueFrom: this test cannot check its value", where, e.Name)
		}
		env = append(env, e.Name+"="+e.Value)
	}
	cfg, err := loadConfig(c.Args[0], file, env, flagValues())
	if err != nil {
		t.Errorf("%s: joingate %s would not start: %v", where, c.Args[0], err)
		return nil, ""
	}
	return &cfg, c.Args[0]
}
