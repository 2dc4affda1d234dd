// Package policy decides a join-group application: allow-list, deny lists,
// message rules, then rate limits checked in one store call.
package policy

import (
	"context"
	"strings"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/ratelimit"
)

// Reason says which step decided. The set is closed: it labels metrics.
type Reason string

// Reasons, in the order the policy evaluates them.
const (
	ReasonAllowList     Reason = "allow_list"
	ReasonDenyApplicant Reason = "deny_applicant"
	ReasonDenyGroup     Reason = "deny_group"
	ReasonMessageLength Reason = "message_too_long"
	ReasonBlockedWord   Reason = "blocked_word"
	ReasonRateLimit     Reason = "rate_limit"
	ReasonStoreError    Reason = "store_error"
	// ReasonPassed: every rule admitted the request.
	ReasonPassed Reason = "passed"
)

// Outcome is what a decision comes to: allowed or not, and the step that
// decided.
type Outcome struct {
	Allowed bool
	Reason  Reason
}

// Store answers a decision's store work (dynamic lists and rate limits) in
// one round trip.
type Store interface {
	Decide(ctx context.Context, q *ratelimit.Query, a *ratelimit.Answer) error
}

// Decision is the outcome for one application.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Rule is the refusing limit's name when Reason is ReasonRateLimit.
	Rule string
	// MuteUntil is when the members a members-join admitted may post
	// (member_join.probation), or zero.
	MuteUntil time.Time
}

// Scratch holds per-decision buffers; one per goroutine, reused, so that a
// decision allocates little beyond the store's keys.
type Scratch struct {
	query  ratelimit.Query
	answer ratelimit.Answer
	guards []string
	// The rule (an index in rules) and the user each check counts.
	rules     []rule
	checkRule []int
	checkFor  []string
	// limitsRead: the limits were evaluated and their results read.
	limitsRead bool
	// users and counts: a call's distinct users, and how often each is
	// listed.
	users     []string
	counts    map[string]int
	memberIDs []string
	// Body is the response JSON for the last decision.
	Body []byte
	// Shadowed names the shadow rules that would have refused the last
	// request.
	Shadowed []string

	// The last callbacks decoded by Set.Decide, one per command.
	JoinGroup   callback.JoinGroup
	Invite      callback.Invite
	MembersJoin callback.MembersJoin
}

// Users returns the distinct users of the last invitation or members-join
// decided with s, in the order first listed: those its answer names.
func (s *Scratch) Users() []string { return s.users }

// reset starts a decision with rules.
func (s *Scratch) reset(rules []rule, mode ratelimit.Mode) {
	s.Body = s.Body[:0]
	s.Shadowed = s.Shadowed[:0]
	s.rules = rules
	s.checkRule = s.checkRule[:0]
	s.checkFor = s.checkFor[:0]
	s.limitsRead = false
	s.guards = s.guards[:0]
	s.query.Checks = s.query.Checks[:0]
	s.query.Mode = mode
	s.answer.Guard = -1
}

// JoinGroup is a compiled join-group policy. It is immutable and safe for
// concurrent use.
type JoinGroup struct {
	allow, denyApplicants, denyGroups map[string]struct{}
	maxMessage                        int
	blocked                           []string // lower case
	rules                             []rule
	keys                              Keys

	denyBody, messageBody, blockedBody []byte
	storeErrorAllows                   bool
	storeErrorBody                     []byte
}

// New compiles a policy. storeErr says how to answer when the store fails
// (worker.on_store_error and its refusal); keyPrefix starts every key.
func New(cfg config.JoinGroup, storeErr config.Worker, keyPrefix string) (*JoinGroup, error) {
	p := &JoinGroup{
		allow:            set(cfg.AllowApplicants),
		denyApplicants:   set(cfg.DenyApplicants),
		denyGroups:       set(cfg.DenyGroups),
		maxMessage:       cfg.MaxMessageBytes,
		keys:             NewKeys(keyPrefix),
		denyBody:         callback.AppendRefusal(nil, cfg.DenyRefusal.ErrCode, cfg.DenyRefusal.ErrMsg, ""),
		messageBody:      callback.AppendRefusal(nil, cfg.MessageRefusal.ErrCode, cfg.MessageRefusal.ErrMsg, ""),
		blockedBody:      callback.AppendRefusal(nil, cfg.BlockedRefusal.ErrCode, cfg.BlockedRefusal.ErrMsg, ""),
		storeErrorAllows: storeErr.OnStoreError != config.Deny,
		storeErrorBody:   callback.AppendRefusal(nil, storeErr.StoreErrorRefusal.ErrCode, storeErr.StoreErrorRefusal.ErrMsg, "retry in 1s"),
	}
	if p.storeErrorAllows {
		p.storeErrorBody = []byte(callback.AllowJSON)
	}
	for _, w := range cfg.BlockedWords {
		p.blocked = append(p.blocked, strings.ToLower(w))
	}
	rules, err := compileRules(cfg.Limits, cfg.DryRun)
	if err != nil {
		return nil, err
	}
	p.rules = rules
	return p, nil
}

// Rules returns the names of the rate-limit rules, for metric labels.
func (p *JoinGroup) Rules() []string { return ruleNames(p.rules) }

// Decide judges one application, consuming quota when it is admitted, and
// leaves the response JSON in s.Body. A store failure is answered as
// configured and also returned as an error, for the caller to count and log.
func (p *JoinGroup) Decide(ctx context.Context, req *callback.JoinGroup, st Store, s *Scratch) (Decision, error) {
	return p.decide(ctx, req, st, s, ratelimit.Consume)
}

// Explain judges an application as Decide would, without consuming quota:
// what `joingate ctl explain` shows. s.Results tells each rule's verdict.
func (p *JoinGroup) Explain(ctx context.Context, req *callback.JoinGroup, st Store, s *Scratch) (Decision, error) {
	return p.decide(ctx, req, st, s, ratelimit.Peek)
}

// The policy's steps, in order: allow-list (static, then dynamic), deny
// lists, message rules, rate limits. Static lists need no store; dynamic
// lists and limits are one store query, which evaluates no limit (and so
// consumes nothing) when a list or a message rule has decided.
func (p *JoinGroup) decide(ctx context.Context, req *callback.JoinGroup, st Store, s *Scratch, mode ratelimit.Mode) (Decision, error) {
	s.reset(p.rules, mode)
	if _, ok := p.allow[req.ApplyID]; ok {
		return p.allowed(s, ReasonAllowList), nil
	}
	local := p.local(req)

	q := &s.query
	if local != "" {
		q.Mode = ratelimit.GuardsOnly
	}
	s.guards = append(s.guards,
		p.keys.Flag(ListAllowApplicants, req.ApplyID),
		p.keys.Flag(ListDenyApplicants, req.ApplyID),
		p.keys.Flag(ListDenyGroups, req.GroupID))
	q.Guards = s.guards
	for i := range p.rules {
		r := &p.rules[i]
		s.addCheck(p.rules, i, p.keys.Rule(r.name, r.key, req.ApplyID, req.GroupID), "", 1)
	}
	a := &s.answer
	if err := st.Decide(ctx, q, a); err != nil {
		if local != "" {
			// The dynamic allow-list could not be read; the static rule stands.
			return p.refused(s, local, p.localBody(local)), nil
		}
		d := Decision{Allowed: p.storeErrorAllows, Reason: ReasonStoreError}
		s.Body = append(s.Body, p.storeErrorBody...)
		return d, err
	}
	switch a.Guard {
	case 0:
		return p.allowed(s, ReasonAllowList), nil
	case 1:
		return p.refused(s, ReasonDenyApplicant, p.denyBody), nil
	}
	if local == ReasonDenyApplicant {
		return p.refused(s, local, p.denyBody), nil
	}
	if a.Guard == 2 {
		return p.refused(s, ReasonDenyGroup, p.denyBody), nil
	}
	if local != "" {
		return p.refused(s, local, p.localBody(local)), nil
	}
	d := verdict(p.rules, a, s)
	if d.Allowed {
		s.Body = append(s.Body, callback.AllowJSON...)
	}
	return d, nil
}

// local returns the refusal of the rules that need no store (static deny
// lists, message rules), or "".
func (p *JoinGroup) local(req *callback.JoinGroup) Reason {
	if _, ok := p.denyApplicants[req.ApplyID]; ok {
		return ReasonDenyApplicant
	}
	if _, ok := p.denyGroups[req.GroupID]; ok {
		return ReasonDenyGroup
	}
	if p.maxMessage > 0 && len(req.ReqMessage) > p.maxMessage {
		return ReasonMessageLength
	}
	if len(p.blocked) > 0 {
		msg := strings.ToLower(req.ReqMessage)
		for _, w := range p.blocked {
			if strings.Contains(msg, w) {
				return ReasonBlockedWord
			}
		}
	}
	return ""
}

func (p *JoinGroup) localBody(r Reason) []byte {
	switch r {
	case ReasonDenyApplicant, ReasonDenyGroup:
		return p.denyBody
	case ReasonBlockedWord:
		return p.blockedBody
	}
	return p.messageBody
}

// RuleKind returns what the named rule is keyed by (config.KeyApplicant,
// ...), and whether the rule exists.
func (p *JoinGroup) RuleKind(name string) (string, bool) {
	r, err := findRule(p.rules, name)
	if err != nil {
		return "", false
	}
	return r.key, true
}

// Keys returns the policy's key names.
func (p *JoinGroup) Keys() Keys { return p.keys }

// Rule returns the store key and limit of the named rule for a request, for
// `joingate ctl quota`.
func (p *JoinGroup) Rule(name, applicant, group string) (ratelimit.Check, error) {
	r, err := findRule(p.rules, name)
	if err != nil {
		return ratelimit.Check{}, err
	}
	return ratelimit.Check{Key: p.keys.Rule(r.name, r.key, applicant, group), Limit: r.limit, Shadow: r.shadow}, nil
}

func (p *JoinGroup) allowed(s *Scratch, reason Reason) Decision {
	s.Body = append(s.Body, callback.AllowJSON...)
	return Decision{Allowed: true, Reason: reason}
}

func (p *JoinGroup) refused(s *Scratch, reason Reason, body []byte) Decision {
	s.Body = append(s.Body, body...)
	return Decision{Reason: reason}
}
