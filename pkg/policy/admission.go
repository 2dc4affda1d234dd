package policy

import (
	"context"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/ratelimit"
)

// Reasons of the invitation and members-join policies (with ReasonAllowList,
// ReasonDenyGroup, ReasonRateLimit, ReasonPassed and ReasonStoreError).
const (
	ReasonDenyInvitee     Reason = "deny_invitee"
	ReasonDenyMember      Reason = "deny_member"
	ReasonTooManyInvitees Reason = "too_many_invitees"
)

// Admission is a compiled policy on users entering a group together: an
// invitation (invite_to_group) or a members-join (member_join). OpenIM
// takes one answer for the whole call, so the call is judged whole: any
// listed user on a deny list refuses it, and a call of N users counts N
// against every limit, or nothing. It is immutable and safe for concurrent
// use.
type Admission struct {
	allowGroups, denyGroups, denyUsers map[string]struct{}
	// The dynamic lists (policy.Lists) of the command.
	allowList, denyGroupList, denyUserList string
	userReason                             Reason
	maxUsers                               int // 0: no limit
	rules                                  []rule
	ns                                     string
	keys                                   Keys

	denyBody, maxUsersBody []byte
	storeErrorAllows       bool
	storeErrorBody         []byte

	// Probation: allowed members of probationGroups (every group when
	// nil) are muted for muteFor.
	muteFor         time.Duration
	probationGroups map[string]struct{}
}

// section is what a command's section gives its Admission.
type section struct {
	limits                                  []config.Limit
	dryRun                                  bool
	allowGroups, denyGroups, denyUsers      []string
	allowList, denyGroupList, denyUsersList string
	userReason                              Reason
	ns                                      string
	deny                                    config.Refusal
}

// NewInvite compiles the invite_to_group policy.
func NewInvite(cfg config.InviteToGroup, storeErr config.Worker, keyPrefix string) (*Admission, error) {
	p, err := newAdmission(section{
		cfg.Limits, cfg.DryRun, cfg.AllowGroups, cfg.DenyGroups, cfg.DenyInvitees,
		ListInviteAllowGroups, ListInviteDenyGroups, ListInviteDenyInvitees, ReasonDenyInvitee, nsInvite, cfg.DenyRefusal,
	}, storeErr, keyPrefix)
	if err != nil {
		return nil, err
	}
	p.maxUsers = cfg.MaxInvitees
	p.maxUsersBody = callback.AppendRefusal(nil, cfg.MaxInviteesRefusal.ErrCode, cfg.MaxInviteesRefusal.ErrMsg, "")
	return p, nil
}

// NewMemberJoin compiles the member_join policy.
func NewMemberJoin(cfg config.MemberJoin, storeErr config.Worker, keyPrefix string) (*Admission, error) {
	p, err := newAdmission(section{
		cfg.Limits, cfg.DryRun, cfg.AllowGroups, cfg.DenyGroups, cfg.DenyMembers,
		ListMemberAllowGroups, ListMemberDenyGroups, ListMemberDenyMembers, ReasonDenyMember, nsMemberJoin, cfg.DenyRefusal,
	}, storeErr, keyPrefix)
	if err != nil {
		return nil, err
	}
	p.muteFor = cfg.Probation.MuteFor
	if len(cfg.Probation.Groups) > 0 {
		p.probationGroups = set(cfg.Probation.Groups)
	}
	return p, nil
}

func newAdmission(sec section, storeErr config.Worker, keyPrefix string) (*Admission, error) {
	rules, err := compileRules(sec.limits, sec.dryRun)
	if err != nil {
		return nil, err
	}
	p := &Admission{
		allowGroups: set(sec.allowGroups), denyGroups: set(sec.denyGroups), denyUsers: set(sec.denyUsers),
		allowList: sec.allowList, denyGroupList: sec.denyGroupList, denyUserList: sec.denyUsersList,
		userReason: sec.userReason, ns: sec.ns, rules: rules, keys: NewKeys(keyPrefix),
		denyBody:         callback.AppendRefusal(nil, sec.deny.ErrCode, sec.deny.ErrMsg, ""),
		storeErrorAllows: storeErr.OnStoreError != config.Deny,
	}
	if !p.storeErrorAllows {
		p.storeErrorBody = callback.AppendRefusal(nil, storeErr.StoreErrorRefusal.ErrCode, storeErr.StoreErrorRefusal.ErrMsg, "retry in 1s")
	}
	return p, nil
}

func set(ids []string) map[string]struct{} {
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	return m
}

// Rules returns the names of the rate-limit rules, for metric labels.
func (p *Admission) Rules() []string { return ruleNames(p.rules) }

// RuleKind returns what the named rule is keyed by, and whether it exists.
func (p *Admission) RuleKind(name string) (string, bool) {
	r, err := findRule(p.rules, name)
	if err != nil {
		return "", false
	}
	return r.key, true
}

// Rule returns the store key and limit of the named rule for one user and
// group, for `joingate ctl quota`.
func (p *Admission) Rule(name, user, group string) (ratelimit.Check, error) {
	r, err := findRule(p.rules, name)
	if err != nil {
		return ratelimit.Check{}, err
	}
	return ratelimit.Check{Key: p.keys.counter(p.ns, r.name, r.key, user, group), Limit: r.limit, Shadow: r.shadow}, nil
}

// MuteUntil is when members of group joining at now may post again, or the
// zero time when the group has no probation.
func (p *Admission) MuteUntil(group string, now time.Time) time.Time {
	if p.muteFor <= 0 {
		return time.Time{}
	}
	if _, ok := p.probationGroups[group]; p.probationGroups != nil && !ok {
		return time.Time{}
	}
	return now.Add(p.muteFor)
}

// Decide judges users entering group, consuming quota when they are
// admitted, and leaves the response JSON in s.Body: for an allowed
// members-join under probation, one that mutes every member until
// Decision.MuteUntil, computed from now. A store failure is answered as
// configured and also returned as an error.
func (p *Admission) Decide(ctx context.Context, group string, users []string, now time.Time, st Store, s *Scratch) (Decision, error) {
	return p.decide(ctx, group, users, now, st, s, ratelimit.Consume)
}

// Explain judges as Decide would, consuming nothing.
func (p *Admission) Explain(ctx context.Context, group string, users []string, now time.Time, st Store, s *Scratch) (Decision, error) {
	return p.decide(ctx, group, users, now, st, s, ratelimit.Peek)
}

// The steps, as join_group's: the group's allow-list (static, then
// dynamic), deny lists, the size of an invitation, limits. Static lists
// need no store; the dynamic lists and the limits are one store query.
func (p *Admission) decide(ctx context.Context, group string, users []string, now time.Time, st Store, s *Scratch, mode ratelimit.Mode) (Decision, error) {
	s.reset(p.rules, mode)
	s.distinct(users)
	if _, ok := p.allowGroups[group]; ok {
		return p.allowed(s, ReasonAllowList, group, users, now), nil
	}
	local := p.local(group, users)

	q := &s.query
	if local != "" {
		q.Mode = ratelimit.GuardsOnly
	}
	// Guards in priority order: the group's allow-list, its deny list, then
	// each user's deny list.
	s.guards = append(s.guards, p.keys.Flag(p.allowList, group), p.keys.Flag(p.denyGroupList, group))
	for _, u := range s.users {
		s.guards = append(s.guards, p.keys.Flag(p.denyUserList, u))
	}
	q.Guards = s.guards
	for i := range p.rules {
		r := &p.rules[i]
		switch r.key {
		case config.KeyGroup, config.KeyGlobal:
			s.addCheck(p.rules, i, p.keys.counter(p.ns, r.name, r.key, "", group), "", len(users))
		default: // per user: one check each, costing how often it is listed
			for _, u := range s.users {
				s.addCheck(p.rules, i, p.keys.counter(p.ns, r.name, r.key, u, group), u, s.counts[u])
			}
		}
	}
	a := &s.answer
	if err := st.Decide(ctx, q, a); err != nil {
		if local != "" {
			// The dynamic allow-list could not be read; the static rule stands.
			return p.refused(s, local), nil
		}
		if !p.storeErrorAllows {
			s.Body = append(s.Body, p.storeErrorBody...)
			return Decision{Reason: ReasonStoreError}, err
		}
		return p.allowed(s, ReasonStoreError, group, users, now), err
	}
	switch {
	case a.Guard == 0:
		return p.allowed(s, ReasonAllowList, group, users, now), nil
	case a.Guard == 1:
		return p.refused(s, ReasonDenyGroup), nil
	case a.Guard >= 2:
		return p.refused(s, p.userReason), nil
	case local != "":
		return p.refused(s, local), nil
	}
	d := verdict(p.rules, a, s)
	if !d.Allowed {
		return d, nil
	}
	return p.allowed(s, ReasonPassed, group, users, now), nil
}

// local returns the refusal of the rules that need no store (static deny
// lists, the size of an invitation), or "".
func (p *Admission) local(group string, users []string) Reason {
	if _, ok := p.denyGroups[group]; ok {
		return ReasonDenyGroup
	}
	for _, u := range users {
		if _, ok := p.denyUsers[u]; ok {
			return p.userReason
		}
	}
	if p.maxUsers > 0 && len(users) > p.maxUsers {
		return ReasonTooManyInvitees
	}
	return ""
}

func (p *Admission) allowed(s *Scratch, reason Reason, group string, users []string, now time.Time) Decision {
	d := Decision{Allowed: true, Reason: reason, MuteUntil: p.MuteUntil(group, now)}
	if d.MuteUntil.IsZero() {
		s.Body = append(s.Body, callback.AllowJSON...)
	} else {
		s.Body = callback.AppendMembersAllow(s.Body, s.users, d.MuteUntil.UnixMilli())
	}
	return d
}

func (p *Admission) refused(s *Scratch, reason Reason) Decision {
	if reason == ReasonTooManyInvitees {
		s.Body = append(s.Body, p.maxUsersBody...)
	} else {
		s.Body = append(s.Body, p.denyBody...)
	}
	return Decision{Reason: reason}
}

// distinct sets s.users to the distinct users, in the order first listed,
// and s.counts to how often each is listed (IMServer lists each once; a
// user listed twice costs two on a per-user check, in one check, so that
// the store sees one key once).
func (s *Scratch) distinct(users []string) {
	s.users = s.users[:0]
	if s.counts == nil {
		s.counts = make(map[string]int)
	}
	clear(s.counts)
	for _, u := range users {
		if s.counts[u] == 0 {
			s.users = append(s.users, u)
		}
		s.counts[u]++
	}
}
