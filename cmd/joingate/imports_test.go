package main

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The layering of joingate's packages, as a test (after pebble's
// TestForbiddenImports): each rule names the packages it applies to, the
// imports they must not have, and why. Test imports are not checked.
func TestForbiddenImports(t *testing.T) {
	const mod = "github.com/joingate/joingate/"
	rules := []struct {
		pkgs, forbidden []string // prefixes below the module; forbidden may name other modules
		why             string
		except          []string // packages the rule does not apply to
	}{
		{[]string{"pkg/"}, []string{mod + "gateway", mod + "worker", mod + "cmd/"},
			"pkg/ holds the building blocks; the components are built from them, not the other way", []string{"pkg/app"}},
		{[]string{""}, []string{mod + "pkg/app"},
			"pkg/app assembles a process; only main runs it", []string{"cmd/joingate", "pkg/app"}},
		{[]string{"gateway"}, []string{mod + "worker", mod + "pkg/policy", mod + "pkg/ratelimit", mod + "pkg/redisconn",
			"github.com/redis/go-redis"},
			"the gateway is a stateless edge: it knows the wire contract and NATS, not the decision", nil},
		{[]string{"worker"}, []string{mod + "gateway", "github.com/valyala/fasthttp"},
			"the worker knows NATS, the policy and the store, not HTTP", nil},
		{[]string{"gateway", "worker"}, []string{mod + "pkg/admin", mod + "pkg/control"},
			"the operator endpoints are wired by pkg/app; components register metrics and offer Ready", nil},
		{[]string{"pkg/callback"}, []string{mod, "github.com/"},
			"the wire contract depends on nothing but the standard library", nil},
		{[]string{"pkg/ratelimit"}, []string{mod + "pkg/policy", mod + "pkg/config"},
			"the store knows limits and keys, not the policy that builds them", nil},
		{[]string{""}, []string{mod + "pkg/testenv", mod + "pkg/ratelimit/ratelimittest"},
			"test helpers are for tests", nil},
		{[]string{"gateway", "worker"}, []string{mod + "pkg/launch", mod + "pkg/benchsuite", mod + "pkg/loadgen", mod + "pkg/reference"},
			"the components serve; starting processes and sending load are for tests and `joingate bench`", nil},
		{[]string{"pkg/launch", "pkg/promtext"}, []string{mod},
			"the process harness and the metrics reader sit below all that uses them: tests, pkg/testenv and the bench suite", nil},
		{[]string{"pkg/benchsuite", "pkg/loadgen", "pkg/reference"}, []string{mod + "pkg/config", mod + "pkg/policy", mod + "pkg/ratelimit",
			mod + "pkg/redisconn", mod + "pkg/natsconn", mod + "pkg/admin", mod + "pkg/control"},
			"the benchmarks measure joingate from outside, over HTTP and as processes, as IMServer sees it", nil},
	}

	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], mod)
		if !ok {
			continue
		}
		for _, r := range rules {
			if !hasPrefix(pkg, r.pkgs) || slices.Contains(r.except, pkg) {
				continue
			}
			for _, imp := range fields[1:] {
				if hasPrefix(imp, r.forbidden) && imp != fields[0] &&
					!strings.HasPrefix(imp, fields[0]+"/") { // its own subpackages
					t.Errorf("%s imports %s: %s", pkg, imp, r.why)
				}
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("only %d package rules applied: go list did not list the module", checked)
	}
}

func hasPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
