package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/ratelimit"
)

// Set is the policy of every command joingate decides (callback.Commands).
// It is immutable and safe for concurrent use.
type Set struct {
	JoinGroup  *JoinGroup
	Invite     *Admission
	MemberJoin *Admission
	// Now is the clock of probation's muteEndTime; nil: time.Now.
	Now func() time.Time
}

// NewSet compiles the policies of cfg; keyPrefix starts every store key.
func NewSet(cfg config.Config, keyPrefix string) (*Set, error) {
	jg, err := New(cfg.JoinGroup, cfg.Worker, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("join_group: %w", err)
	}
	inv, err := NewInvite(cfg.InviteToGroup, cfg.Worker, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("invite_to_group: %w", err)
	}
	mj, err := NewMemberJoin(cfg.MemberJoin, cfg.Worker, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("member_join: %w", err)
	}
	return &Set{JoinGroup: jg, Invite: inv, MemberJoin: mj}, nil
}

// Keys returns the policies' key names (one prefix for all).
func (p *Set) Keys() Keys { return p.JoinGroup.Keys() }

// Limited is what `joingate ctl quota` needs of a command's policy.
type Limited interface {
	Rules() []string
	RuleKind(name string) (string, bool)
	Rule(name, user, group string) (ratelimit.Check, error)
}

// Limits returns the policy of command whose rules ctl may show and reset.
func (p *Set) Limits(command string) (Limited, bool) {
	switch command {
	case callback.JoinGroupCommand:
		return p.JoinGroup, true
	case callback.InviteCommand:
		return p.Invite, true
	case callback.MembersJoinCommand:
		return p.MemberJoin, true
	}
	return nil, false
}

// Rules returns every command's rule names, for metric labels.
func (p *Set) Rules() map[string][]string {
	return map[string][]string{
		callback.JoinGroupCommand:   p.JoinGroup.Rules(),
		callback.InviteCommand:      p.Invite.Rules(),
		callback.MembersJoinCommand: p.MemberJoin.Rules(),
	}
}

// Outcomes lists every Outcome a decision of command can have: metric
// series are pre-created for these and no others (a refusal is never
// "passed", an allowance never "deny_group"). A store error allows or
// refuses as worker.on_store_error says.
func Outcomes(command string) []Outcome {
	common := []Outcome{
		{true, ReasonAllowList}, {true, ReasonPassed}, {true, ReasonStoreError},
		{false, ReasonDenyGroup}, {false, ReasonRateLimit}, {false, ReasonStoreError},
	}
	switch command {
	case callback.JoinGroupCommand:
		return append(common, Outcome{false, ReasonDenyApplicant}, Outcome{false, ReasonMessageLength}, Outcome{false, ReasonBlockedWord})
	case callback.InviteCommand:
		return append(common, Outcome{false, ReasonDenyInvitee}, Outcome{false, ReasonTooManyInvitees})
	case callback.MembersJoinCommand:
		return append(common, Outcome{false, ReasonDenyMember})
	}
	return nil
}

// Decide decodes body, a callback of command, into s and judges it,
// consuming quota when it is admitted; the answer is in s.Body. An error
// wrapping callback.ErrMalformed means the body is not a callback of
// command (nothing was judged); any other error is a store failure,
// answered as configured.
func (p *Set) Decide(ctx context.Context, command string, body []byte, st Store, s *Scratch) (Decision, error) {
	return p.decide(ctx, command, body, st, s, ratelimit.Consume)
}

// Explain is Decide consuming nothing: what `joingate ctl explain` shows.
// s.Verdicts tells each limit check's verdict.
func (p *Set) Explain(ctx context.Context, command string, body []byte, st Store, s *Scratch) (Decision, error) {
	return p.decide(ctx, command, body, st, s, ratelimit.Peek)
}

func (p *Set) decide(ctx context.Context, command string, body []byte, st Store, s *Scratch, mode ratelimit.Mode) (Decision, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	switch command {
	case callback.JoinGroupCommand:
		if err := callback.DecodeJoinGroup(body, &s.JoinGroup); err != nil {
			return Decision{}, err
		}
		return p.JoinGroup.decide(ctx, &s.JoinGroup, st, s, mode)
	case callback.InviteCommand:
		r := &s.Invite
		if err := callback.DecodeInvite(body, r); err != nil {
			return Decision{}, err
		}
		return p.Invite.decide(ctx, r.GroupID, r.InvitedUserIDs, now(), st, s, mode)
	case callback.MembersJoinCommand:
		r := &s.MembersJoin
		if err := callback.DecodeMembersJoin(body, r); err != nil {
			return Decision{}, err
		}
		s.memberIDs = s.memberIDs[:0]
		for _, m := range r.MemberList {
			s.memberIDs = append(s.memberIDs, m.UserID)
		}
		return p.MemberJoin.decide(ctx, r.GroupID, s.memberIDs, now(), st, s, mode)
	}
	return Decision{}, fmt.Errorf("%w: no policy for %q", callback.ErrMalformed, command)
}
