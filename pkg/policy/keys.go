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

// Dynamic lists that `joingate ctl` manages. join_group's have the names
// they had before the other commands got policies; the others are named
// by their section and key.
const (
	ListAllowApplicants = "allow_applicants"
	ListDenyApplicants  = "deny_applicants"
	ListDenyGroups      = "deny_groups"

	ListInviteAllowGroups  = "invite_to_group.allow_groups"
	ListInviteDenyGroups   = "invite_to_group.deny_groups"
	ListInviteDenyInvitees = "invite_to_group.deny_invitees"

	ListMemberAllowGroups = "member_join.allow_groups"
	ListMemberDenyGroups  = "member_join.deny_groups"
	ListMemberDenyMembers = "member_join.deny_members"
)

// lists says where each list keeps its entries: under the user's or the
// group's hash tag, with a suffix of its own.
var lists = []struct {
	name   string
	group  bool
	suffix string
}{
	{ListAllowApplicants, false, "allow"},
	{ListDenyApplicants, false, "deny"},
	{ListDenyGroups, true, "deny"},
	{ListInviteAllowGroups, true, "invite:allow"},
	{ListInviteDenyGroups, true, "invite:deny"},
	{ListInviteDenyInvitees, false, "invite:deny"},
	{ListMemberAllowGroups, true, "member:allow"},
	{ListMemberDenyGroups, true, "member:deny"},
	{ListMemberDenyMembers, false, "member:deny"},
}

// Lists names the dynamic lists, for validating ctl input.
var Lists = func() []string {
	names := make([]string, len(lists))
	for i, l := range lists {
		names[i] = l.name
	}
	return names
}()

func (k Keys) applicant(id string) string { return k.prefix + "{a:" + escape(id) + "}:" }
func (k Keys) group(id string) string     { return k.prefix + "{g:" + escape(id) + "}:" }

// Flag is the key whose existence puts id on list, one of Lists.
func (k Keys) Flag(list, id string) string {
	for _, l := range lists {
		if l.name == list {
			if l.group {
				return k.group(id) + l.suffix
			}
			return k.applicant(id) + l.suffix
		}
	}
	return k.prefix + "{lists}:unknown:" + escape(list) // never a guard: lists are validated
}

// Index is the set that lists the members of list, for listing only.
func (k Keys) Index(list string) string { return k.prefix + "{lists}:" + list }

// Rule is the counter of a join_group limit rule keyed by kind for one
// request.
func (k Keys) Rule(rule, kind, applicant, group string) string {
	return k.counter(nsJoinGroup, rule, kind, applicant, group)
}

// Counter namespaces: a rule's name is unique in its section only, so each
// section counts under its own.
const (
	nsJoinGroup  = "rl:"
	nsInvite     = "il:"
	nsMemberJoin = "ml:"
)

// counter is the key of rule (in namespace ns) keyed by kind, for a user
// (applicant, invitee or member) and a group. Every user's counters share
// the user's hash tag, whatever the command.
func (k Keys) counter(ns, rule, kind, user, group string) string {
	switch kind {
	case config.KeyApplicant, config.KeyInvitee, config.KeyMember:
		return k.applicant(user) + ns + rule
	case config.KeyGroup:
		return k.group(group) + ns + rule
	case config.KeyApplicantGroup, config.KeyMemberGroup:
		return k.applicant(user) + ns + rule + ":" + escape(group)
	default:
		return k.prefix + "{global}:" + ns + rule
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
