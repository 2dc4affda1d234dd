package callback

import (
	"encoding/json"
	"testing"
)

func TestCommand(t *testing.T) {
	f := func(path, want string) {
		t.Helper()
		if got := string(Command([]byte(path))); got != want {
			t.Fatalf("Command(%q) = %q, want %q", path, got, want)
		}
	}
	f("/callbackExample/callbackBeforeJoinGroupCommand", JoinGroupCommand)
	f("/callbackBeforeJoinGroupCommand", JoinGroupCommand)
	f("//callbackBeforeJoinGroupCommand", JoinGroupCommand)
	f("/a/b/c/callbackAfterJoinGroupCommand", "callbackAfterJoinGroupCommand")
	f("/callbackExample/", "")
	f("", "")
	f("callbackX", "callbackX")
}

func TestIsCommand(t *testing.T) {
	for name, want := range map[string]bool{
		JoinGroupCommand:                     true,
		"callbackBeforeSendSingleMsgCommand": true,
		"callbackCommand":                    false,
		"callbackExample":                    false,
		"favicon.ico":                        false,
		"":                                   false,
	} {
		if got := IsCommand([]byte(name)); got != want {
			t.Errorf("IsCommand(%q) = %v, want %v", name, got, want)
		}
	}
}

// response is what IMServer decodes from a callback answer.
type response struct {
	ActionCode *int    `json:"actionCode"`
	ErrCode    *int    `json:"errCode"`
	ErrMsg     *string `json:"errMsg"`
	ErrDlt     *string `json:"errDlt"`
	NextCode   *int    `json:"nextCode"`
}

func decodeResponse(t *testing.T, body []byte) response {
	t.Helper()
	var r response
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if r.ActionCode == nil || r.ErrCode == nil || r.ErrMsg == nil || r.ErrDlt == nil || r.NextCode == nil {
		t.Fatalf("body %q lacks a field IMServer reads", body)
	}
	return r
}

func TestBodies(t *testing.T) {
	r := decodeResponse(t, []byte(AllowJSON))
	if *r.ActionCode != 0 || *r.NextCode != 0 || *r.ErrCode != 0 {
		t.Fatalf("allow body %s would not allow", AllowJSON)
	}

	body := AppendRefusal(nil, 5001, "too many join requests", "retry in 12s")
	if want := `{"actionCode":0,"errCode":5001,"errMsg":"too many join requests","errDlt":"retry in 12s","nextCode":1}`; string(body) != want {
		t.Fatalf("refusal body\n got %s\nwant %s", body, want)
	}

	if got := AppendRetryRefusal(nil, 5001, "too many join requests", 12); string(got) != string(body) {
		t.Fatalf("retry refusal body\n got %s\nwant %s", got, body)
	}

	body = AppendFailure(nil, `groupID must be a string`)
	r = decodeResponse(t, body)
	if *r.ActionCode != 1 || *r.NextCode != 0 || *r.ErrMsg != "groupID must be a string" {
		t.Fatalf("failure body %s", body)
	}
}

func TestAppendString(t *testing.T) {
	strs := []string{"", "plain", `q"uote\back`, "ctl\x00\x1f\n\r\t\b\f", "<&>", "é😀", "bad\xff\xfeutf8", "\u2028\u2029", "x\xc3"}
	for c := range 256 {
		strs = append(strs, string([]byte{byte(c)}))
	}
	for _, s := range strs {
		// Byte for byte what encoding/json writes, as IMServer reads and writes.
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, encoding/json writes %s", s, got, want)
		}
	}
}

// IsRefusal tells the bodies this package writes apart, as IMServer would.
func TestIsRefusal(t *testing.T) {
	for _, c := range []struct {
		body []byte
		want bool
	}{
		{AppendRefusal(nil, 5001, "too many", ""), true},
		{AppendRetryRefusal(nil, 5001, "too many", 12), true},
		{[]byte(AllowJSON), false},
		{AppendFailure(nil, "bad"), false},
	} {
		if got := IsRefusal(c.body); got != c.want {
			t.Errorf("IsRefusal(%s) = %v, want %v", c.body, got, c.want)
		}
	}
}
