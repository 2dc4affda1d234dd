package policy

import (
	"context"
	"encoding/json"
	"errors"
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

func decide(t *testing.T, p *JoinGroup, lim Limiter, applicant, group, msg string) (Decision, answer) {
	t.Helper()
	var s Scratch
	d, err := p.Decide(context.Background(), &callback.JoinGroup{ApplyID: applicant, GroupID: group, ReqMessage: msg}, lim, &s)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	var a answer
	if err := json.Unmarshal(s.Body, &a); err != nil {
		t.Fatalf("body %q: %v", s.Body, err)
	}
	if refused := a.ActionCode == 0 && a.NextCode == 1; refused == d.Allowed {
		t.Fatalf("decision %+v but body %s", d, s.Body)
	}
	return d, a
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
	f("u1", "g", "big CASINO", false, ReasonBlockedWord, 5003)
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

func (failing) Allow(context.Context, []ratelimit.Check, []ratelimit.Result) error {
	return ratelimit.ErrStore
}

func TestStoreError(t *testing.T) {
	for _, mode := range []string{config.Allow, config.Deny} {
		p := compile(t, func(c *config.Config) {
			c.Worker.OnStoreError = mode
			c.JoinGroup.Limits = config.Default().JoinGroup.Limits
		})
		var s Scratch
		d, err := p.Decide(context.Background(), &callback.JoinGroup{ApplyID: "u", GroupID: "g"}, failing{}, &s)
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

func TestKeysDoNotCollide(t *testing.T) {
	p := compile(t, func(c *config.Config) {
		c.JoinGroup.Limits = []config.Limit{{Name: "ag", Key: config.KeyApplicantGroup, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5001, ErrMsg: "m"}}
	})
	r := &p.rules[0]
	a := p.key(r, &callback.JoinGroup{ApplyID: "a:b", GroupID: "c"})
	b := p.key(r, &callback.JoinGroup{ApplyID: "a", GroupID: "b:c"})
	if a == b {
		t.Fatalf("applicant_group keys collide: %q", a)
	}
}

func BenchmarkDecide(b *testing.B) {
	cfg := config.Default()
	cfg.JoinGroup.Limits[0].Limit, cfg.JoinGroup.Limits[0].Burst = 1<<30, 1<<30
	cfg.JoinGroup.Limits[1].Limit, cfg.JoinGroup.Limits[1].Burst = 1<<30, 1<<30
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
