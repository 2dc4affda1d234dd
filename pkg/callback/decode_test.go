package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeJoinGroup(t *testing.T) {
	ok := func(body string, want JoinGroup) {
		t.Helper()
		var got JoinGroup
		if err := DecodeJoinGroup([]byte(body), &got); err != nil {
			t.Fatalf("DecodeJoinGroup(%q): unexpected error %v", body, err)
		}
		if got != want {
			t.Fatalf("DecodeJoinGroup(%q)\n got %+v\nwant %+v", body, got, want)
		}
	}
	bad := func(body, wantMsg string) {
		t.Helper()
		var got JoinGroup
		err := DecodeJoinGroup([]byte(body), &got)
		if err == nil {
			t.Fatalf("DecodeJoinGroup(%q): want error containing %q, got %+v", body, wantMsg, got)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("DecodeJoinGroup(%q): error %v does not wrap ErrMalformed", body, err)
		}
		if !strings.Contains(err.Error(), wantMsg) {
			t.Fatalf("DecodeJoinGroup(%q): error %q does not contain %q", body, err, wantMsg)
		}
	}

	// What IMServer really sends: groupType is Go's string(int32) of the
	// group type, "\u0002" for a WorkingGroup, and encoding/json's newline.
	ok(IMServerJoinGroup("g1", "u1", "hi <&>"),
		JoinGroup{CallbackCommand: JoinGroupCommand, GroupID: "g1", GroupType: 2, ApplyID: "u1", ReqMessage: "hi <&>"})
	// groupType plays no part in a decision: every form is accepted, and
	// read as a number where it names one.
	for body, want := range map[string]int32{
		`2`: 2, `"2"`: 2, `"\u0002"`: 2, `"\u0000"`: 0, `""`: 0, `null`: 0, `-7`: -7, `"-7"`: -7,
		`"é"`: 'é', `"\ufffd"`: 0xfffd, "\"\xff\"": 0xfffd, `2147483647`: 1<<31 - 1, `-2147483648`: -1 << 31,
		`"two"`: GroupTypeUnknown, `1.5`: GroupTypeUnknown, `1e2`: GroupTypeUnknown, `99999999999`: GroupTypeUnknown,
		`"99999999999"`: GroupTypeUnknown, `true`: GroupTypeUnknown, `false`: GroupTypeUnknown, `{"a":[1]}`: GroupTypeUnknown,
		`[]`: GroupTypeUnknown, `"+1"`: GroupTypeUnknown, `" 1"`: GroupTypeUnknown,
	} {
		ok(`{"groupID":"g1","groupType":`+body+`,"applyID":"u1","ex":null}`, JoinGroup{GroupID: "g1", GroupType: want, ApplyID: "u1"})
	}
	// Unknown fields of every shape are ignored.
	ok(` {"x":{"a":[1,2.5e3,{"b":null}],"c":true},"y":[],"z":"\u00e9","groupID":"g","applyID":"a","w":false} `,
		JoinGroup{GroupID: "g", ApplyID: "a"})
	// Escapes, unicode and a duplicate key (the last wins, as in encoding/json).
	ok(`{"groupID":"g\"\\\/\n\u00e9\ud83d\ude00","applyID":"old","applyID":"new"}`,
		JoinGroup{GroupID: "g\"\\/\né😀", ApplyID: "new"})
	ok("{\"groupID\":\"g\xff\",\"applyID\":\"a\"}", JoinGroup{GroupID: "g\ufffd", ApplyID: "a"})
	ok(`{"groupID":"g","applyID":"a","reqMessage":"\ud800x"}`, JoinGroup{GroupID: "g", ApplyID: "a", ReqMessage: "\ufffdx"})

	bad(``, "empty body")
	bad(`   `, "empty body")
	bad(`null`, "not a JSON object")
	bad(`[{"groupID":"g","applyID":"a"}]`, "not a JSON object")
	bad(`groupID=g&applyID=a`, "not a JSON object")
	bad(`{"groupID":"g","applyID":"a"`, "unexpected end")
	bad(`{"groupID":"g","applyID":"a"}x`, "data after")
	bad(`{"groupID":"g","applyID":"a"}{}`, "data after")
	bad(`{"groupID":"g"}`, "applyID is missing")
	bad(`{"applyID":"a"}`, "groupID is missing")
	bad(`{"groupID":"","applyID":"a"}`, "groupID is missing")
	bad(`{"groupID":12,"applyID":"a"}`, "groupID must be a string")
	bad(`{"groupID":"g","applyID":["a"]}`, "applyID must be a string")
	// groupType is accepted in any form, but it must still be JSON.
	bad(`{"groupID":"g","applyID":"a","groupType":tru}`, "invalid JSON")
	bad(`{"groupID":"g","applyID":"a","groupType":01}`, "invalid JSON")
	bad(`{"groupID":"g","applyID":"a","groupType":"\u00"}`, "invalid JSON")
	bad(`{"groupID":"g","applyID":"a","groupType":{"a"}}`, "invalid JSON")
	bad(`{"groupID":"g","applyID":"a","x":01}`, "invalid JSON")
	bad(`{"groupID":"g","applyID":"a","x":tru}`, "invalid JSON")
	bad("{\"groupID\":\"g\x01\",\"applyID\":\"a\"}", "invalid JSON")
	bad(`{"groupID":"g\q","applyID":"a"}`, "invalid JSON")
	bad(`{"groupID":"g","applyID":"a",}`, "invalid JSON")
	bad(`{"groupID" "g","applyID":"a"}`, "invalid JSON")
	bad(`{"x":`+strings.Repeat("[", maxDepth+2)+strings.Repeat("]", maxDepth+2)+`,"groupID":"g","applyID":"a"}`, "nested too deeply")
}

func TestDecodeJoinGroupAllocs(t *testing.T) {
	body := []byte(IMServerJoinGroup("g1", "u1", "hi"))
	var r JoinGroup
	allocs := testing.AllocsPerRun(100, func() {
		if err := DecodeJoinGroup(body, &r); err != nil {
			t.Fatal(err)
		}
	})
	// One string per non-empty field, nothing else.
	if allocs > 4 {
		t.Fatalf("DecodeJoinGroup allocates %v times per call, want at most 4", allocs)
	}
}

// referenceDecode is DecodeJoinGroup's oracle built on encoding/json: it
// walks the object's members in order, so duplicate keys and the first bad
// value behave as in the scanner.
func referenceDecode(body []byte) (JoinGroup, bool) {
	var r JoinGroup
	// The whole document, as encoding/json counts nesting (the object
	// itself is level 1); the walk below sees each member on its own.
	if !json.Valid(body) {
		return r, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return r, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return r, false
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return r, false
		}
		str := func(dst *string) bool {
			if string(raw) == "null" {
				*dst = ""
				return true
			}
			return json.Unmarshal(raw, dst) == nil
		}
		good := true
		switch key {
		case "callbackCommand":
			good = str(&r.CallbackCommand)
		case "groupID":
			good = str(&r.GroupID)
		case "applyID":
			good = str(&r.ApplyID)
		case "reqMessage":
			good = str(&r.ReqMessage)
		case "ex":
			good = str(&r.Ex)
		case "groupType":
			r.GroupType = referenceGroupType(raw)
		}
		if !good {
			return r, false
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return r, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return r, false
	}
	return r, r.GroupID != "" && r.ApplyID != ""
}

// referenceGroupType is groupType's reading of a valid JSON value, built on
// encoding/json and strconv.
func referenceGroupType(raw json.RawMessage) int32 {
	integer := func(s string) (int32, bool) {
		if strings.TrimLeft(strings.TrimPrefix(s, "-"), "0123456789") != "" || strings.TrimPrefix(s, "-") == "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 32)
		return int32(n), err == nil
	}
	switch raw[0] {
	case 'n':
		return 0
	case '"':
		var s string
		json.Unmarshal(raw, &s)
		if s == "" {
			return 0
		}
		if n, ok := integer(s); ok {
			return n
		}
		if utf8.RuneCountInString(s) == 1 {
			return []rune(s)[0]
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if n, ok := integer(string(raw)); ok {
			return n
		}
	}
	return GroupTypeUnknown
}

func FuzzDecodeJoinGroup(f *testing.F) {
	for _, seed := range []string{
		IMServerJoinGroup("g1", "u1", "hi <&>"),
		`{"callbackCommand":"callbackBeforeJoinGroupCommand","groupID":"g1","groupType":2,"applyID":"u1","reqMessage":"hi","ex":""}`,
		`{"groupID":"g1","groupType":"2","applyID":"u1"}`,
		`{"groupID":"g1","groupType":{"x":[true]},"applyID":"u1"}`,
		`{"groupID":"g1","groupType":"\ud800","applyID":"u1"}`,
		`{"groupID":"g\u00e9\ud83d\ude00","applyID":"a","x":[{"y":null},true,-1.5e-3]}`,
		`{"groupID":"g","applyID":"a","groupType":"x"}`,
		`{"groupID":"g","applyID":"a"} `,
		`{"groupID":1}`,
		"{\"groupID\":\"\xff\",\"applyID\":\"\\ud800\"}",
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got JoinGroup
		err := DecodeJoinGroup(body, &got)
		if verr := ValidateJoinGroup(body); (verr == nil) != (err == nil) {
			t.Fatalf("ValidateJoinGroup(%q) = %v, DecodeJoinGroup %v", body, verr, err)
		}
		want, wantOK := referenceDecode(body)
		if (err == nil) != wantOK {
			t.Fatalf("DecodeJoinGroup(%q) error %v, encoding/json accepts: %v", body, err, wantOK)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if got != want {
			t.Fatalf("DecodeJoinGroup(%q)\n got %+v\nwant %+v", body, got, want)
		}
	})
}

func TestValidateJoinGroupAllocs(t *testing.T) {
	body := []byte(IMServerJoinGroup("g1", "u1", "hi"))
	allocs := testing.AllocsPerRun(100, func() {
		if err := ValidateJoinGroup(body); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ValidateJoinGroup allocates %v times per call, want 0", allocs)
	}
	if err := ValidateJoinGroup([]byte(`{"groupID":"g"}`)); err == nil {
		t.Fatal("ValidateJoinGroup accepted a callback without applyID")
	}
}

func BenchmarkValidateJoinGroup(b *testing.B) {
	body := []byte(IMServerJoinGroup("3458719384", "8129374651", "hello, let me in"))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := ValidateJoinGroup(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeJoinGroup(b *testing.B) {
	body := []byte(IMServerJoinGroup("3458719384", "8129374651", "hello, let me in"))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	var r JoinGroup
	for b.Loop() {
		if err := DecodeJoinGroup(body, &r); err != nil {
			b.Fatal(err)
		}
	}
}
