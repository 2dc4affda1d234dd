package main

import (
	"bytes"
	"strings"
	"testing"
)

// runCmd runs the command line in process with an empty environment, so
// that JOINGATE_* variables of the machine running the tests change nothing.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, nil, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRunCommandLine(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  []string // environ given to run
		code int
		// Every string must appear in stdout (wantOut) or stderr (wantErr).
		wantOut []string
		wantErr []string
	}{
		{name: "no args", args: nil, code: 2, wantErr: []string{"usage: joingate <command>"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, wantErr: []string{`unknown command "frobnicate"`, "usage:"}},
		{name: "help", args: []string{"help"}, code: 0, wantOut: []string{"usage:"}},
		{name: "version", args: []string{"version"}, code: 0, wantOut: []string{"joingate "}},
		{name: "-v", args: []string{"-v"}, code: 0, wantOut: []string{"joingate "}},
		{name: "a flag the gateway does not read", args: []string{"gateway", "--redis", "redis://h"}, code: 2, wantErr: []string{"flag provided but not defined: -redis"}},
		{name: "a flag the worker does not read", args: []string{"worker", "--decision-timeout", "1s"}, code: 2, wantErr: []string{"-decision-timeout"}},
		{name: "unknown flag", args: []string{"check-config", "--no-such-flag"}, code: 2, wantErr: []string{"no-such-flag"}},
		{name: "stray argument", args: []string{"check-config", "extra"}, code: 2, wantErr: []string{"unexpected arguments"}},
		{
			name: "check-config good file", args: []string{"check-config", "--config", "testdata/joingate.yaml"},
			code: 0, wantOut: []string{"configuration OK", "1 rate limit rule(s)"},
		},
		{
			name: "check-config example config", args: []string{"check-config", "--config", "../../deploy/joingate.example.yaml"},
			code: 0, wantOut: []string{"configuration OK"},
		},
		{
			name: "check-config unknown key", args: []string{"check-config", "--config", "testdata/unknown_key.yaml"},
			code: 2, wantErr: []string{"testdata/unknown_key.yaml", "gateway.fallbak", "unknown key"},
		},
		{
			name: "check-config bad err_code", args: []string{"check-config", "--config", "testdata/bad_err_code.yaml"},
			code: 2, wantErr: []string{"testdata/bad_err_code.yaml", "join_group.limits[0].err_code", "42"},
		},
		{
			name: "check-config missing file", args: []string{"check-config", "--config", "testdata/no-such-file.yaml"},
			code: 2, wantErr: []string{"testdata/no-such-file.yaml"},
		},
		{
			name: "unknown environment variable", args: []string{"check-config"},
			env: []string{"JOINGATE_NO_SUCH_KEY=1"}, code: 2, wantErr: []string{"JOINGATE_NO_SUCH_KEY"},
		},
		{name: "gateway without nats", args: []string{"gateway"}, code: 2, wantErr: []string{"nats.url"}},
		{name: "worker without nats", args: []string{"worker", "--redis", "redis://127.0.0.1:6379"}, code: 2, wantErr: []string{"nats.url"}},
		{name: "worker without redis", args: []string{"worker", "--nats", "nats://127.0.0.1:4222"}, code: 2, wantErr: []string{"redis.url"}},
		{
			name: "embedded_listen outside all", args: []string{"gateway", "--nats", "nats://127.0.0.1:4222"},
			env:  []string{"JOINGATE_NATS_EMBEDDED_LISTEN=127.0.0.1:4222"},
			code: 2, wantErr: []string{"nats.embedded_listen"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			var out, errb bytes.Buffer
			code := run(args, tt.env, &out, &errb)
			if code != tt.code {
				t.Errorf("run(%q) = %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, tt.code, out.String(), errb.String())
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("run(%q): stdout does not contain %q:\n%s", args, w, out.String())
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("run(%q): stderr does not contain %q:\n%s", args, w, errb.String())
				}
			}
		})
	}
}

// Each command's help says what it does and lists the flags it reads, with
// their defaults, and no other; "joingate help CMD" prints the same on
// stdout.
func TestCommandHelp(t *testing.T) {
	for cmd, want := range map[string]struct{ has, hasNot []string }{
		"all":          {[]string{"embedded NATS server", "-listen", "-nats", "-redis", `(default "300ms")`}, nil},
		"gateway":      {[]string{"callback edge", "-listen", "-nats", "-decision-timeout", `(default ":10006")`}, []string{"-redis"}},
		"worker":       {[]string{"decider", "-nats", "-redis", "-admin-listen"}, []string{"  -listen string", "-decision-timeout"}},
		"check-config": {[]string{"validates", "-listen", "-redis", "-decision-timeout"}, nil},
	} {
		code, stdout, stderr := runCmd(t, cmd, "-h")
		_, helpOut, _ := runCmd(t, "help", cmd)
		if code != 0 || stdout != "" || helpOut != stderr {
			t.Fatalf("%s -h: code %d, stdout %q; help %s differs from -h:\n%s\n%s", cmd, code, stdout, cmd, helpOut, stderr)
		}
		for _, w := range want.has {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s -h does not mention %q:\n%s", cmd, w, stderr)
			}
		}
		for _, w := range append(want.hasNot, " all\n", "-nats all") { // a back-quoted word would render as the value's name
			if strings.Contains(stderr, w) {
				t.Errorf("%s -h mentions %q:\n%s", cmd, w, stderr)
			}
		}
	}
}

// The version line starts with the program name, on stdout, and nothing
// goes to stderr.
func TestVersionOutput(t *testing.T) {
	code, out, errOut := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "joingate ") || errOut != "" {
		t.Fatalf("version: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}
