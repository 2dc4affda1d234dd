package config

import (
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	cfg, err := Load("", nil, nil)
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.Listen != ":10006" || cfg.Gateway.DecisionTimeout != 300*time.Millisecond || cfg.Gateway.Fallback != Allow {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	if len(cfg.JoinGroup.Limits) == 0 {
		t.Fatal("the default policy has no limits")
	}
}

func TestLoadFull(t *testing.T) {
	cfg, err := Load("testdata/full.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen:          "127.0.0.1:10007",
		AdminListen:     "",
		ShutdownTimeout: 5 * time.Second,
		Log:             Log{Level: slog.LevelDebug, Format: "json"},
		NATS:            NATS{URL: "nats://127.0.0.1:4222", Subject: "jg.prod", Queue: "deciders"},
		Redis:           Redis{URL: "redis://127.0.0.1:6379/2", Mode: "standalone", KeyPrefix: "jg:", Timeout: 100 * time.Millisecond},
		Gateway: Gateway{
			DecisionTimeout: 250 * time.Millisecond, Fallback: Deny,
			FallbackRefusal: Refusal{5100, "paused"}, MaxBodyBytes: 4096,
			ReadTimeout: 2 * time.Second, IdleTimeout: 30 * time.Second, MaxConns: 1000,
		},
		Worker: Worker{Concurrency: 32, OnStoreError: Deny, StoreErrorRefusal: Refusal{5101, "store down"}, BreakerFailures: 3, BreakerCooldown: 2 * time.Second, RefusalMemory: 5000},
		JoinGroup: JoinGroup{
			AllowApplicants: []string{"admin", "bot-1"},
			DenyApplicants:  []string{"spammer"},
			DenyGroups:      []string{"closed-group"},
			DenyRefusal:     Refusal{5200, "not allowed"},
			MaxMessageBytes: 512,
			BlockedWords:    []string{"casino"},
			MessageRefusal:  Refusal{5201, "bad message"},
			BlockedRefusal:  Refusal{5202, "bad word"},
			Limits: []Limit{
				{Name: "applicant-per-minute", Key: KeyApplicant, Limit: 5, Period: time.Minute, Burst: 10, ErrCode: 5001, ErrMsg: "too many join requests"},
				// Burst, err_code and err_msg take their defaults.
				{Name: "global", Key: KeyGlobal, Limit: 1000, Period: time.Second, Burst: 1000, ErrCode: 5001, ErrMsg: "too many join requests", Shadow: true},
			},
		},
		InviteToGroup: InviteToGroup{
			DenyInvitees:       []string{"spam-bot"},
			DenyRefusal:        Refusal{5100, "invitation not allowed"},
			MaxInvitees:        20,
			MaxInviteesRefusal: Refusal{5102, "too many users invited at once"},
			Limits: []Limit{
				// Each section has its own default refusal.
				{Name: "per-group", Key: KeyGroup, Limit: 100, Period: time.Minute, Burst: 100, ErrCode: 5101, ErrMsg: "too many invitations"},
				{Name: "per-invitee", Key: KeyInvitee, Limit: 3, Period: time.Hour, Burst: 3, ErrCode: 5301, ErrMsg: "invited too often"},
			},
		},
		MemberJoin: MemberJoin{
			AllowGroups: []string{"official"},
			DenyRefusal: Refusal{5200, "joining this group is not allowed"},
			Limits: []Limit{
				// A name may repeat across sections: each has its own counters.
				{Name: "per-group", Key: KeyMemberGroup, Limit: 1, Period: time.Minute, Burst: 1, ErrCode: 5201, ErrMsg: "too many new members", Shadow: true},
			},
			Probation: Probation{MuteFor: 10 * time.Minute, Groups: []string{"g-new"}},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Load(full.yaml)\n got %+v\nwant %+v", cfg, want)
	}
}

// TestExampleConfig keeps the documented example loadable, complete and
// true to the defaults it claims to show.
func TestExampleConfig(t *testing.T) {
	const path = "../../deploy/joingate.example.yaml"
	cfg, err := Load(path, nil, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !reflect.DeepEqual(cfg, mustDefault(t)) {
		t.Fatalf("%s does not show the defaults:\n got %+v\nwant %+v", path, cfg, mustDefault(t))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every key, and every limit field, appears as "name:" in the file.
	keys := leafKeys(reflect.TypeOf(Config{}), "")
	keys = append(keys, leafKeys(reflect.TypeOf(Limit{}), "join_group.limits[].")...)
	for _, key := range keys {
		parts := strings.Split(key, ".")
		if !strings.Contains(string(data), parts[len(parts)-1]+":") {
			t.Errorf("%s does not document %s", path, key)
		}
	}
}

func TestEmptyFileKeepsDefaults(t *testing.T) {
	cfg, err := Load("testdata/empty.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, mustDefault(t)) {
		t.Fatalf("empty file changed the defaults: %+v", cfg)
	}
}

func mustDefault(t *testing.T) Config {
	cfg, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestBadFiles(t *testing.T) {
	f := func(file string, want ...string) {
		t.Helper()
		path := filepath.Join("testdata", file)
		_, err := Load(path, nil, nil)
		if err == nil {
			t.Fatalf("Load(%s): no error", file)
		}
		for _, w := range append(want, path) {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("Load(%s) error %q does not mention %q", file, err, w)
			}
		}
	}
	f("unknown_key.yaml", "gateway.fallbak: unknown key", "line 3", "did you mean gateway.fallback?")
	f("bad_duration.yaml", "gateway.decision_timeout", "must be a duration", "line 2")
	f("bad_err_code.yaml", "join_group.limits[0].err_code", "5000-9999", "line 7")
	f("bad_rule_key.yaml", "join_group.limits[0].key", "applicant, group, applicant_group, global", `"ip"`)
	f("duplicate_key.yaml", "listen: key given twice", "line 2")
	f("bad_fallback.yaml", "gateway.fallback", "allow, deny", `"maybe"`, "line 2")
	f("timeout_too_long.yaml", "gateway.decision_timeout", "between 1ms and 900ms")
	f("store_budget_too_long.yaml", "redis.timeout", "below gateway.decision_timeout (200ms)", "got 200ms")
	f("not_yaml.yaml", "yaml")
	f("wrong_shape.yaml", "join_group.deny_groups", "must be a list")
	f("duplicate_rule.yaml", "join_group.limits[1].name", "used by another limit")
	// Each section has its own keys: an invitation has no applicant.
	f("bad_invite_key.yaml", "invite_to_group.limits[0].key", "group, invitee, global", `"applicant"`, "line 3")
	f("bad_probation.yaml", "member_join.probation.mute_for", "at least 1s", "500ms")
	f("probation_without_mute.yaml", "member_join.probation.groups", "mute_for is 0")

	if _, err := Load("testdata/missing.yaml", nil, nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("listen: ':1'\nadmin_listen: ':2'\ngateway:\n  decision_timeout: 150ms\n"), 0o644)

	env := []string{
		"PATH=/usr/bin",
		"JOINGATE_ADMIN_LISTEN=:3",
		"JOINGATE_GATEWAY_DECISION_TIMEOUT=200ms",
		"JOINGATE_JOIN_GROUP_DENY_GROUPS=g1, g2",
		"JOINGATE_JOIN_GROUP_LIMITS=[{name: env, key: group, limit: 7, period: 1h}]",
		"JOINGATE_WORKER_CONCURRENCY=9",
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	values := FlagValues(fs, "")
	if err := fs.Parse([]string{"--decision-timeout", "400ms", "--redis", "redis://h:6379"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, env, values())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":1" {
		t.Errorf("listen = %q, want the file's :1", cfg.Listen)
	}
	if cfg.AdminListen != ":3" {
		t.Errorf("admin_listen = %q, want the environment's :3", cfg.AdminListen)
	}
	if cfg.Gateway.DecisionTimeout != 400*time.Millisecond {
		t.Errorf("decision_timeout = %s, want the flag's 400ms", cfg.Gateway.DecisionTimeout)
	}
	if cfg.Redis.URL != "redis://h:6379" {
		t.Errorf("redis.url = %q, want the flag's", cfg.Redis.URL)
	}
	if !reflect.DeepEqual(cfg.JoinGroup.DenyGroups, []string{"g1", "g2"}) {
		t.Errorf("deny_groups = %q", cfg.JoinGroup.DenyGroups)
	}
	if cfg.Worker.Concurrency != 9 {
		t.Errorf("concurrency = %d", cfg.Worker.Concurrency)
	}
	want := []Limit{{Name: "env", Key: KeyGroup, Limit: 7, Period: time.Hour, Burst: 7, ErrCode: 5001, ErrMsg: "too many join requests"}}
	if !reflect.DeepEqual(cfg.JoinGroup.Limits, want) {
		t.Errorf("limits = %+v, want %+v", cfg.JoinGroup.Limits, want)
	}
}

// Kubernetes puts service-link variables of every Service in each pod; for
// Services named joingate or joingate-gateway they look like ours.
func TestServiceLinksIgnored(t *testing.T) {
	env := []string{
		"JOINGATE_PORT=tcp://10.0.0.1:10006",
		"JOINGATE_SERVICE_HOST=10.0.0.1",
		"JOINGATE_SERVICE_PORT=10006",
		"JOINGATE_SERVICE_PORT_CALLBACK=10006",
		"JOINGATE_PORT_10006_TCP=tcp://10.0.0.1:10006",
		"JOINGATE_PORT_10006_TCP_PROTO=tcp",
		"JOINGATE_PORT_10006_TCP_PORT=10006",
		"JOINGATE_PORT_10006_TCP_ADDR=10.0.0.1",
		"JOINGATE_GATEWAY_SERVICE_HOST=10.0.0.2",
		"JOINGATE_GATEWAY_PORT=tcp://10.0.0.2:10006",
		"JOINGATE_GATEWAY_PORT_9090_TCP_ADDR=10.0.0.2",
		"JOINGATE_WORKER_ADMIN_SERVICE_PORT_ADMIN=9090",
	}
	if _, err := Load("", env, nil); err != nil {
		t.Fatalf("service-link variables rejected: %v", err)
	}
}

func TestBadEnvAndFlags(t *testing.T) {
	f := func(env []string, flags map[string]string, want ...string) {
		t.Helper()
		_, err := Load("", env, flags)
		if err == nil {
			t.Fatalf("Load(env %q, flags %q): no error", env, flags)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("error %q does not mention %q", err, w)
			}
		}
	}
	f([]string{"JOINGATE_GATEWAY_DECISON_TIMEOUT=1s"}, nil, "JOINGATE_GATEWAY_DECISON_TIMEOUT", "no such configuration key", "did you mean JOINGATE_GATEWAY_DECISION_TIMEOUT?")
	f([]string{"JOINGATE_PORTS=1"}, nil, "JOINGATE_PORTS", "no such configuration key")
	f([]string{"JOINGATE_GATEWAY_DECISION_TIMEOUT=soon"}, nil, "environment JOINGATE_GATEWAY_DECISION_TIMEOUT", "must be a duration")
	f([]string{"JOINGATE_GATEWAY_FALLBACK=maybe"}, nil, "environment JOINGATE_GATEWAY_FALLBACK", "gateway.fallback")
	f([]string{"JOINGATE_WORKER_CONCURRENCY=many"}, nil, "worker.concurrency", "must be an integer")
	f(nil, map[string]string{"gateway.decision_timeout": "0s"}, "flag --decision-timeout", "gateway.decision_timeout")
	f(nil, map[string]string{"redis.url": "http://user:hunter2@host"}, "flag --redis", "redis.url")
	f(nil, map[string]string{"listen": "10006"}, "flag --listen", "host:port")
	f([]string{"JOINGATE_GATEWAY_ALLOW_CIDRS=10.0.0.0/8,not-an-ip"}, nil, "gateway.allow_cidrs[1]", `"not-an-ip"`)
	f([]string{"JOINGATE_GATEWAY_TLS_CERT_FILE=/x.pem"}, nil, "gateway.tls", "go together")
	f([]string{"JOINGATE_GATEWAY_TLS_CERT_FILE=/no/x.pem", "JOINGATE_GATEWAY_TLS_KEY_FILE=/no/k.pem"}, nil, "gateway.tls", "cannot load")
	f([]string{"JOINGATE_GATEWAY_BASIC_AUTH_PASSWORD=pw"}, nil, "gateway.basic_auth.username")
}

func TestAllowCIDRs(t *testing.T) {
	cfg, err := Load("", []string{"JOINGATE_GATEWAY_ALLOW_CIDRS=10.1.2.3/8, 192.168.1.7, ::1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.Gateway.AllowCIDRs {
		got = append(got, p.String())
	}
	if want := []string{"10.0.0.0/8", "192.168.1.7/32", "::1/128"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("allow_cidrs read as %q, want %q", got, want)
	}
}

// log.level and gateway.allow_cidrs are parsed once, by Load, from a file,
// the environment or a flag; the errors are those of any other key.
func TestParsedValues(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "typed.yaml")
	if err := os.WriteFile(path, []byte("log: {level: warn}\ngateway: {allow_cidrs: [10.1.2.3/8, 192.168.1.7, \"::ffff:10.0.0.1\"]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantNets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("10.0.0.1/32")}
	if cfg.Log.Level != slog.LevelWarn || !reflect.DeepEqual(cfg.Gateway.AllowCIDRs, wantNets) {
		t.Fatalf("read log.level %v, allow_cidrs %v; want WARN, %v", cfg.Log.Level, cfg.Gateway.AllowCIDRs, wantNets)
	}
	cfg, err = Load(path, []string{"JOINGATE_LOG_LEVEL=error", "JOINGATE_GATEWAY_ALLOW_CIDRS="}, map[string]string{"log.level": "debug"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != slog.LevelDebug || cfg.Gateway.AllowCIDRs != nil {
		t.Fatalf("read log.level %v, allow_cidrs %v; want the flag's DEBUG and none", cfg.Log.Level, cfg.Gateway.AllowCIDRs)
	}

	for _, c := range []struct {
		file  string
		env   []string
		flags map[string]string
		want  string
	}{
		{file: "testdata/bad_log_level.yaml", want: `config testdata/bad_log_level.yaml line 2: log.level: must be one of debug, info, warn, error, got "loud"`},
		{env: []string{"JOINGATE_LOG_LEVEL=INFO"}, want: `environment JOINGATE_LOG_LEVEL: log.level: must be one of debug, info, warn, error, got "INFO"`},
		{flags: map[string]string{"log.level": "info+1"}, want: `flag --log-level: log.level: must be one of debug, info, warn, error, got "info+1"`},
		{file: "testdata/bad_allow_cidrs.yaml", want: `config testdata/bad_allow_cidrs.yaml line 4: gateway.allow_cidrs[1]: must be an address or CIDR such as 10.0.0.0/8, got "not-an-ip"`},
		{env: []string{"JOINGATE_GATEWAY_ALLOW_CIDRS=10.0.0.0/8,not-an-ip"},
			want: `environment JOINGATE_GATEWAY_ALLOW_CIDRS: gateway.allow_cidrs[1]: must be an address or CIDR such as 10.0.0.0/8, got "not-an-ip"`},
		{env: []string{"JOINGATE_GATEWAY_ALLOW_CIDRS=[10.0.0.0/33]"},
			want: `environment JOINGATE_GATEWAY_ALLOW_CIDRS: gateway.allow_cidrs[0]: must be an address or CIDR such as 10.0.0.0/8, got "10.0.0.0/33"`},
	} {
		_, err := Load(c.file, c.env, c.flags)
		if err == nil || err.Error() != c.want {
			t.Errorf("Load(%q, %q, %q): %v\nwant %s", c.file, c.env, c.flags, err, c.want)
		}
	}
}

func TestSecretNotInError(t *testing.T) {
	_, err := Load("", nil, map[string]string{"redis.url": "redis://user:hunter2@host:notaport"})
	if err == nil {
		t.Fatal("bad redis URL accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

// FuzzLoad feeds arbitrary files to the loader: it must return a config or
// an error, never panic.
func FuzzLoad(f *testing.F) {
	for _, name := range []string{"full.yaml", "unknown_key.yaml", "bad_err_code.yaml", "duplicate_rule.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("join_group: {limits: [{name: a, period: -1s}]}"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path, nil, nil)
		if err == nil && cfg.Gateway.DecisionTimeout <= 0 {
			t.Fatalf("accepted a non-positive decision timeout from %q", data)
		}
	})
}

// A typo gets the key it was meant to be; a name far from every key gets
// no guess.
func TestDidYouMean(t *testing.T) {
	keys := []string{"gateway.fallback", "gateway.fallback_refusal", "gateway.decision_timeout", "listen"}
	for name, want := range map[string]string{
		"gateway.fallbak":         "; did you mean gateway.fallback?",
		"gateway.decison_timeout": "; did you mean gateway.decision_timeout?",
		"lisen":                   "; did you mean listen?",
		"ports":                   "",
		"gateway.max_conns_xyz":   "",
	} {
		if got := didYouMean(name, keys); got != want {
			t.Errorf("didYouMean(%q) = %q, want %q", name, got, want)
		}
	}
	if _, err := Load("", []string{"JOINGATE_PORTS=1"}, nil); err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("JOINGATE_PORTS: %v; want an error without a guess", err)
	}
}

// Every configuration error reads "<source>: <key>: <what is wrong>": a
// file's errors name the line in the source, environment and flag errors
// name no line.
func TestErrorFormat(t *testing.T) {
	for _, c := range []struct {
		file   string
		env    []string
		flags  map[string]string
		prefix string
	}{
		{file: "testdata/bad_duration.yaml", prefix: "config testdata/bad_duration.yaml line 2: gateway.decision_timeout: "},
		{file: "testdata/unknown_key.yaml", prefix: "config testdata/unknown_key.yaml line 3: gateway.fallbak: "},
		{file: "testdata/duplicate_key.yaml", prefix: "config testdata/duplicate_key.yaml line 2: listen: "},
		{env: []string{"JOINGATE_WORKER_CONCURRENCY=many"}, prefix: "environment JOINGATE_WORKER_CONCURRENCY: worker.concurrency: "},
		{flags: map[string]string{"gateway.decision_timeout": "soon"}, prefix: "flag --decision-timeout: gateway.decision_timeout: "},
	} {
		_, err := Load(c.file, c.env, c.flags)
		if err == nil || !strings.HasPrefix(err.Error(), c.prefix) || strings.Contains(err.Error(), "(line") {
			t.Errorf("error %q; want it to start %q, with no (line N)", err, c.prefix)
		}
	}
}
