package deploy

// No Docker engine runs where the tests run: the Dockerfile is read
// instruction by instruction and checked against the repository it builds.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/joingate/joingate/pkg/config"
)

type instruction struct {
	Cmd  string // upper case
	Args string
	Line int
}

// readDockerfile returns the instructions, continuation lines joined and
// comments dropped.
func readDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if body, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: the last instruction ends with a continuation", path)
	}
	return out
}

// execForm decodes a JSON-array instruction argument.
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.Args), &v); err != nil {
		t.Errorf("Dockerfile line %d: %s %s: want the exec (JSON array) form: %v", in.Line, in.Cmd, in.Args, err)
	}
	return v
}

func TestDockerfile(t *testing.T) {
	ins := readDockerfile(t, "Dockerfile")
	known := []string{"FROM", "WORKDIR", "COPY", "RUN", "ARG", "ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"}
	var stages [][]instruction
	for _, in := range ins {
		if !slices.Contains(known, in.Cmd) {
			t.Errorf("Dockerfile line %d: unknown instruction %s", in.Line, in.Cmd)
		}
		if in.Cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.Cmd != "ARG" {
				t.Fatalf("Dockerfile line %d: %s before FROM", in.Line, in.Cmd)
			}
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) != 2 {
		t.Fatalf("Dockerfile has %d stages, want 2 (build, run)", len(stages))
	}
	build, run := stages[0], stages[1]

	// Build stage: the Go release go.mod asks for, a static trimmed binary
	// of ./cmd/joingate.
	from := regexp.MustCompile(`^golang:(\d+\.\d+)(\S*) AS (\w+)$`).FindStringSubmatch(build[0].Args)
	if from == nil {
		t.Fatalf("Dockerfile: build stage FROM %q, want golang:<go version> AS <name>", build[0].Args)
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goLine == nil || string(goLine[1]) != from[1] {
		t.Errorf("Dockerfile builds with golang:%s, go.mod says go %s", from[1], goLine[1])
	}
	buildName := from[3]
	var output string
	for _, in := range build {
		switch in.Cmd {
		case "COPY":
			for _, src := range strings.Fields(in.Args)[:len(strings.Fields(in.Args))-1] {
				if _, err := os.Stat(filepath.Join("..", src)); err != nil {
					t.Errorf("Dockerfile line %d: COPY %s: not in the repository: %v", in.Line, src, err)
				}
			}
		case "RUN":
			if !strings.Contains(in.Args, "go build") {
				continue
			}
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version="} {
				if !strings.Contains(in.Args, want) {
					t.Errorf("Dockerfile line %d: go build without %s", in.Line, want)
				}
			}
			m := regexp.MustCompile(`-o (\S+) (\./\S+)$`).FindStringSubmatch(in.Args)
			if m == nil {
				t.Errorf("Dockerfile line %d: want `go build ... -o OUT ./PKG` at the end, got %q", in.Line, in.Args)
				continue
			}
			output = m[1]
			main, err := os.ReadFile(filepath.Join("..", m[2], "main.go"))
			if err != nil || !strings.Contains(string(main), "package main") || !regexp.MustCompile(`(?m)^var version = `).Match(main) {
				t.Errorf("Dockerfile line %d: %s is not the joingate main package with `var version` for -X main.version (%v)", in.Line, m[2], err)
			}
		}
	}
	if output == "" {
		t.Fatal("Dockerfile: the build stage has no go build")
	}

	// Run stage: a small static base, the binary, a non-root user, the
	// default ports, joingate as entry point.
	base := run[0].Args
	if base != "scratch" && !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot$`).MatchString(base) {
		t.Errorf("Dockerfile: final stage FROM %s, want scratch or distroless/static:nonroot", base)
	}
	var user, binary string
	var expose, entry, cmd []string
	for _, in := range run[1:] {
		switch in.Cmd {
		case "COPY":
			f := strings.Fields(in.Args)
			if len(f) == 3 && f[0] == "--from="+buildName && f[1] == output {
				binary = f[2]
			}
		case "USER":
			user = in.Args
		case "EXPOSE":
			expose = append(expose, strings.Fields(in.Args)...)
		case "ENTRYPOINT":
			entry = execForm(t, in)
		case "CMD":
			cmd = execForm(t, in)
		case "RUN":
			t.Errorf("Dockerfile line %d: RUN in the final stage: it has no shell", in.Line)
		}
	}
	if binary == "" {
		t.Errorf("Dockerfile: the final stage does not copy %s from stage %s", output, buildName)
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "root" || uid == "0" {
		t.Errorf("Dockerfile: USER %q, want a non-root user", user)
	}
	def := config.Default()
	for _, p := range []string{def.Listen, def.AdminListen} {
		port := strings.TrimPrefix(p, ":")
		if !slices.Contains(expose, port) {
			t.Errorf("Dockerfile: EXPOSE %v lacks %s (default %s)", expose, port, p)
		}
	}
	if !slices.Equal(entry, []string{binary}) {
		t.Errorf("Dockerfile: ENTRYPOINT %q, want [%q]", entry, binary)
	}
	if !slices.Equal(cmd, []string{"all"}) {
		t.Errorf(`Dockerfile: CMD %q, want ["all"]`, cmd)
	}
}

// The Dockerfile's own ignore file keeps out nothing the build needs.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	ignored := func(path string) bool {
		for _, p := range patterns {
			p = strings.TrimPrefix(p, "**/")
			for _, part := range []string{path, filepath.Base(path)} {
				if ok, _ := filepath.Match(p, part); ok {
					return true
				}
			}
			if strings.HasPrefix(path, p+"/") {
				return true
			}
		}
		return false
	}
	// Every Go file the binary is built from.
	var need []string
	err = filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", p)
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && rel != ".") {
			return filepath.SkipDir
		}
		if d.IsDir() && (rel == "deploy" || rel == "bin") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (rel == "go.mod" || rel == "go.sum" || (strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") && !strings.Contains(rel, "testdata/"))) {
			need = append(need, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(need) < 10 {
		t.Fatalf("found only %q to build from", need)
	}
	for _, p := range need {
		if ignored(p) {
			t.Errorf("Dockerfile.dockerignore excludes %s, which the build needs", p)
		}
	}
	for _, p := range []string{".git", "bin/joingate", "deploy/k8s/gateway.yaml", "gateway/gateway_test.go"} {
		if !ignored(p) {
			t.Errorf("Dockerfile.dockerignore sends %s to the build", p)
		}
	}
}
