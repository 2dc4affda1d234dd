package policy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/ratelimit"
)

type answer struct {
	ActionCode, ErrCode, NextCode int
	ErrMsg, ErrDlt                string
}

func compile(t *testing.T, mutate func(*config.Config)) *JoinGroup {
	t.Helper()
	cfg := config.Default()
	cfg.JoinGroup.Limits = nil
	mutate(&cfg)
	p, err := New(cfg.JoinGroup, cfg.Worker, "t:")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func decide(t *testing.T, p *JoinGroup, lim Store, applicant, group, msg string) (Decision, answer) {
	t.Helper()
	var s Scratch
	d, err := p.Decide(context.Background(), &callback.JoinGroup{ApplyID: applicant, GroupID: group, ReqMessage: msg}, lim, &s)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	var a answer
	readAnswer(t, d, s.Body, &a)
	return d, a
}

// readAnswer decodes body into v (an answer, or a struct embedding one)
// and fails unless the answer refuses exactly when d does.
func readAnswer(t *testing.T, d Decision, body []byte, v interface{ common() answer }) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if a := v.common(); (a.ActionCode == 0 && a.NextCode == 1) == d.Allowed {
		t.Fatalf("decision %+v but body %s", d, body)
	}
}

func (a *answer) common() answer { return *a }

// listAdd puts id on a dynamic list as the admin API does.
func listAdd(t *testing.T, st listStore, k Keys, list, id string) {
	t.Helper()
	if err := st.ListAdd(context.Background(), k.Index(list), id, k.Flag(list, id)); err != nil {
		t.Fatal(err)
	}
}

func TestListsAndMessages(t *testing.T) {
	p := compile(t, func(c *config.Config) {
		j := &c.JoinGroup
		j.AllowApplicants = []string{"admin"}
		j.DenyApplicants = []string{"spammer", "admin"}
		j.DenyGroups = []string{"closed"}
		j.MaxMessageBytes = 10
		j.BlockedWords = []string{"Casino"}
		j.Limits = []config.Limit{{Name: "one", Key: config.KeyApplicant, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5001, ErrMsg: "slow down"}}
	})
	lim := ratelimit.NewMemory()
	f := func(applicant, group, msg string, allowed bool, reason Reason, code int) {
		t.Helper()
		d, a := decide(t, p, lim, applicant, group, msg)
		if d.Allowed != allowed || d.Reason != reason || a.ErrCode != code {
			t.Fatalf("(%s, %s, %q): got %+v %+v, want allowed=%v reason=%s code=%d", applicant, group, msg, d, a, allowed, reason, code)
		}
	}
	// The allow-list wins over a deny-list entry and over the limit.
	f("admin", "closed", "casino casino casino", true, ReasonAllowList, 0)
	f("admin", "g", "", true, ReasonAllowList, 0)
	f("spammer", "g", "", false, ReasonDenyApplicant, 5002)
	f("u1", "closed", "", false, ReasonDenyGroup, 5002)
	f("u1", "g", "12345678901", false, ReasonMessageLength, 5003)
	f("u1", "g", "big CASINO", false, ReasonBlockedWord, 5004)
	// None of the refusals above consumed u1's single request.
	f("u1", "g", "hello", true, ReasonPassed, 0)
	f("u1", "g", "hello", false, ReasonRateLimit, 5001)
}

func TestRateLimitRefusal(t *testing.T) {
	p := compile(t, func(c *config.Config) {
		c.JoinGroup.Limits = []config.Limit{
			{Name: "loose", Key: config.KeyGroup, Limit: 100, Period: time.Hour, Burst: 100, ErrCode: 5010, ErrMsg: "group busy"},
			{Name: "tight", Key: config.KeyApplicantGroup, Limit: 2, Period: time.Minute, Burst: 2, ErrCode: 5011, ErrMsg: "too many to this group"},
			{Name: "watch", Key: config.KeyGlobal, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5012, ErrMsg: "x", Shadow: true},
		}
	})
	lim := ratelimit.NewMemory()
	decide(t, p, lim, "u", "g", "")
	var s Scratch
	d, err := p.Decide(context.Background(), &callback.JoinGroup{ApplyID: "u", GroupID: "g"}, lim, &s)
	if err != nil || !d.Allowed || len(s.Shadowed) != 1 || s.Shadowed[0] != "watch" {
		t.Fatalf("second request: %+v %v, shadowed %q: want allowed with the shadow rule reporting", d, err, s.Shadowed)
	}
	d, a := decide(t, p, lim, "u", "g", "")
	if d.Allowed || d.Rule != "tight" || a.ErrCode != 5011 || a.ErrMsg != "too many to this group" || a.ErrDlt != "retry in 30s" {
		t.Fatalf("third request: %+v %+v, want refused by tight, retry in 30s", d, a)
	}
	// Another group is a different applicant_group key.
	if d, _ := decide(t, p, lim, "u", "g2", ""); !d.Allowed {
		t.Fatalf("other group refused: %+v", d)
	}
}

type failing struct{}

func (failing) Decide(context.Context, *ratelimit.Query, *ratelimit.Answer) error {
	return ratelimit.ErrStore
}

// storeFailed decides one request against a failing store under
// worker.on_store_error mode.
func storeFailed(t *testing.T, mode string) (Decision, *Scratch, error) {
	t.Helper()
	p := compile(t, func(c *config.Config) {
		c.Worker.OnStoreError = mode
		c.JoinGroup.Limits = config.Default().JoinGroup.Limits
	})
	var s Scratch
	d, err := p.Decide(context.Background(), &callback.JoinGroup{ApplyID: "u", GroupID: "g"}, failing{}, &s)
	return d, &s, err
}

func TestStoreError(t *testing.T) {
	for _, mode := range []string{config.Allow, config.Deny} {
		d, s, err := storeFailed(t, mode)
		if !errors.Is(err, ratelimit.ErrStore) {
			t.Fatalf("%s: error %v, want the store's", mode, err)
		}
		var a answer
		json.Unmarshal(s.Body, &a)
		if d.Reason != ReasonStoreError || d.Allowed != (mode == config.Allow) || (a.NextCode == 1) == d.Allowed {
			t.Fatalf("%s: %+v body %s", mode, d, s.Body)
		}
		if mode == config.Deny && a.ErrCode != 5000 {
			t.Fatalf("deny on store error answers code %d, want 5000", a.ErrCode)
		}
	}
}

func TestKeys(t *testing.T) {
	k := NewKeys("jg:")
	// No two (applicant, group) pairs share a key, whatever the IDs hold.
	a := k.Rule("ag", config.KeyApplicantGroup, "a:b", "c")
	b := k.Rule("ag", config.KeyApplicantGroup, "a", "b:c")
	if a == b {
		t.Fatalf("applicant_group keys collide: %q", a)
	}
	// An applicant's keys share one hash tag; a "}" in an ID cannot end it early.
	for _, key := range []string{
		k.Rule("r", config.KeyApplicant, "u}1", "g"),
		k.Rule("r", config.KeyApplicantGroup, "u}1", "g"),
		k.Flag(ListAllowApplicants, "u}1"),
		k.Flag(ListDenyApplicants, "u}1"),
	} {
		if !strings.HasPrefix(key, "jg:{a:u%7D1}:") {
			t.Errorf("key %q does not carry the applicant's hash tag", key)
		}
	}
	if got := k.Rule("r", config.KeyGroup, "u", "g1"); got != "jg:{g:g1}:rl:r" {
		t.Errorf("group rule key %q", got)
	}
	if got := k.Flag(ListDenyGroups, "g1"); got != "jg:{g:g1}:deny" {
		t.Errorf("deny group flag %q", got)
	}
	if got := k.Rule("r", config.KeyGlobal, "u", "g"); got != "jg:{global}:rl:r" {
		t.Errorf("global rule key %q", got)
	}
}

// Dynamic lists live in the store and are checked in the same query as the
// limits: the allow-list beats every refusal, deny lists refuse, and neither
// consumes quota.
func TestDynamicLists(t *testing.T) {
	p := compile(t, func(c *config.Config) {
		c.JoinGroup.DenyApplicants = []string{"static-denied"}
		c.JoinGroup.MaxMessageBytes = 3
		c.JoinGroup.Limits = []config.Limit{{Name: "one", Key: config.KeyApplicant, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5001, ErrMsg: "x"}}
	})
	st := ratelimit.NewMemory()
	k := p.Keys()
	add := func(list, id string) { t.Helper(); listAdd(t, st, k, list, id) }
	add(ListAllowApplicants, "vip")
	add(ListAllowApplicants, "static-denied")
	add(ListDenyApplicants, "troll")
	add(ListDenyGroups, "locked")
	f := func(applicant, group, msg string, allowed bool, reason Reason) {
		t.Helper()
		d, _ := decide(t, p, st, applicant, group, msg)
		if d.Allowed != allowed || d.Reason != reason {
			t.Fatalf("(%s, %s, %q): %+v, want allowed=%v reason=%s", applicant, group, msg, d, allowed, reason)
		}
	}
	f("vip", "locked", "far too long", true, ReasonAllowList)
	f("vip", "g", "", true, ReasonAllowList) // again: the allow-list consumes nothing
	f("static-denied", "g", "", true, ReasonAllowList)
	f("troll", "g", "", false, ReasonDenyApplicant)
	f("u", "locked", "", false, ReasonDenyGroup)
	f("u", "g", "far too long", false, ReasonMessageLength)
	f("u", "g", "", true, ReasonPassed) // u's one request was not spent above
	f("u", "g", "", false, ReasonRateLimit)
	f("vip", "g", "", true, ReasonAllowList)
}

func TestDryRunMakesEveryRuleShadow(t *testing.T) {
	p := compile(t, func(c *config.Config) {
		c.JoinGroup.DryRun = true
		c.JoinGroup.Limits = []config.Limit{{Name: "one", Key: config.KeyApplicant, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5001, ErrMsg: "x"}}
	})
	st := ratelimit.NewMemory()
	decide(t, p, st, "u", "g", "")
	var s Scratch
	d, err := p.Decide(context.Background(), &callback.JoinGroup{ApplyID: "u", GroupID: "g"}, st, &s)
	if err != nil || !d.Allowed || len(s.Shadowed) != 1 || s.Shadowed[0] != "one" {
		t.Fatalf("dry run: %+v %v shadowed %q, want allowed with rule one reported", d, err, s.Shadowed)
	}
}

func TestExplainConsumesNothing(t *testing.T) {
	p := compile(t, func(c *config.Config) {
		c.JoinGroup.Limits = []config.Limit{{Name: "two", Key: config.KeyApplicant, Limit: 2, Period: time.Hour, Burst: 2, ErrCode: 5001, ErrMsg: "x"}}
	})
	st := ratelimit.NewMemory()
	req := &callback.JoinGroup{ApplyID: "u", GroupID: "g"}
	var s Scratch
	for range 5 {
		d, err := p.Explain(context.Background(), req, st, &s)
		v := s.Verdicts()
		if err != nil || !d.Allowed || len(v) != 1 || v[0].Rule != "two" || v[0].Result.Remaining != 1 {
			t.Fatalf("explain: %+v %v %+v", d, err, v)
		}
	}
	decide(t, p, st, "u", "g", "")
	decide(t, p, st, "u", "g", "")
	if d, _ := p.Explain(context.Background(), req, st, &s); d.Allowed || d.Rule != "two" {
		t.Fatalf("explain after the quota is spent: %+v", d)
	}
}

func BenchmarkDecide(b *testing.B) {
	cfg := config.Default()
	// Limits the benchmark never reaches: it measures the path, not refusals.
	cfg.JoinGroup.Limits[0].Limit, cfg.JoinGroup.Limits[0].Burst = 1<<20, 1<<30
	cfg.JoinGroup.Limits[1].Limit, cfg.JoinGroup.Limits[1].Burst = 1<<20, 1<<30
	p, err := New(cfg.JoinGroup, cfg.Worker, "b:")
	if err != nil {
		b.Fatal(err)
	}
	lim := ratelimit.NewMemory()
	req := &callback.JoinGroup{ApplyID: "8129374651", GroupID: "3458719384", ReqMessage: "hello"}
	var s Scratch
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Decide(context.Background(), req, lim, &s); err != nil {
			b.Fatal(err)
		}
	}
}

// When several rules refuse, the first names the refusal and errDlt waits
// for the slowest: retrying earlier would be refused again.
func TestRetryAfterIsTheLongestWait(t *testing.T) {
	p := compile(t, func(c *config.Config) {
		c.JoinGroup.Limits = []config.Limit{
			{Name: "minute", Key: config.KeyApplicant, Limit: 1, Period: time.Minute, Burst: 1, ErrCode: 5010, ErrMsg: "per minute"},
			{Name: "hour", Key: config.KeyGroup, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5011, ErrMsg: "per hour"},
		}
	})
	st := ratelimit.NewMemory()
	decide(t, p, st, "u", "g", "")
	d, a := decide(t, p, st, "u", "g", "")
	if d.Rule != "minute" || a.ErrCode != 5010 || a.ErrDlt != "retry in 3600s" {
		t.Fatalf("%+v %+v, want rule minute's code with the hour rule's wait", d, a)
	}
}

// Every way through the policy ends in one of Outcomes, and every Outcome
// is reached: the metric series pre-created from it are exactly those
// that can move.
func TestOutcomes(t *testing.T) {
	got := map[Outcome]bool{}
	p := compile(t, func(c *config.Config) {
		j := &c.JoinGroup
		j.AllowApplicants = []string{"admin"}
		j.DenyApplicants = []string{"spammer"}
		j.DenyGroups = []string{"closed"}
		j.MaxMessageBytes = 10
		j.BlockedWords = []string{"casino"}
		j.Limits = []config.Limit{{Name: "one", Key: config.KeyApplicant, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5001, ErrMsg: "slow down"}}
	})
	lim := ratelimit.NewMemory()
	for _, c := range [][3]string{
		{"admin", "closed", ""}, {"spammer", "g", ""}, {"u", "closed", ""}, {"u", "g", "12345678901"},
		{"u", "g", "casino"}, {"u", "g", ""}, {"u", "g", ""},
	} {
		d, _ := decide(t, p, lim, c[0], c[1], c[2])
		got[Outcome{d.Allowed, d.Reason}] = true
	}
	for _, mode := range []string{config.Allow, config.Deny} {
		d, _, _ := storeFailed(t, mode)
		got[Outcome{d.Allowed, d.Reason}] = true
	}
	dry := compile(t, func(c *config.Config) {
		c.JoinGroup.DryRun = true
		c.JoinGroup.Limits = []config.Limit{{Name: "one", Key: config.KeyApplicant, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5001, ErrMsg: "slow down"}}
	})
	for range 2 {
		d, _ := decide(t, dry, lim, "dry", "g", "")
		got[Outcome{d.Allowed, d.Reason}] = true
	}
	want := map[Outcome]bool{}
	for _, o := range Outcomes(callback.JoinGroupCommand) {
		want[o] = true
		if !got[o] {
			t.Errorf("outcome %+v is listed but no decision reached it", o)
		}
	}
	for o := range got {
		if !want[o] {
			t.Errorf("a decision came to %+v, which Outcomes does not list", o)
		}
	}
}
