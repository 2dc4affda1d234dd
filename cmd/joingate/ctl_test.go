package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/admin"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/control"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
)

// ctlServer serves the admin API over a memory store with the default
// policy and returns its URL.
func ctlServer(t *testing.T) string {
	t.Helper()
	cfg := config.Default()
	p, err := policy.NewSet(cfg, cfg.Redis.KeyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	s, err := admin.New("127.0.0.1:0", prometheus.NewRegistry(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	s.HandleAPI(control.Handler(ratelimit.NewMemory(), func() *policy.Set { return p }, log), "tok")
	testenv.Run(t, s.Run)
	return "http://" + s.Addr()
}

func TestCtl(t *testing.T) {
	url := ctlServer(t)
	ctl := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := runCtl(append([]string{"--admin", url}, args...), []string{"JOINGATE_ADMIN_TOKEN=tok"}, strings.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}
	f := func(wantCode int, wantOut string, args ...string) {
		t.Helper()
		code, out, errs := ctl("", args...)
		if code != wantCode || !strings.Contains(out+errs, wantOut) {
			t.Fatalf("ctl %q: exit %d, stdout %q, stderr %q; want exit %d and %q", args, code, out, errs, wantCode, wantOut)
		}
	}
	f(0, "deny_applicants: 1\ntroll\n", "deny", "add", "applicant", "troll")
	f(0, "deny_groups: 1\ng1\n", "deny", "add", "group", "g1")
	f(0, "deny_applicants: 0\n", "deny", "remove", "applicant", "troll")
	f(0, "allow_applicants: 1\nvip\n", "allow", "add", "applicant", "vip")
	f(0, "allow_applicants: 1\nvip\n", "allow", "list", "applicant")
	f(0, "5 request(s) available now", "quota", "show", "applicant-per-minute", "u1")

	// IMServer's own body: its groupType "\u0002" is shown as the number.
	body := callback.IMServerJoinGroup("g2", "u1", "hi")
	code, out, _ := ctl(body, "explain")
	if code != 0 || !strings.Contains(out, `callback: applicant "u1", group "g2" (group type 2)`) ||
		!strings.Contains(out, "decision: allow (passed)") || !strings.Contains(out, "applicant-per-minute") {
		t.Fatalf("explain from stdin: %d %q", code, out)
	}
	file := filepath.Join(t.TempDir(), "cb.json")
	os.WriteFile(file, []byte(`{"groupID":"g1","applyID":"u1"}`), 0o644)
	code, out, _ = ctl("", "explain", file)
	if code != 0 || !strings.Contains(out, "decision: refuse (deny_group)") {
		t.Fatalf("explain from a file: %d %q", code, out)
	}
	code, out, _ = ctl("", "--json", "quota", "reset", "applicant-per-minute", "u1")
	if code != 0 || !strings.Contains(out, `"reset": true`) {
		t.Fatalf("quota reset --json: %d %q", code, out)
	}

	// Every list by name; rules and explanations of the other commands.
	f(0, "invite_to_group.deny_invitees: 1\nspam-bot\n", "list", "add", "invite_to_group.deny_invitees", "spam-bot")
	f(0, "member_join.deny_groups: 1\ng9\n", "list", "add", "member_join.deny_groups", "g9")
	f(0, "member_join.deny_groups: 0\n", "list", "remove", "member_join.deny_groups", "g9")
	f(0, "invite_to_group.deny_invitees: 1\nspam-bot\n", "list", "show", "invite_to_group.deny_invitees")
	code, out, _ = ctl(callback.IMServerInvite("g3", "", "a", "spam-bot"), "explain")
	if code != 0 || !strings.Contains(out, `callback: callbackBeforeInviteJoinGroupCommand, group "g3", users ["a" "spam-bot"]`) ||
		!strings.Contains(out, "decision: refuse (deny_invitee)") {
		t.Fatalf("explain of an invitation: %d %q", code, out)
	}
	f(1, `no limit rule "applicant-per-minute" in callbackBeforeMembersJoinGroupCommand`, "--command", "member_join", "quota", "show", "applicant-per-minute", "u1")

	// Usage errors exit 2 and say what is wanted.
	f(2, "want: list add|remove <LIST> <ID>", "list", "add", "member_join.deny_members")
	f(2, "no command")
	f(2, "unknown command", "frobnicate")
	f(2, "allow add|remove applicant", "allow", "add", "group", "g")
	f(2, "want: quota show|reset", "quota", "peek", "r")
	f(2, "deny add|remove applicant|group", "deny", "add", "applicant")
	// API errors exit 1 with the API's reason.
	f(1, `no limit rule "nope"`, "quota", "show", "nope", "u")
	f(1, "give 1 ID(s)", "quota", "show", "applicant-per-minute")
	if code, _, errs := ctl(`{"groupID":1}`, "explain", "-"); code != 1 || !strings.Contains(errs, "groupID must be a string") {
		t.Fatalf("explain of a bad body: %d %q", code, errs)
	}

	var errb bytes.Buffer
	if code := runCtl([]string{"--admin", url, "--token", "wrong", "deny", "list", "group"}, nil, nil, &bytes.Buffer{}, &errb); code != 1 || !strings.Contains(errb.String(), "401") {
		t.Fatalf("wrong token: %d %q", code, errb.String())
	}
	errb.Reset()
	dead := "http://" + testenv.Loopback(t)
	if code := runCtl([]string{"--admin", dead, "--timeout", time.Second.String(), "deny", "list", "group"}, nil, nil, &bytes.Buffer{}, &errb); code != 1 || !strings.Contains(errb.String(), "cannot reach the admin API") {
		t.Fatalf("unreachable admin: %d %q", code, errb.String())
	}
}

// Flags may follow the command's words; after "--" a word that starts
// with "-" is an ID.
func TestCtlFlagsAfterCommand(t *testing.T) {
	url := ctlServer(t)
	var out, errb bytes.Buffer
	if code := runCtl([]string{"deny", "add", "applicant", "--admin", url, "--", "-dash"}, []string{"JOINGATE_ADMIN_TOKEN=tok"}, nil, &out, &errb); code != 0 {
		t.Fatalf("ctl with flags after the command: exit %d: %s", code, errb.String())
	}
	out.Reset()
	if code := runCtl([]string{"deny", "list", "applicant", "--admin", url, "--json"}, []string{"JOINGATE_ADMIN_TOKEN=tok"}, nil, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), `"-dash"`) || !strings.Contains(out.String(), "{") {
		t.Fatalf("ctl deny list ... --json: stdout %q, stderr %q; want the JSON answer naming -dash", out.String(), errb.String())
	}
}

// ctl pointed at a gateway's admin listener says what it reached and
// where to point instead.
func TestCtlAtGateway(t *testing.T) {
	s, err := admin.New("127.0.0.1:0", prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.HandleNoAPI("this is a joingate gateway: the admin API (joingate ctl) is on the admin listener of a worker or of joingate all")
	testenv.Run(t, s.Run)
	var out, errb bytes.Buffer
	code := runCtl([]string{"--admin", "http://" + s.Addr(), "deny", "list", "applicant"}, []string{"JOINGATE_ADMIN_TOKEN=tok"}, nil, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "404") || !strings.Contains(errb.String(), "this is a joingate gateway") {
		t.Fatalf("ctl at a gateway: exit %d, stderr %q; want 1 and what it reached", code, errb.String())
	}
}
