package policy

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/ratelimit"
)

// What every policy shares: named GCRA rules checked in one store query,
// and the verdict read from their results.

type rule struct {
	name   string
	key    string // config.KeyApplicant, ...
	limit  ratelimit.Limit
	code   int
	msg    string
	shadow bool
}

// compileRules turns a section's limits into rules; dryRun makes every one
// a shadow rule.
func compileRules(limits []config.Limit, dryRun bool) ([]rule, error) {
	var rules []rule
	for _, l := range limits {
		r := rule{
			name:   l.Name,
			key:    l.Key,
			limit:  ratelimit.Limit{Rate: l.Limit, Period: l.Period, Burst: l.Burst},
			code:   l.ErrCode,
			msg:    l.ErrMsg,
			shadow: l.Shadow || dryRun,
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
		rules = append(rules, r)
	}
	return rules, nil
}

func ruleNames(rules []rule) []string {
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.name
	}
	return names
}

func findRule(rules []rule, name string) (*rule, error) {
	for i := range rules {
		if rules[i].name == name {
			return &rules[i], nil
		}
	}
	return nil, fmt.Errorf("no limit rule %q (rules: %v)", name, ruleNames(rules))
}

// addCheck appends to the query one check of rule i for user (empty for a
// rule not keyed by a user), and remembers which rule and user it counts.
func (s *Scratch) addCheck(rules []rule, i int, key, user string, cost int) {
	r := &rules[i]
	s.query.Checks = append(s.query.Checks, ratelimit.Check{Key: key, Limit: r.limit, Shadow: r.shadow, Cost: cost})
	s.checkRule = append(s.checkRule, i)
	s.checkFor = append(s.checkFor, user)
}

// verdict reads the limits' results: the request passes when every
// enforcing check admits it. Otherwise a rule it asks more of at once than
// its burst answers, since no wait would admit it; failing that, the first
// refusing rule answers, with the longest wait among the refusing checks.
// Shadow rules that would have refused are named once each in s.Shadowed.
func verdict(rules []rule, a *ratelimit.Answer, s *Scratch) Decision {
	s.limitsRead = true
	refusing, never := -1, -1
	var retry time.Duration
	for i := range s.query.Checks {
		res := &a.Results[i]
		r := &rules[s.checkRule[i]]
		if s.query.Checks[i].Cost > r.limit.Burst {
			// Known without the store, which a refusal from memory may not
			// have asked about this check.
			res.Allowed, res.Never = false, true
		}
		if res.Allowed {
			continue
		}
		if r.shadow {
			if !slices.Contains(s.Shadowed, r.name) {
				s.Shadowed = append(s.Shadowed, r.name)
			}
			continue
		}
		if refusing < 0 {
			refusing = s.checkRule[i]
		}
		if res.Never && never < 0 {
			never = s.checkRule[i]
		}
		// The request passes only once every refusing check admits it.
		retry = max(retry, res.RetryAfter)
	}
	if refusing < 0 {
		return Decision{Allowed: true, Reason: ReasonPassed}
	}
	if never >= 0 {
		r := &rules[never]
		s.Body = callback.AppendRefusal(s.Body, r.code, r.msg, "more than "+strconv.Itoa(r.limit.Burst)+" at once")
		return Decision{Reason: ReasonRateLimit, Rule: r.name}
	}
	r := &rules[refusing]
	secs := int64((retry + time.Second - 1) / time.Second)
	s.Body = callback.AppendRetryRefusal(s.Body, r.code, r.msg, max(secs, 1))
	return Decision{Reason: ReasonRateLimit, Rule: r.name}
}

// Verdict is one limit check's result in the last decision: the rule, the
// user it counted (empty for a rule keyed by group or global) and how many
// requests it asked for.
type Verdict struct {
	Rule   string
	For    string
	Cost   int
	Result ratelimit.Result
}

// Verdicts returns the limit checks of the last decision made with s, or
// none when a list or a local rule decided before the limits.
func (s *Scratch) Verdicts() []Verdict {
	if !s.limitsRead {
		return nil
	}
	out := make([]Verdict, len(s.query.Checks))
	for i := range s.query.Checks {
		out[i] = Verdict{Rule: s.rules[s.checkRule[i]].name, For: s.checkFor[i], Cost: max(s.query.Checks[i].Cost, 1), Result: s.answer.Results[i]}
	}
	return out
}
