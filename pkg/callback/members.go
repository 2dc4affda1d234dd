package callback

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// The two other callbacks that let users into a group (open-im-server
// v3.8.3, internal/rpc/group): an invitation, before anyone is invited, and
// every way users become members (creation with initial members,
// invitation, approval of an application, direct join).
const (
	InviteCommand      = "callbackBeforeInviteJoinGroupCommand"
	MembersJoinCommand = "callbackBeforeMembersJoinGroupCommand"
)

// Commands are the callbacks joingate decides: the gateway sends these
// through NATS and answers every other one at the edge.
var Commands = []string{JoinGroupCommand, InviteCommand, MembersJoinCommand}

// Invite is the body of callbackBeforeInviteJoinGroupCommand
// (callbackstruct.CallbackBeforeInviteUserToGroupReq). The inviter is not
// in it: IMServer sends only the operation ID.
type Invite struct {
	CallbackCommand string   `json:"callbackCommand"`
	OperationID     string   `json:"operationID"`
	GroupID         string   `json:"groupID"`
	Reason          string   `json:"reason"`
	InvitedUserIDs  []string `json:"invitedUserIDs"`
}

// MembersJoin is the body of callbackBeforeMembersJoinGroupCommand
// (callbackstruct.CallbackBeforeMembersJoinGroupReq).
type MembersJoin struct {
	CallbackCommand string    `json:"callbackCommand"`
	GroupID         string    `json:"groupID"`
	MemberList      []*Member `json:"memberList"`
	GroupEx         string    `json:"groupEx"`
}

// Member is one user about to become a member (callbackstruct.CallbackGroupMember).
type Member struct {
	UserID string `json:"userID"`
	Ex     string `json:"ex"`
}

// These two are decoded by encoding/json, as OpenIM decodes what it reads:
// they arrive far less often than applications, so the hand-written
// scanner of DecodeJoinGroup would not pay for itself.

// DecodeInvite decodes an invitation body into r. groupID and at least one
// invited user are required (IMServer refuses an empty invitation before it
// calls).
func DecodeInvite(body []byte, r *Invite) error {
	*r = Invite{InvitedUserIDs: r.InvitedUserIDs[:0]}
	if err := decodeObject(body, r); err != nil {
		return err
	}
	switch {
	case r.GroupID == "":
		return malformed("groupID is missing or empty")
	case len(r.InvitedUserIDs) == 0:
		return malformed("invitedUserIDs is missing or empty")
	}
	for i, id := range r.InvitedUserIDs {
		if id == "" {
			return malformed("invitedUserIDs[" + strconv.Itoa(i) + "] is empty")
		}
	}
	return nil
}

// DecodeMembersJoin decodes a members-join body into r. groupID and at
// least one member, each with a userID, are required: IMServer reads the
// answer's memberCallbackList by userID.
func DecodeMembersJoin(body []byte, r *MembersJoin) error {
	*r = MembersJoin{}
	if err := decodeObject(body, r); err != nil {
		return err
	}
	if r.GroupID == "" {
		return malformed("groupID is missing or empty")
	}
	if len(r.MemberList) == 0 {
		return malformed("memberList is missing or empty")
	}
	for i, m := range r.MemberList {
		if m == nil || m.UserID == "" {
			return malformed("memberList[" + strconv.Itoa(i) + "] has no userID")
		}
	}
	return nil
}

// decodeObject reads body, a JSON object, into v as encoding/json does,
// with every error wrapping ErrMalformed.
func decodeObject(body []byte, v any) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return malformed("empty body")
	case trimmed[0] != '{':
		return malformed("body is not a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// Validate reports whether the worker would accept body for command (one of
// Commands): the edge answers a malformed callback itself.
func Validate(command string, body []byte) error {
	switch command {
	case JoinGroupCommand:
		return ValidateJoinGroup(body)
	case InviteCommand:
		var r Invite
		return DecodeInvite(body, &r)
	case MembersJoinCommand:
		var r MembersJoin
		return DecodeMembersJoin(body, &r)
	}
	return fmt.Errorf("%w: no policy for %s", ErrMalformed, command)
}

// AppendMembersAllow appends the answer that lets users join with a
// muteEndTime (Unix milliseconds) for each: IMServer sets it on the member
// it matches by userID (callbackstruct.MemberJoinGroupCallBack; the other
// fields are left out, so IMServer keeps its own values).
func AppendMembersAllow(dst []byte, userIDs []string, muteEndMillis int64) []byte {
	dst = append(dst, AllowJSON[:len(AllowJSON)-1]...)
	dst = append(dst, `,"memberCallbackList":[`...)
	for i, id := range userIDs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"userID":`...)
		dst = AppendString(dst, id)
		dst = append(dst, `,"muteEndTime":`...)
		dst = strconv.AppendInt(dst, muteEndMillis, 10)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
