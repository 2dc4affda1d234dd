// Package deploy holds no code, only the tests of the deployment artefacts
// in this directory: the Prometheus scrape config and alert rules (checked
// and unit-tested by promtool), the Grafana dashboard, the Dockerfile, the
// compose files and the Kubernetes manifests. The tests parse each artefact
// and check what a deployment would otherwise find out too late: metric
// names and labels that joingate does not export, files that a mount names
// but that do not exist, configuration that joingate would refuse at
// start-up, selectors and ports that do not match.
//
// promtool and prometheus come from Debian's prometheus package
// (apt-get install prometheus); the tests fail, never skip, without them.
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/joingate/joingate/pkg/config"
)

// promTool returns the path of a tool of Debian's prometheus package
// (promtool, prometheus), or fails the test saying how to install it.
func promTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: install Debian's prometheus package, which ships /usr/bin/%s "+
			"(apt-get install prometheus; `make test` installs it when missing)", name, name)
	}
	return path
}

// runPromtool runs promtool with args in dir and fails the test, showing
// its output, unless it exits 0. It returns the output.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promTool(t, "promtool"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// readYAML decodes every document of a YAML file into generic values.
func readYAML(t *testing.T, path string) []any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

// decodeYAML decodes a single-document YAML file into v, strictly: a key
// that v does not declare is an error, so that a misspelt field fails.
func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// portOf returns the port of a host:port listen address such as ":9090".
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := splitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return p
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, errors.New("no port")
	}
	p, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		return "", 0, err
	}
	return addr[:i], p, nil
}

// loadConfig loads a joingate configuration as `joingate <cmd> args...`
// would with the environment env (NAME=value), and checks the addresses
// that the command needs, as the binary does before it starts.
func loadConfig(cmd, path string, env []string, flags map[string]string) (config.Config, error) {
	cfg, err := config.Load(path, env, flags)
	if err != nil {
		return cfg, err
	}
	switch cmd {
	case "gateway":
		if cfg.NATS.URL == "" {
			return cfg, errors.New("gateway without nats.url")
		}
	case "worker":
		if cfg.NATS.URL == "" || cfg.Redis.URL == "" {
			return cfg, errors.New("worker without nats.url or redis.url")
		}
	case "all":
	default:
		return cfg, errors.New("unknown joingate command " + strconv.Quote(cmd))
	}
	return cfg, nil
}

// under reports whether path is inside dir (both cleaned, absolute).
func under(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
