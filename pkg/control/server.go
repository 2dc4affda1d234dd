// Package control is the operator API of a joingate worker (served on its
// admin listener under /api/v1/) and the client `joingate ctl` uses: dynamic
// allow and deny lists, a rule's quota for a key, and a dry decision for a
// sample callback. The API changes the worker's store, so every worker that
// shares the Redis store sees the change at once; under `joingate all`
// without Redis it changes that process's memory.
package control

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/config"
	"github.com/joingate/joingate/pkg/policy"
	"github.com/joingate/joingate/pkg/ratelimit"
)

// Store is what the API changes and reads.
type Store interface {
	Decide(ctx context.Context, q *ratelimit.Query, a *ratelimit.Answer) error
	Reset(ctx context.Context, keys ...string) error
	ListAdd(ctx context.Context, index, member, flag string) error
	ListRemove(ctx context.Context, index, member, flag string) error
	ListMembers(ctx context.Context, index string) ([]string, error)
}

// Handler serves the API for the store and the policy in force (read on
// every call, so a reloaded policy applies at once).
func Handler(store Store, current func() *policy.Set, log *slog.Logger) http.Handler {
	s := &server{store: store, policy: current, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/lists/{list}", s.listMembers)
	mux.HandleFunc("PUT /api/v1/lists/{list}/{id}", s.listAdd)
	mux.HandleFunc("DELETE /api/v1/lists/{list}/{id}", s.listRemove)
	mux.HandleFunc("GET /api/v1/quota/{rule}", s.quotaShow)
	mux.HandleFunc("DELETE /api/v1/quota/{rule}", s.quotaReset)
	mux.HandleFunc("POST /api/v1/explain", s.explain)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such API call: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

type server struct {
	store  Store
	policy func() *policy.Set
	log    *slog.Logger
}

// ListResponse is the answer of the list calls.
type ListResponse struct {
	List    string   `json:"list"`
	Members []string `json:"members"`
}

// QuotaResponse is a rule's state for one key.
type QuotaResponse struct {
	Rule       string  `json:"rule"`
	Key        string  `json:"key"`
	Limit      int     `json:"limit"`
	Period     string  `json:"period"`
	Burst      int     `json:"burst"`
	Allowed    bool    `json:"allowed"`
	Remaining  int     `json:"remaining"`
	RetryAfter float64 `json:"retry_after_seconds"`
	Shadow     bool    `json:"shadow,omitempty"`
	Reset      bool    `json:"reset,omitempty"`
}

// ExplainResponse says how a callback would be decided now.
type ExplainResponse struct {
	Command  string          `json:"command"`
	Callback ExplainCallback `json:"callback"`
	Decision string          `json:"decision"`
	Reason   string          `json:"reason"`
	Rule     string          `json:"rule,omitempty"`
	Answer   json.RawMessage `json:"answer"`
	Rules    []RuleVerdict   `json:"rules,omitempty"`
	// MuteUntil is when the members admitted may post (member_join
	// probation), RFC 3339 with milliseconds, as muteEndTime says.
	MuteUntil string `json:"mute_until,omitempty"`
	Error     string `json:"store_error,omitempty"`
}

// ExplainCallback is the callback as joingate read it. GroupType is the
// number the sender meant (IMServer's "\u0002" is 2; -1: none), shown and
// never judged.
type ExplainCallback struct {
	GroupID   string `json:"groupID"`
	ApplyID   string `json:"applyID,omitempty"`
	GroupType int32  `json:"groupType,omitempty"`
	// Users are the users an invitation or members-join lists.
	Users []string `json:"users,omitempty"`
}

// RuleVerdict is one limit check's verdict in an explanation: a rule, and
// for a rule keyed by user, the user it counted and how many times.
type RuleVerdict struct {
	Name    string `json:"name"`
	For     string `json:"for,omitempty"`
	Cost    int    `json:"cost"`
	Allowed bool   `json:"allowed"`
	// Never: the call asks more than the rule's burst at once; no wait
	// admits it.
	Never      bool    `json:"never,omitempty"`
	Remaining  int     `json:"remaining"`
	RetryAfter float64 `json:"retry_after_seconds"`
}

// errorResponse is every error's body.
type errorResponse struct {
	Error string `json:"error"`
}

func (s *server) list(w http.ResponseWriter, r *http.Request) (string, bool) {
	list := r.PathValue("list")
	if !slices.Contains(policy.Lists, list) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no list %q (lists: %s)", list, strings.Join(policy.Lists, ", ")))
		return "", false
	}
	return list, true
}

func (s *server) listMembers(w http.ResponseWriter, r *http.Request) {
	list, ok := s.list(w, r)
	if !ok {
		return
	}
	members, err := s.store.ListMembers(r.Context(), s.policy().Keys().Index(list))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, ListResponse{List: list, Members: members})
}

func (s *server) listAdd(w http.ResponseWriter, r *http.Request)    { s.listChange(w, r, true) }
func (s *server) listRemove(w http.ResponseWriter, r *http.Request) { s.listChange(w, r, false) }

func (s *server) listChange(w http.ResponseWriter, r *http.Request, add bool) {
	list, ok := s.list(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if id == "" {
		writeError(w, http.StatusBadRequest, errors.New("empty ID"))
		return
	}
	k := s.policy().Keys()
	op, change := "removed from", s.store.ListRemove
	if add {
		op, change = "added to", s.store.ListAdd
	}
	if err := change(r.Context(), k.Index(list), id, k.Flag(list, id)); err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	s.log.Info("dynamic list changed", "list", list, "id", id, "op", op, "remote", r.RemoteAddr)
	s.listMembers(w, r)
}

// sections name the commands' policies as the config does, for ?command=
// (the command's own name works too).
var sections = map[string]string{
	"join_group":      callback.JoinGroupCommand,
	"invite_to_group": callback.InviteCommand,
	"member_join":     callback.MembersJoinCommand,
}

// ruleCheck resolves ?command= (join_group when absent) and ?id= values to
// the rule's key: the user (applicant, invitee, member) for a rule keyed
// by one, the group for a group rule, both (user first) for a user and
// group rule, none for a global rule.
func (s *server) ruleCheck(w http.ResponseWriter, r *http.Request) (ratelimit.Check, bool) {
	command := r.URL.Query().Get("command")
	if c, ok := sections[command]; ok || command == "" {
		command = cmp.Or(c, callback.JoinGroupCommand)
	}
	p, ok := s.policy().Limits(command)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no policy %q (join_group, invite_to_group, member_join)", command))
		return ratelimit.Check{}, false
	}
	rule := r.PathValue("rule")
	ids := r.URL.Query()["id"]
	kind, ok := p.RuleKind(rule)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no limit rule %q in %s (rules: %v)", rule, command, p.Rules()))
		return ratelimit.Check{}, false
	}
	want := 1
	switch kind {
	case config.KeyApplicantGroup, config.KeyMemberGroup:
		want = 2
	case config.KeyGlobal:
		want = 0
	}
	if len(ids) != want {
		writeError(w, http.StatusBadRequest, fmt.Errorf("rule %q is keyed by %s: give %d ID(s), got %d", rule, kind, want, len(ids)))
		return ratelimit.Check{}, false
	}
	if slices.Contains(ids, "") {
		writeError(w, http.StatusBadRequest, errors.New("empty ID: IMServer never sends one"))
		return ratelimit.Check{}, false
	}
	var user, group string
	switch {
	case kind == config.KeyGroup:
		group = ids[0]
	case want == 1:
		user = ids[0]
	case want == 2:
		user, group = ids[0], ids[1]
	}
	c, err := p.Rule(rule, user, group)
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return ratelimit.Check{}, false
	}
	return c, true
}

func (s *server) quotaShow(w http.ResponseWriter, r *http.Request) {
	c, ok := s.ruleCheck(w, r)
	if !ok {
		return
	}
	var a ratelimit.Answer
	if err := s.store.Decide(r.Context(), &ratelimit.Query{Checks: []ratelimit.Check{c}, Mode: ratelimit.Peek}, &a); err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, quota(r.PathValue("rule"), c, a.Results[0], false))
}

func (s *server) quotaReset(w http.ResponseWriter, r *http.Request) {
	c, ok := s.ruleCheck(w, r)
	if !ok {
		return
	}
	if err := s.store.Reset(r.Context(), c.Key); err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	s.log.Info("quota reset", "rule", r.PathValue("rule"), "key", c.Key, "remote", r.RemoteAddr)
	full := ratelimit.Result{Allowed: true, Remaining: c.Limit.Burst - 1}
	writeJSON(w, http.StatusOK, quota(r.PathValue("rule"), c, full, true))
}

// quota describes a peek. Remaining counts the requests admitted after the
// next one; an operator wants "how many more", so the next one is added.
func quota(rule string, c ratelimit.Check, res ratelimit.Result, reset bool) QuotaResponse {
	q := QuotaResponse{
		Rule: rule, Key: c.Key, Limit: c.Limit.Rate, Period: c.Limit.Period.String(), Burst: c.Limit.Burst,
		Allowed: res.Allowed, RetryAfter: res.RetryAfter.Seconds(), Shadow: c.Shadow, Reset: reset,
	}
	if res.Allowed {
		q.Remaining = res.Remaining + 1
	}
	return q
}

// maxExplainBody bounds the sample callback explain reads.
const maxExplainBody = 1 << 20

func (s *server) explain(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxExplainBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("read body: %w", err))
		return
	}
	// The body names its command, as IMServer writes it; a body without
	// one is an application, as before the other commands had policies.
	var head struct {
		CallbackCommand string `json:"callbackCommand"`
	}
	json.Unmarshal(body, &head) // a body that is not JSON fails to decode below
	command := cmp.Or(head.CallbackCommand, callback.JoinGroupCommand)
	if _, ok := s.policy().Limits(command); !ok {
		writeError(w, http.StatusBadRequest, fmt.Errorf("no policy for callbackCommand %q (joingate answers it allow at the edge)", command))
		return
	}
	p := s.policy()
	var scratch policy.Scratch
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	d, err := p.Explain(ctx, command, body, s.store, &scratch)
	if errors.Is(err, callback.ErrMalformed) {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	resp := ExplainResponse{
		Command:  command,
		Decision: "refuse", Reason: string(d.Reason), Rule: d.Rule, Answer: json.RawMessage(scratch.Body),
	}
	switch command {
	case callback.JoinGroupCommand:
		req := &scratch.JoinGroup
		resp.Callback = ExplainCallback{GroupID: req.GroupID, ApplyID: req.ApplyID, GroupType: req.GroupType}
	case callback.InviteCommand:
		resp.Callback = ExplainCallback{GroupID: scratch.Invite.GroupID, Users: scratch.Invite.InvitedUserIDs}
	case callback.MembersJoinCommand:
		resp.Callback = ExplainCallback{GroupID: scratch.MembersJoin.GroupID}
		for _, m := range scratch.MembersJoin.MemberList {
			resp.Callback.Users = append(resp.Callback.Users, m.UserID)
		}
	}
	if d.Allowed {
		resp.Decision = "allow"
	}
	if !d.MuteUntil.IsZero() {
		resp.MuteUntil = d.MuteUntil.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	if err != nil {
		resp.Error = err.Error()
	}
	for _, v := range scratch.Verdicts() {
		resp.Rules = append(resp.Rules, RuleVerdict{Name: v.Rule, For: v.For, Cost: v.Cost, Allowed: v.Result.Allowed, Never: v.Result.Never,
			Remaining: v.Result.Remaining, RetryAfter: v.Result.RetryAfter.Seconds()})
	}
	writeJSON(w, http.StatusOK, resp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, errorResponse{Error: err.Error()})
}
