package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
)

// listStore is a store whose dynamic lists tests change.
type listStore interface {
	Store
	ListAdd(ctx context.Context, index, member, flag string) error
}

// onStores runs test against the in-memory store and a real Redis, each
// case on an empty one: the policies must decide alike on both.
func onStores(t *testing.T, test func(t *testing.T, st listStore)) {
	t.Run("memory", func(t *testing.T) { test(t, ratelimit.NewMemory()) })
	t.Run("redis", func(t *testing.T) {
		srv := testenv.StartRedis(t)
		test(t, ratelimit.NewRedis(srv.Client))
	})
}

// members is the answer IMServer reads from a members-join call.
type members struct {
	answer
	MemberCallbackList []struct {
		UserID      *string `json:"userID"`
		MuteEndTime *int64  `json:"muteEndTime"`
	} `json:"memberCallbackList"`
}

func compileSet(t *testing.T, mutate func(*config.Config)) *Set {
	t.Helper()
	cfg := config.Default()
	cfg.JoinGroup.Limits = nil
	mutate(&cfg)
	p, err := NewSet(cfg, "t:")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// call decides body as a worker does and checks that the body says what
// the decision says.
func call(t *testing.T, p *Set, st Store, command, body string) (Decision, members) {
	t.Helper()
	var s Scratch
	d, err := p.Decide(context.Background(), command, []byte(body), st, &s)
	if err != nil {
		t.Fatalf("Decide(%s): %v", command, err)
	}
	var m members
	readAnswer(t, d, s.Body, &m)
	return d, m
}

func limit(name, key string, n int) config.Limit {
	return config.Limit{Name: name, Key: key, Limit: n, Period: time.Hour, Burst: n, ErrCode: 5101, ErrMsg: "too many"}
}

// An invitation of N users costs N of every rule, or nothing: a refused
// invitation leaves the quota as it was, so a smaller one still fits.
func TestInviteAllOrNothing(t *testing.T) {
	onStores(t, func(t *testing.T, st listStore) {
		p := compileSet(t, func(c *config.Config) {
			c.InviteToGroup.Limits = []config.Limit{limit("per-group", config.KeyGroup, 5), limit("per-invitee", config.KeyInvitee, 2)}
		})
		inv := func(group string, users ...string) Decision {
			d, _ := call(t, p, st, callback.InviteCommand, callback.IMServerInvite(group, "", users...))
			return d
		}
		if d := inv("g", "a", "b", "c"); !d.Allowed {
			t.Fatalf("3 of 5: %+v", d)
		}
		// 3 more would make 6 of the group's 5: refused whole...
		if d := inv("g", "d", "e", "f"); d.Allowed || d.Rule != "per-group" {
			t.Fatalf("3 more: %+v", d)
		}
		// ... and d, e, f were not counted: 2 of them still fit.
		if d := inv("g", "d", "e"); !d.Allowed {
			t.Fatalf("2 more: %+v", d)
		}
		// a was invited once into g; twice more anywhere is one too many
		// for per-invitee, and the whole invitation is refused.
		if d := inv("g2", "a", "x"); !d.Allowed {
			t.Fatalf("a again: %+v", d)
		}
		if d := inv("g3", "y", "a"); d.Allowed || d.Rule != "per-invitee" {
			t.Fatalf("a a third time: %+v", d)
		}
		// y was not counted by the refusal.
		if d := inv("g3", "y"); !d.Allowed {
			t.Fatalf("y: %+v", d)
		}
	})
}

func TestInviteListsAndSize(t *testing.T) {
	onStores(t, func(t *testing.T, st listStore) {
		p := compileSet(t, func(c *config.Config) {
			c.InviteToGroup.AllowGroups = []string{"official"}
			c.InviteToGroup.DenyGroups = []string{"closed"}
			c.InviteToGroup.DenyInvitees = []string{"spammer"}
			c.InviteToGroup.MaxInvitees = 3
			c.InviteToGroup.Limits = []config.Limit{limit("per-group", config.KeyGroup, 4)}
		})
		k := p.Keys()
		add := func(list, id string) { t.Helper(); listAdd(t, st, k, list, id) }
		add(ListInviteAllowGroups, "vip-group")
		add(ListInviteAllowGroups, "closed") // the dynamic allow-list beats the static deny list
		add(ListInviteDenyGroups, "locked")
		add(ListInviteDenyInvitees, "troll")
		// The lists of one command are not another's.
		add(ListDenyGroups, "g")
		add(ListMemberDenyMembers, "u1")
		f := func(group string, users []string, allowed bool, reason Reason, code int) {
			t.Helper()
			d, m := call(t, p, st, callback.InviteCommand, callback.IMServerInvite(group, "", users...))
			if d.Allowed != allowed || d.Reason != reason || m.ErrCode != code {
				t.Fatalf("invite %v into %s: %+v %+v, want allowed=%v %s %d", users, group, d, m, allowed, reason, code)
			}
		}
		many := []string{"u1", "u2", "u3", "u4", "u5"}
		f("official", many, true, ReasonAllowList, 0)
		f("vip-group", many, true, ReasonAllowList, 0)
		f("closed", many, true, ReasonAllowList, 0)
		f("locked", []string{"u1"}, false, ReasonDenyGroup, 5100)
		f("g", []string{"u1", "spammer"}, false, ReasonDenyInvitee, 5100)
		f("g", []string{"u1", "troll"}, false, ReasonDenyInvitee, 5100)
		f("g", many[:4], false, ReasonTooManyInvitees, 5102)
		// None of the refusals counted: 3 + 1 fill the group's 4.
		f("g", many[:3], true, ReasonPassed, 0)
		f("g", many[3:4], true, ReasonPassed, 0)
		f("g", many[4:], false, ReasonRateLimit, 5101)
	})
}

// A members-join of N members costs N; probation mutes every member of a
// probation group until now + mute_for, in the shape IMServer reads.
func TestMemberJoinProbation(t *testing.T) {
	onStores(t, func(t *testing.T, st listStore) {
		now := time.UnixMilli(1_800_000_000_123)
		p := compileSet(t, func(c *config.Config) {
			c.MemberJoin.Limits = []config.Limit{limit("per-member-group", config.KeyMemberGroup, 1), limit("per-group", config.KeyGroup, 3)}
			c.MemberJoin.Probation = config.Probation{MuteFor: 10 * time.Minute, Groups: []string{"new"}}
		})
		p.Now = func() time.Time { return now }
		d, m := call(t, p, st, callback.MembersJoinCommand, callback.IMServerMembersJoin("new", "a", "b"))
		want := now.Add(10 * time.Minute)
		if !d.Allowed || !d.MuteUntil.Equal(want) || len(m.MemberCallbackList) != 2 {
			t.Fatalf("probation: %+v %+v", d, m)
		}
		for i, id := range []string{"a", "b"} {
			e := m.MemberCallbackList[i]
			if e.UserID == nil || *e.UserID != id || e.MuteEndTime == nil || *e.MuteEndTime != want.UnixMilli() {
				t.Fatalf("member %d: %+v", i, e)
			}
		}
		// Not a probation group: a plain allow.
		d, m = call(t, p, st, callback.MembersJoinCommand, callback.IMServerMembersJoin("old", "a"))
		if !d.Allowed || !d.MuteUntil.IsZero() || m.MemberCallbackList != nil {
			t.Fatalf("no probation: %+v %+v", d, m)
		}
		// a is a member of new already (per-member-group 1): refused, and c
		// is not counted.
		d, _ = call(t, p, st, callback.MembersJoinCommand, callback.IMServerMembersJoin("new", "c", "a"))
		if d.Allowed || d.Rule != "per-member-group" {
			t.Fatalf("a again: %+v", d)
		}
		if d, _ = call(t, p, st, callback.MembersJoinCommand, callback.IMServerMembersJoin("new", "c")); !d.Allowed {
			t.Fatalf("c: %+v", d)
		}
		if d, _ = call(t, p, st, callback.MembersJoinCommand, callback.IMServerMembersJoin("new", "e")); d.Allowed || d.Rule != "per-group" {
			t.Fatalf("a fourth member of new: %+v", d)
		}
	})
}

// A call asking more than a rule's burst at once can never pass: its
// answer names that rule and says so, instead of a wait that would not
// help, even when another rule refuses first in configuration order, and
// the same when the memory of refusals answers the second time.
func TestMoreThanTheBurstAtOnce(t *testing.T) {
	onStores(t, func(t *testing.T, st listStore) {
		perInvitee, perGroup := limit("per-invitee", config.KeyInvitee, 1), limit("per-group", config.KeyGroup, 3)
		perInvitee.ErrCode, perGroup.ErrCode = 5111, 5112
		p := compileSet(t, func(c *config.Config) {
			c.InviteToGroup.Limits = []config.Limit{perInvitee, perGroup}
		})
		remembering := ratelimit.NewRefusals(st, 0)
		if d, _ := call(t, p, remembering, callback.InviteCommand, callback.IMServerInvite("g", "", "a")); !d.Allowed {
			t.Fatalf("first invitation: %+v", d)
		}
		for i := range 2 { // from the store, then from memory (a's refusal)
			d, m := call(t, p, remembering, callback.InviteCommand, callback.IMServerInvite("g", "", "a", "b", "c", "d"))
			if d.Allowed || d.Rule != "per-group" || m.ErrCode != 5112 || m.ErrDlt != "more than 3 at once" {
				t.Fatalf("call %d of 4 against a burst of 3: %+v %+v", i, d, m)
			}
		}
		if remembering.Stats().Hits != 1 {
			t.Fatalf("memory hits %d, want 1: the second call must be answered from memory", remembering.Stats().Hits)
		}
	})
}

// A user listed twice costs two on a per-user rule (one check of cost 2,
// so that the store sees the key once).
func TestUserListedTwice(t *testing.T) {
	onStores(t, func(t *testing.T, st listStore) {
		p := compileSet(t, func(c *config.Config) {
			c.MemberJoin.Limits = []config.Limit{limit("per-member", config.KeyMember, 2)}
		})
		if d, _ := call(t, p, st, callback.MembersJoinCommand, callback.IMServerMembersJoin("g", "a", "a")); !d.Allowed {
			t.Fatalf("a twice: %+v", d)
		}
		if d, _ := call(t, p, st, callback.MembersJoinCommand, callback.IMServerMembersJoin("g2", "a")); d.Allowed {
			t.Fatalf("a a third time: %+v", d)
		}
	})
}

// Dry run and shadow rules count and name what they would refuse, never
// refusing; explain consumes nothing and tells each check per user.
func TestAdmissionShadowAndExplain(t *testing.T) {
	st := ratelimit.NewMemory()
	p := compileSet(t, func(c *config.Config) {
		c.InviteToGroup.DryRun = true
		c.InviteToGroup.Limits = []config.Limit{limit("per-invitee", config.KeyInvitee, 1)}
	})
	body := callback.IMServerInvite("g", "", "a", "b")
	var s Scratch
	for range 3 {
		d, err := p.Explain(context.Background(), callback.InviteCommand, []byte(body), st, &s)
		v := s.Verdicts()
		if err != nil || !d.Allowed || len(v) != 2 || v[0].For != "a" || v[1].For != "b" || !v[1].Result.Allowed {
			t.Fatalf("explain: %+v %v %+v", d, err, v)
		}
	}
	call(t, p, st, callback.InviteCommand, body)
	d, err := p.Decide(context.Background(), callback.InviteCommand, []byte(body), st, &s)
	if err != nil || !d.Allowed || len(s.Shadowed) != 1 || s.Shadowed[0] != "per-invitee" {
		t.Fatalf("dry run, second time: %+v %v %q", d, err, s.Shadowed)
	}
}

func TestAdmissionStoreError(t *testing.T) {
	for _, mode := range []string{config.Allow, config.Deny} {
		p := compileSet(t, func(c *config.Config) {
			c.Worker.OnStoreError = mode
			c.MemberJoin.Probation.MuteFor = time.Hour
		})
		var s Scratch
		d, err := p.Decide(context.Background(), callback.MembersJoinCommand, []byte(callback.IMServerMembersJoin("g", "a")), failing{}, &s)
		if err == nil || d.Reason != ReasonStoreError || d.Allowed != (mode == config.Allow) {
			t.Fatalf("%s: %+v %v", mode, d, err)
		}
		// An allow still carries the probation, which needs no store.
		if mode == config.Allow && (d.MuteUntil.IsZero() || !strings.Contains(string(s.Body), `"muteEndTime"`)) {
			t.Fatalf("allowed without probation: %s", s.Body)
		}
		if mode == config.Deny && !strings.Contains(string(s.Body), `"errCode":5000`) {
			t.Fatalf("refused with %s", s.Body)
		}
	}
}

func TestMalformedAdmissions(t *testing.T) {
	p := compileSet(t, func(*config.Config) {})
	for _, c := range []struct{ command, body, want string }{
		{callback.InviteCommand, `{"groupID":"g","invitedUserIDs":[]}`, "invitedUserIDs is missing"},
		{callback.InviteCommand, `{"groupID":"g","invitedUserIDs":"a"}`, "malformed"},
		{callback.InviteCommand, `{"invitedUserIDs":["a"]}`, "groupID is missing"},
		{callback.MembersJoinCommand, `{"groupID":"g","memberList":[null]}`, "memberList[0] has no userID"},
		{callback.MembersJoinCommand, `{"groupID":"g","memberList":[{"ex":"x"}]}`, "memberList[0] has no userID"},
		{callback.MembersJoinCommand, `[]`, "not a JSON object"},
		{callback.MembersJoinCommand, ``, "empty body"},
		{"callbackAfterJoinGroupCommand", `{}`, "no policy"},
	} {
		var s Scratch
		_, err := p.Decide(context.Background(), c.command, []byte(c.body), ratelimit.NewMemory(), &s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.command, c.body, err, c.want)
		}
	}
}

// Every outcome Outcomes lists for the two commands is reached, and no
// other.
func TestAdmissionOutcomes(t *testing.T) {
	for _, command := range []string{callback.InviteCommand, callback.MembersJoinCommand} {
		got := map[Outcome]bool{}
		p := compileSet(t, func(c *config.Config) {
			c.InviteToGroup.AllowGroups, c.MemberJoin.AllowGroups = []string{"ok"}, []string{"ok"}
			c.InviteToGroup.DenyGroups, c.MemberJoin.DenyGroups = []string{"closed"}, []string{"closed"}
			c.InviteToGroup.DenyInvitees, c.MemberJoin.DenyMembers = []string{"bad"}, []string{"bad"}
			c.InviteToGroup.MaxInvitees = 2
			c.InviteToGroup.Limits = []config.Limit{limit("one", config.KeyGroup, 1)}
			c.MemberJoin.Limits = []config.Limit{limit("one", config.KeyGroup, 1)}
		})
		body := func(group string, users ...string) string {
			if command == callback.InviteCommand {
				return callback.IMServerInvite(group, "", users...)
			}
			return callback.IMServerMembersJoin(group, users...)
		}
		st := ratelimit.NewMemory()
		for _, b := range []string{body("ok", "a"), body("closed", "a"), body("g", "bad"), body("g", "a", "b", "c"), body("g", "a"), body("g", "a")} {
			d, _ := call(t, p, st, command, b)
			got[Outcome{d.Allowed, d.Reason}] = true
		}
		for _, mode := range []string{config.Allow, config.Deny} {
			q := compileSet(t, func(c *config.Config) { c.Worker.OnStoreError = mode })
			var s Scratch
			d, _ := q.Decide(context.Background(), command, []byte(body("g", "a")), failing{}, &s)
			got[Outcome{d.Allowed, d.Reason}] = true
		}
		want := map[Outcome]bool{}
		for _, o := range Outcomes(command) {
			want[o] = true
			if !got[o] {
				t.Errorf("%s: outcome %+v is listed but no decision reached it", command, o)
			}
		}
		for o := range got {
			if !want[o] {
				t.Errorf("%s: a decision came to %+v, which Outcomes does not list", command, o)
			}
		}
	}
}

// The keys of the three commands never meet: a rule name used in two
// sections counts apart, and every user's keys share one hash tag.
func TestAdmissionKeys(t *testing.T) {
	p := compileSet(t, func(c *config.Config) {
		c.JoinGroup.Limits = []config.Limit{limit("r", config.KeyApplicant, 1)}
		c.InviteToGroup.Limits = []config.Limit{limit("r", config.KeyInvitee, 1)}
		c.MemberJoin.Limits = []config.Limit{limit("r", config.KeyMember, 1), limit("mg", config.KeyMemberGroup, 1)}
	})
	j, _ := p.JoinGroup.Rule("r", "u", "g")
	i, _ := p.Invite.Rule("r", "u", "g")
	m, _ := p.MemberJoin.Rule("r", "u", "g")
	mg, _ := p.MemberJoin.Rule("mg", "u", "g")
	want := []string{"t:{a:u}:rl:r", "t:{a:u}:il:r", "t:{a:u}:ml:r", "t:{a:u}:ml:mg:g"}
	for n, got := range []string{j.Key, i.Key, m.Key, mg.Key} {
		if got != want[n] {
			t.Errorf("key %d: %s, want %s", n, got, want[n])
		}
	}
	seen := map[string]string{}
	for _, list := range Lists {
		key := p.Keys().Flag(list, "x")
		if other, ok := seen[key]; ok {
			t.Errorf("lists %s and %s share the key %s", list, other, key)
		}
		seen[key] = list
	}
}
