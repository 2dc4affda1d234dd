package callback

import (
	"bytes"
	"encoding/json"
	"testing"
)

// joinGroupReq mirrors open-im-server v3.8.3's
// callbackstruct.CallbackJoinGroupReq field for field; the conformance
// suite checks the same bytes against OpenIM's own struct.
type joinGroupReq struct {
	CallbackCommand string `json:"callbackCommand"`
	GroupID         string `json:"groupID"`
	GroupType       string `json:"groupType"`
	ApplyID         string `json:"applyID"`
	ReqMessage      string `json:"reqMessage"`
	Ex              string `json:"ex"`
}

// FuzzAppendIMServerJoinGroup checks that the fixture bytes are what
// IMServer's encoder (json.NewEncoder(body).Encode) writes, and that they
// decode back to the same callback.
func FuzzAppendIMServerJoinGroup(f *testing.F) {
	f.Add(JoinGroupCommand, "g1", int32(WorkingGroup), "u1", "hi <&>", "")
	f.Add("", "", int32(-1), "bad\xff", "\u2028\b\f\x00", `{"x":1}`)
	f.Add(JoinGroupCommand, "g", int32(0xd800), "u", "", "")
	f.Fuzz(func(t *testing.T, cmd, group string, groupType int32, applicant, msg, ex string) {
		r := JoinGroup{CallbackCommand: cmd, GroupID: group, GroupType: groupType, ApplyID: applicant, ReqMessage: msg, Ex: ex}
		got := AppendIMServerJoinGroup(nil, &r)
		var want bytes.Buffer
		json.NewEncoder(&want).Encode(joinGroupReq{cmd, group, string(groupType), applicant, msg, ex})
		if string(got) != want.String() {
			t.Fatalf("AppendIMServerJoinGroup(%+v)\n got %s\nwant %s", r, got, want.Bytes())
		}
		if group == "" || applicant == "" {
			return
		}
		var back JoinGroup
		if err := DecodeJoinGroup(got, &back); err != nil {
			t.Fatalf("DecodeJoinGroup(%s): %v", got, err)
		}
		if back.GroupID != string([]rune(group)) || back.ApplyID != string([]rune(applicant)) || back.ReqMessage != string([]rune(msg)) {
			t.Fatalf("DecodeJoinGroup(%s) = %+v", got, back)
		}
	})
}
