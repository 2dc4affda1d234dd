package callback

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// WorkingGroup is the group type of every OpenIM v3 group
// (constant.WorkingGroup).
const WorkingGroup = 2

// AppendIMServerJoinGroup appends the body IMServer posts for r, byte for
// byte as open-im-server v3.8.3 writes it: encoding/json of its
// callbackstruct.CallbackJoinGroupReq (these fields in this order,
// groupType as Go's string(int32) of r.GroupType, so 2 is "\u0002", HTML
// characters escaped, invalid UTF-8 as U+FFFD) and the newline that
// json.Encoder ends with. The load generator and the test fixtures send it,
// so that nothing speaks the docs' dialect by accident; the conformance
// suite (pkg/conformance) checks it against OpenIM's own encoder.
func AppendIMServerJoinGroup(dst []byte, r *JoinGroup) []byte {
	var gt [utf8.UTFMax]byte
	dst = append(dst, `{"callbackCommand":`...)
	dst = AppendString(dst, r.CallbackCommand)
	dst = append(dst, `,"groupID":`...)
	dst = AppendString(dst, r.GroupID)
	dst = append(dst, `,"groupType":`...)
	// string(int32) of an invalid code point is U+FFFD; so is AppendRune's.
	dst = AppendString(dst, string(utf8.AppendRune(gt[:0], r.GroupType)))
	dst = append(dst, `,"applyID":`...)
	dst = AppendString(dst, r.ApplyID)
	dst = append(dst, `,"reqMessage":`...)
	dst = AppendString(dst, r.ReqMessage)
	dst = append(dst, `,"ex":`...)
	dst = AppendString(dst, r.Ex)
	return append(dst, "}\n"...)
}

// IMServerJoinGroup is the body IMServer posts when applyID applies to join
// the working group groupID with the message reqMessage: the fixture of
// every test that speaks for IMServer.
func IMServerJoinGroup(groupID, applyID, reqMessage string) string {
	return string(AppendIMServerJoinGroup(nil, &JoinGroup{
		CallbackCommand: JoinGroupCommand,
		GroupID:         groupID,
		GroupType:       WorkingGroup,
		ApplyID:         applyID,
		ReqMessage:      reqMessage,
	}))
}

// IMServerInvite is the body IMServer posts before the users invited are
// invited into groupID: encoding/json of callbackstruct's
// CallbackBeforeInviteUserToGroupReq, whose fields Invite repeats in order,
// with the newline json.Encoder ends with.
func IMServerInvite(groupID, reason string, invited ...string) string {
	return imserverJSON(&Invite{
		CallbackCommand: InviteCommand,
		OperationID:     "op-" + groupID,
		GroupID:         groupID,
		Reason:          reason,
		InvitedUserIDs:  invited,
	})
}

// IMServerMembersJoin is the body IMServer posts before userIDs become
// members of groupID, however they join: encoding/json of callbackstruct's
// CallbackBeforeMembersJoinGroupReq (each member's ex as IMServer has it:
// empty), with json.Encoder's newline.
func IMServerMembersJoin(groupID string, userIDs ...string) string {
	r := &MembersJoin{CallbackCommand: MembersJoinCommand, GroupID: groupID}
	for _, id := range userIDs {
		r.MemberList = append(r.MemberList, &Member{UserID: id})
	}
	return imserverJSON(r)
}

func imserverJSON(v any) string {
	var b strings.Builder
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		panic(err) // the values above always encode
	}
	return b.String()
}
