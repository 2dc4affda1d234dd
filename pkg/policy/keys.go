package policy

import (
	"strings"

	"github.com/joingate/joingate/pkg/config"
)

// Keys names everything joingate keeps in the store. Every key of one
// applicant shares the hash tag {a:<applicant>}, every key of one group
// {g:<group>}, so that on Redis Cluster a request's applicant rules and
// lists are decided together on one shard, its group rules on another.
type Keys struct {
	prefix string
}

// NewKeys returns the key names under prefix (redis.key_prefix), which must
// not contain "{" or "}".
func NewKeys(prefix string) Keys { return Keys{prefix: prefix} }

// Dynamic lists that `joingate ctl` manages.
const (
	ListAllowApplicants = "allow_applicants"
	ListDenyApplicants  = "deny_applicants"
	ListDenyGroups      = "deny_groups"
)

// Lists names the dynamic lists, for validating ctl input.
var Lists = []string{ListAllowApplicants, ListDenyApplicants, ListDenyGroups}

func (k Keys) applicant(id string) string { return k.prefix + "{a:" + escape(id) + "}:" }
func (k Keys) group(id string) string     { return k.prefix + "{g:" + escape(id) + "}:" }

// Flag is the key whose existence puts id on the list.
func (k Keys) Flag(list, id string) string {
	switch list {
	case ListAllowApplicants:
		return k.applicant(id) + "allow"
	case ListDenyApplicants:
		return k.applicant(id) + "deny"
	default:
		return k.group(id) + "deny"
	}
}

// Index is the set that lists the members of list, for listing only.
func (k Keys) Index(list string) string { return k.prefix + "{lists}:" + list }

// Rule is the counter of a limit rule keyed by kind for one request.
func (k Keys) Rule(rule, kind, applicant, group string) string {
	switch kind {
	case config.KeyApplicant:
		return k.applicant(applicant) + "rl:" + rule
	case config.KeyGroup:
		return k.group(group) + "rl:" + rule
	case config.KeyApplicantGroup:
		return k.applicant(applicant) + "rl:" + rule + ":" + escape(group)
	default:
		return k.prefix + "{global}:rl:" + rule
	}
}

// escape keeps IDs from breaking the key structure: "{", "}", ":" and "%"
// become %XX, so no two (applicant, group) pairs share a key and no ID ends
// a hash tag early.
func escape(id string) string {
	if !strings.ContainsAny(id, "{}:%") {
		return id
	}
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		switch c := id[i]; c {
		case '{', '}', ':', '%':
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
