// Package policy decides a join-group application: allow-list, deny lists,
// message rules, then rate limits checked in one store call.
package policy

import (
	"context"
	"fmt"
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

// Outcomes lists every Outcome a decision can have: metric series are
// pre-created for these and no others (a refusal is never "passed", an
// allowance never "deny_group"). A store error allows or refuses as
// worker.on_store_error says.
var Outcomes = []Outcome{
	{true, ReasonAllowList}, {true, ReasonPassed}, {true, ReasonStoreError},
	{false, ReasonDenyApplicant}, {false, ReasonDenyGroup}, {false, ReasonMessageLength},
	{false, ReasonBlockedWord}, {false, ReasonRateLimit}, {false, ReasonStoreError},
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
}

// Scratch holds per-decision buffers; one per goroutine, reused, so that a
// decision allocates little beyond the store's keys.
type Scratch struct {
	query  ratelimit.Query
	answer ratelimit.Answer
	guards [3]string
	// Body is the response JSON for the last decision.
	Body []byte
	// Shadowed names the shadow rules that would have refused the last
	// request.
	Shadowed []string
}

type rule struct {
	name   string
	key    string
	limit  ratelimit.Limit
	code   int
	msg    string
	shadow bool
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
	set := func(ids []string) map[string]struct{} {
		m := make(map[string]struct{}, len(ids))
		for _, id := range ids {
			m[id] = struct{}{}
		}
		return m
	}
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
	for _, l := range cfg.Limits {
		r := rule{
			name:   l.Name,
			key:    l.Key,
			limit:  ratelimit.Limit{Rate: l.Limit, Period: l.Period, Burst: l.Burst},
			code:   l.ErrCode,
			msg:    l.ErrMsg,
			shadow: l.Shadow || cfg.DryRun,
		}
		if r.limit.Burst == 0 {
			r.limit.Burst = r.limit.Rate
		}
		if err := r.limit.Validate(); err != nil {
			return nil, fmt.Errorf("limit %q: %w", l.Name, err)
		}
		if l.ErrCode < callback.MinRefusalCode || l.ErrCode > callback.MaxRefusalCode {
			return nil, fmt.Errorf("limit %q: err_code %d outside %d-%d", l.Name, l.ErrCode, callback.MinRefusalCode, callback.MaxRefusalCode)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

// Rules returns the names of the rate-limit rules, for metric labels.
func (p *JoinGroup) Rules() []string {
	names := make([]string, len(p.rules))
	for i, r := range p.rules {
		names[i] = r.name
	}
	return names
}

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
	s.Body = s.Body[:0]
	s.Shadowed = s.Shadowed[:0]
	if _, ok := p.allow[req.ApplyID]; ok {
		return p.allowed(s, ReasonAllowList), nil
	}
	local := p.local(req)

	q := &s.query
	q.Mode = mode
	if local != "" {
		q.Mode = ratelimit.GuardsOnly
	}
	s.guards = [3]string{
		p.keys.Flag(ListAllowApplicants, req.ApplyID),
		p.keys.Flag(ListDenyApplicants, req.ApplyID),
		p.keys.Flag(ListDenyGroups, req.GroupID),
	}
	q.Guards = s.guards[:]
	q.Checks = q.Checks[:0]
	for i := range p.rules {
		r := &p.rules[i]
		q.Checks = append(q.Checks, ratelimit.Check{Key: p.keys.Rule(r.name, r.key, req.ApplyID, req.GroupID), Limit: r.limit, Shadow: r.shadow})
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

	refusing := -1
	var retry time.Duration
	for i := range p.rules {
		res := &a.Results[i]
		if res.Allowed {
			continue
		}
		if p.rules[i].shadow {
			s.Shadowed = append(s.Shadowed, p.rules[i].name)
			continue
		}
		if refusing < 0 {
			refusing = i
		}
		// The request passes only once every refusing rule admits it.
		retry = max(retry, res.RetryAfter)
	}
	if refusing < 0 {
		return p.allowed(s, ReasonPassed), nil
	}
	r := &p.rules[refusing]
	secs := int64((retry + time.Second - 1) / time.Second)
	s.Body = callback.AppendRetryRefusal(s.Body, r.code, r.msg, max(secs, 1))
	return Decision{Reason: ReasonRateLimit, Rule: r.name}, nil
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

// Results returns the rule names and their verdicts from the last decision
// made with s (empty when a list or message rule decided first).
func (p *JoinGroup) Results(s *Scratch) ([]string, []ratelimit.Result) {
	if s.answer.Guard >= 0 || s.query.Mode == ratelimit.GuardsOnly {
		return nil, nil
	}
	return p.Rules(), s.answer.Results
}

// RuleKind returns what the named rule is keyed by (config.KeyApplicant,
// ...), and whether the rule exists.
func (p *JoinGroup) RuleKind(name string) (string, bool) {
	for _, r := range p.rules {
		if r.name == name {
			return r.key, true
		}
	}
	return "", false
}

// Keys returns the policy's key names.
func (p *JoinGroup) Keys() Keys { return p.keys }

// Rule returns the store key and limit of the named rule for a request, for
// `joingate ctl quota`.
func (p *JoinGroup) Rule(name, applicant, group string) (ratelimit.Check, error) {
	for _, r := range p.rules {
		if r.name == name {
			return ratelimit.Check{Key: p.keys.Rule(r.name, r.key, applicant, group), Limit: r.limit, Shadow: r.shadow}, nil
		}
	}
	return ratelimit.Check{}, fmt.Errorf("no limit rule %q (rules: %s)", name, strings.Join(p.Rules(), ", "))
}

func (p *JoinGroup) allowed(s *Scratch, reason Reason) Decision {
	s.Body = append(s.Body, callback.AllowJSON...)
	return Decision{Allowed: true, Reason: reason}
}

func (p *JoinGroup) refused(s *Scratch, reason Reason, body []byte) Decision {
	s.Body = append(s.Body, body...)
	return Decision{Reason: reason}
}
