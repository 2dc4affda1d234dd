package callback

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzDecodeMembers: any body, as either command, is decoded or refused
// with ErrMalformed, never a panic; what is accepted has what the policy
// needs, and a members-join answer for its users is JSON OpenIM reads back.
func FuzzDecodeMembers(f *testing.F) {
	for _, seed := range []string{
		IMServerInvite("g1", "hi <3", "u1", "u2"),
		IMServerMembersJoin("g1", "u1", "u2"),
		`{"groupID":"g","invitedUserIDs":null}`,
		`{"groupID":"g","invitedUserIDs":["a",""]}`,
		`{"groupID":"g","memberList":[null]}`,
		`{"groupID":"g","memberList":[{"userID":"\ud800"}]}`,
		`{"GROUPID":"g","InvitedUserIDs":["a"]}`,
		` {"groupID":"g","memberList":[{"userID":"a","ex":1}]}`,
		"[", "", "{}", "null",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var inv Invite
		if err := DecodeInvite([]byte(body), &inv); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeInvite(%q): %v does not wrap ErrMalformed", body, err)
			}
		} else if inv.GroupID == "" || len(inv.InvitedUserIDs) == 0 || slices.Contains(inv.InvitedUserIDs, "") {
			t.Fatalf("DecodeInvite(%q) accepted %+v", body, inv)
		}
		if (Validate(InviteCommand, []byte(body)) == nil) != (DecodeInvite([]byte(body), &inv) == nil) {
			t.Fatalf("Validate and DecodeInvite disagree on %q", body)
		}
		var mj MembersJoin
		if err := DecodeMembersJoin([]byte(body), &mj); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeMembersJoin(%q): %v does not wrap ErrMalformed", body, err)
			}
			return
		}
		var ids []string
		for _, m := range mj.MemberList {
			if m == nil || m.UserID == "" {
				t.Fatalf("DecodeMembersJoin(%q) accepted a member without userID", body)
			}
			ids = append(ids, m.UserID)
		}
		var back struct {
			NextCode           *int
			MemberCallbackList []struct {
				UserID      *string `json:"userID"`
				MuteEndTime *int64  `json:"muteEndTime"`
			} `json:"memberCallbackList"`
		}
		answer := AppendMembersAllow(nil, ids, 1_700_000_000_000)
		if err := json.Unmarshal(answer, &back); err != nil || back.NextCode == nil || *back.NextCode != 0 || len(back.MemberCallbackList) != len(ids) {
			t.Fatalf("answer %s for %q: %v", answer, ids, err)
		}
		for i, e := range back.MemberCallbackList {
			// Invalid UTF-8 is sent as U+FFFD, as encoding/json writes it.
			if e.UserID == nil || *e.UserID != strings.ToValidUTF8(ids[i], "\ufffd") || e.MuteEndTime == nil || *e.MuteEndTime != 1_700_000_000_000 {
				t.Fatalf("answer %s: member %d reads %+v", answer, i, e)
			}
		}
	})
}
