// Package policy decides a join-group application: allow-list, deny lists,
// message rules, then rate limits checked in one store call.
package policy

import (
	"context"
	"fmt"
	"strconv"
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

// Reasons lists every Reason, for pre-creating metric series.
var Reasons = []Reason{ReasonAllowList, ReasonDenyApplicant, ReasonDenyGroup, ReasonMessageLength, ReasonBlockedWord, ReasonRateLimit, ReasonStoreError, ReasonPassed}

// Limiter admits a request against several limits at once, all or nothing.
type Limiter interface {
	Allow(ctx context.Context, checks []ratelimit.Check, results []ratelimit.Result) error
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
	checks  []ratelimit.Check
	results []ratelimit.Result
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
	prefix                            string

	denyBody, messageBody []byte
	storeErrorAllows      bool
	storeErrorBody        []byte
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
		prefix:           keyPrefix + "rl:",
		denyBody:         callback.AppendRefusal(nil, cfg.DenyRefusal.ErrCode, cfg.DenyRefusal.ErrMsg, ""),
		messageBody:      callback.AppendRefusal(nil, cfg.MessageRefusal.ErrCode, cfg.MessageRefusal.ErrMsg, ""),
		storeErrorAllows: storeErr.OnStoreError != config.Deny,
		storeErrorBody:   callback.AppendRefusal(nil, storeErr.StoreErrorRefusal.ErrCode, storeErr.StoreErrorRefusal.ErrMsg, "retry in 1s"),
	}
	if p.storeErrorAllows {
		p.storeErrorBody = callback.AllowBody
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
			shadow: l.Shadow,
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

// Decide judges one application and leaves the response JSON in s.Body.
// A store failure is answered as configured and also returned as an error,
// for the caller to count and log.
func (p *JoinGroup) Decide(ctx context.Context, req *callback.JoinGroup, lim Limiter, s *Scratch) (Decision, error) {
	s.Body = s.Body[:0]
	s.Shadowed = s.Shadowed[:0]
	if _, ok := p.allow[req.ApplyID]; ok {
		return p.allowed(s, ReasonAllowList), nil
	}
	if _, ok := p.denyApplicants[req.ApplyID]; ok {
		return p.refused(s, ReasonDenyApplicant, p.denyBody), nil
	}
	if _, ok := p.denyGroups[req.GroupID]; ok {
		return p.refused(s, ReasonDenyGroup, p.denyBody), nil
	}
	if p.maxMessage > 0 && len(req.ReqMessage) > p.maxMessage {
		return p.refused(s, ReasonMessageLength, p.messageBody), nil
	}
	if len(p.blocked) > 0 {
		msg := strings.ToLower(req.ReqMessage)
		for _, w := range p.blocked {
			if strings.Contains(msg, w) {
				return p.refused(s, ReasonBlockedWord, p.messageBody), nil
			}
		}
	}
	if len(p.rules) == 0 {
		return p.allowed(s, ReasonPassed), nil
	}

	s.checks = s.checks[:0]
	for i := range p.rules {
		r := &p.rules[i]
		s.checks = append(s.checks, ratelimit.Check{Key: p.key(r, req), Limit: r.limit, Shadow: r.shadow})
	}
	if cap(s.results) < len(s.checks) {
		s.results = make([]ratelimit.Result, len(s.checks))
	}
	s.results = s.results[:len(s.checks)]
	if err := lim.Allow(ctx, s.checks, s.results); err != nil {
		d := Decision{Allowed: p.storeErrorAllows, Reason: ReasonStoreError}
		s.Body = append(s.Body, p.storeErrorBody...)
		return d, err
	}

	refusing := -1
	var retry time.Duration
	for i := range p.rules {
		res := &s.results[i]
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

func (p *JoinGroup) allowed(s *Scratch, reason Reason) Decision {
	s.Body = append(s.Body, callback.AllowBody...)
	return Decision{Allowed: true, Reason: reason}
}

func (p *JoinGroup) refused(s *Scratch, reason Reason, body []byte) Decision {
	s.Body = append(s.Body, body...)
	return Decision{Reason: reason}
}

// key names a rule's counter for one request. The applicant-group key
// carries the applicant's length so that no two pairs of IDs collide.
func (p *JoinGroup) key(r *rule, req *callback.JoinGroup) string {
	switch r.key {
	case config.KeyApplicant:
		return p.prefix + r.name + ":a:" + req.ApplyID
	case config.KeyGroup:
		return p.prefix + r.name + ":g:" + req.GroupID
	case config.KeyApplicantGroup:
		return p.prefix + r.name + ":ag:" + strconv.Itoa(len(req.ApplyID)) + ":" + req.ApplyID + ":" + req.GroupID
	default:
		return p.prefix + r.name + ":global"
	}
}
