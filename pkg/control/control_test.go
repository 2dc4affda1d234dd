package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/admin"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
)

// serve runs the API on an admin listener over store and returns a client.
func serve(t *testing.T, store Store, p *policy.Set, token string) *Client {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	s, err := admin.New("127.0.0.1:0", prometheus.NewRegistry(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	s.HandleAPI(Handler(store, func() *policy.Set { return p }, log), token)
	testenv.Run(t, s.Run)
	return &Client{Base: "http://" + s.Addr(), Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
}

func testPolicy(t *testing.T) *policy.Set {
	t.Helper()
	cfg := config.Default()
	cfg.JoinGroup.Limits = []config.Limit{
		{Name: "per-applicant", Key: config.KeyApplicant, Limit: 3, Period: time.Hour, Burst: 3, ErrCode: 5001, ErrMsg: "slow down"},
		{Name: "pair", Key: config.KeyApplicantGroup, Limit: 10, Period: time.Hour, Burst: 10, ErrCode: 5002, ErrMsg: "x"},
		{Name: "everyone", Key: config.KeyGlobal, Limit: 1000, Period: time.Hour, Burst: 1000, ErrCode: 5003, ErrMsg: "y"},
	}
	cfg.InviteToGroup.Limits = []config.Limit{{Name: "per-invitee", Key: config.KeyInvitee, Limit: 2, Period: time.Hour, Burst: 2, ErrCode: 5101, ErrMsg: "z"}}
	cfg.MemberJoin.Limits = []config.Limit{{Name: "pair", Key: config.KeyMemberGroup, Limit: 1, Period: time.Hour, Burst: 1, ErrCode: 5201, ErrMsg: "w"}}
	cfg.MemberJoin.Probation.MuteFor = time.Minute
	p, err := policy.NewSet(cfg, "test:")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAPI(t *testing.T) {
	for name, store := range map[string]func(t *testing.T) Store{
		"memory": func(*testing.T) Store { return ratelimit.NewMemory() },
		"redis":  func(t *testing.T) Store { return ratelimit.NewRedis(testenv.StartRedis(t).Client) },
	} {
		t.Run(name, func(t *testing.T) { testAPI(t, store(t)) })
	}
}

func testAPI(t *testing.T, store Store) {
	ctx := context.Background()
	p := testPolicy(t)
	c := serve(t, store, p, "s3cret")
	decide := func(applicant, group string) policy.Decision {
		t.Helper()
		var s policy.Scratch
		d, err := p.JoinGroup.Decide(ctx, &callback.JoinGroup{ApplyID: applicant, GroupID: group}, store, &s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// Lists: what ctl adds, the next decision sees.
	l, err := c.ListAdd(ctx, policy.ListDenyApplicants, "troll")
	if err != nil || !slices.Equal(l.Members, []string{"troll"}) {
		t.Fatalf("ListAdd: %+v %v", l, err)
	}
	if d := decide("troll", "g"); d.Allowed || d.Reason != policy.ReasonDenyApplicant {
		t.Fatalf("deny-listed applicant: %+v", d)
	}
	c.ListAdd(ctx, policy.ListDenyGroups, "g:locked")
	if d := decide("u", "g:locked"); d.Reason != policy.ReasonDenyGroup {
		t.Fatalf("deny-listed group with a colon: %+v", d)
	}
	c.ListAdd(ctx, policy.ListAllowApplicants, "troll")
	if d := decide("troll", "g"); !d.Allowed || d.Reason != policy.ReasonAllowList {
		t.Fatalf("allow-listed beats deny-listed: %+v", d)
	}
	if l, err := c.ListRemove(ctx, policy.ListDenyApplicants, "troll"); err != nil || len(l.Members) != 0 {
		t.Fatalf("ListRemove: %+v %v", l, err)
	}
	if l, err := c.ListMembers(ctx, policy.ListAllowApplicants); err != nil || !slices.Equal(l.Members, []string{"troll"}) {
		t.Fatalf("ListMembers: %+v %v", l, err)
	}

	// Quota: show without consuming, reset.
	decide("u1", "g")
	decide("u1", "g")
	for range 3 {
		q, err := c.Quota(ctx, "", "per-applicant", []string{"u1"})
		if err != nil || !q.Allowed || q.Remaining != 1 || q.Limit != 3 || !strings.Contains(q.Key, "{a:u1}") {
			t.Fatalf("Quota: %+v %v, want 1 remaining", q, err)
		}
	}
	decide("u1", "g")
	q, err := c.Quota(ctx, "", "per-applicant", []string{"u1"})
	if err != nil || q.Allowed || q.Remaining != 0 || q.RetryAfter < 1199 {
		t.Fatalf("Quota when spent: %+v %v", q, err)
	}
	if q, err := c.ResetQuota(ctx, "", "per-applicant", []string{"u1"}); err != nil || !q.Reset || q.Remaining != 3 {
		t.Fatalf("ResetQuota: %+v %v", q, err)
	}
	if d := decide("u1", "g"); !d.Allowed {
		t.Fatalf("after reset: %+v", d)
	}
	if q, err := c.Quota(ctx, "", "pair", []string{"u1", "g"}); err != nil || q.Remaining != 6 {
		t.Fatalf("applicant_group quota: %+v %v, want 6 of 10 left (4 admitted; the refused one took nothing)", q, err)
	}
	if _, err := c.Quota(ctx, "", "everyone", nil); err != nil {
		t.Fatalf("global quota: %v", err)
	}

	// Explain: the verdict and every rule's, consuming nothing.
	body := []byte(`{"groupID":"g","applyID":"u2","reqMessage":"hi"}`)
	for range 5 {
		e, err := c.Explain(ctx, body)
		if err != nil || e.Decision != "allow" || e.Reason != "passed" || len(e.Rules) != 3 || e.Rules[0].Remaining != 2 {
			t.Fatalf("Explain: %+v %v", e, err)
		}
	}
	decide("u2", "g")
	decide("u2", "g")
	decide("u2", "g")
	e, err := c.Explain(ctx, body)
	var answer struct{ ErrCode, NextCode int }
	if err == nil {
		err = json.Unmarshal(e.Answer, &answer)
	}
	if err != nil || e.Decision != "refuse" || e.Rule != "per-applicant" || answer.ErrCode != 5001 || answer.NextCode != 1 {
		t.Fatalf("Explain when spent: %+v (answer %s) %v", e, e.Answer, err)
	}

	// The other commands: their own lists, rules (a name may repeat) and
	// explanation, picked by the body's callbackCommand.
	other := func(command, body string) policy.Decision {
		t.Helper()
		var s policy.Scratch
		d, err := p.Decide(ctx, command, []byte(body), store, &s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	c.ListAdd(ctx, policy.ListInviteDenyInvitees, "troll")
	if d := other(callback.InviteCommand, callback.IMServerInvite("g", "", "a", "troll")); d.Reason != policy.ReasonDenyInvitee {
		t.Fatalf("deny-listed invitee: %+v", d)
	}
	if d := other(callback.MembersJoinCommand, callback.IMServerMembersJoin("g", "troll")); !d.Allowed {
		t.Fatalf("an invitee deny list refused a members-join: %+v", d)
	}
	if q, err := c.Quota(ctx, "member_join", "pair", []string{"troll", "g"}); err != nil || q.Allowed || !strings.Contains(q.Key, ":ml:pair:g") {
		t.Fatalf("member_join quota after the join: %+v %v", q, err)
	}
	if q, err := c.Quota(ctx, "", "pair", []string{"troll", "g"}); err != nil || q.Remaining != 10 {
		t.Fatalf("join_group's pair is another counter: %+v %v", q, err)
	}
	if q, err := c.ResetQuota(ctx, "member_join", "pair", []string{"troll", "g"}); err != nil || !q.Reset {
		t.Fatalf("member_join reset: %+v %v", q, err)
	}
	e, err = c.Explain(ctx, []byte(callback.IMServerMembersJoin("g", "troll", "x")))
	if err != nil || e.Command != callback.MembersJoinCommand || e.Decision != "allow" || len(e.Rules) != 2 || e.Rules[1].For != "x" ||
		e.MuteUntil == "" || !slices.Equal(e.Callback.Users, []string{"troll", "x"}) || !strings.Contains(string(e.Answer), `"muteEndTime"`) {
		t.Fatalf("Explain members-join: %+v %v", e, err)
	}
	e, err = c.Explain(ctx, []byte(callback.IMServerInvite("g", "", "a", "b", "c")))
	if err != nil || e.Command != callback.InviteCommand || e.Decision != "allow" || len(e.Rules) != 3 {
		t.Fatalf("Explain invitation: %+v %v", e, err)
	}
	// n listed three times against per-invitee's burst of 2: never.
	e, err = c.Explain(ctx, []byte(callback.IMServerInvite("g", "", "n", "n", "n")))
	if err != nil || e.Decision != "refuse" || len(e.Rules) != 1 || !e.Rules[0].Never || e.Rules[0].Cost != 3 {
		t.Fatalf("Explain of a call above a burst: %+v %v", e, err)
	}

	// Bad input: clear errors.
	for _, tc := range []struct {
		call func() error
		want string
	}{
		{func() error { _, err := c.ListAdd(ctx, "vips", "u"); return err }, `no list "vips"`},
		{func() error { _, err := c.Quota(ctx, "", "nope", []string{"u"}); return err }, `no limit rule "nope"`},
		{func() error { _, err := c.Quota(ctx, "", "pair", []string{"u"}); return err }, "give 2 ID(s)"},
		{func() error { _, err := c.Quota(ctx, "invite_to_group", "per-applicant", []string{"u"}); return err }, `no limit rule "per-applicant" in callbackBeforeInviteJoinGroupCommand`},
		{func() error { _, err := c.Quota(ctx, "kick", "x", nil); return err }, `no policy "kick"`},
		{func() error { _, err := c.Quota(ctx, "invite_to_group", "per-invitee", []string{""}); return err }, "empty ID"},
		{func() error {
			_, err := c.Explain(ctx, []byte(`{"callbackCommand":"callbackAfterJoinGroupCommand"}`))
			return err
		}, "no policy for callbackCommand"},
		{func() error {
			_, err := c.Explain(ctx, []byte(`{"callbackCommand":"callbackBeforeInviteJoinGroupCommand","groupID":"g"}`))
			return err
		}, "invitedUserIDs is missing"},
		{func() error { _, err := c.Explain(ctx, []byte(`{"groupID":1}`)); return err }, "groupID must be a string"},
		{func() error {
			bad := *c
			bad.Token = "wrong"
			_, err := bad.ListMembers(ctx, policy.ListDenyGroups)
			return err
		}, "401"},
	} {
		if err := tc.call(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one mentioning %q", err, tc.want)
		}
	}
}

func TestAPIDisabledWithoutToken(t *testing.T) {
	c := serve(t, ratelimit.NewMemory(), testPolicy(t), "")
	_, err := c.ListMembers(context.Background(), policy.ListDenyGroups)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "admin_token") {
		t.Fatalf("API without a configured token: %v, want 403 naming admin_token", err)
	}
}
