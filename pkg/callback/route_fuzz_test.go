package callback

import (
	"bytes"
	"testing"
)

// FuzzCommand checks the path router's properties on any path and any
// prefix in front of it.
func FuzzCommand(f *testing.F) {
	for _, seed := range [][2]string{
		{"/callbackExample", "/callbackExample/callbackBeforeJoinGroupCommand"},
		{"", "//callbackBeforeJoinGroupCommand"},
		{"/a/b", "callbackAfterJoinGroupCommand"},
		{"/", "/callbackExample/"},
		{"", ""},
		{"x", "/callbackCommand"},
		{"", "/callbackXCommand"},
		{"/p", "/callback/Command"},
		{"\x00", "/\xffcallback\x00Command"},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, prefix, path []byte) {
		orig := bytes.Clone(path)
		cmd := Command(path)
		if !bytes.Equal(path, orig) {
			t.Fatalf("Command changed its input %q to %q", orig, path)
		}
		// The last segment: a suffix of path with no '/', preceded by a
		// '/' unless it is the whole path.
		if !bytes.HasSuffix(path, cmd) || bytes.IndexByte(cmd, '/') >= 0 {
			t.Fatalf("Command(%q) = %q: not a suffix without '/'", path, cmd)
		}
		if rest := path[:len(path)-len(cmd)]; len(rest) > 0 && rest[len(rest)-1] != '/' {
			t.Fatalf("Command(%q) = %q: not the whole last segment", path, cmd)
		}
		// It aliases the path: the router copies nothing.
		if len(cmd) > 0 && &cmd[0] != &path[len(path)-len(cmd)] {
			t.Fatalf("Command(%q) copied its result", path)
		}
		if again := Command(cmd); !bytes.Equal(again, cmd) {
			t.Fatalf("Command(Command(%q)) = %q, want %q", path, again, cmd)
		}
		// Any prefix routes the same: only the last segment counts.
		joined := append(append(bytes.Clone(prefix), '/'), path...)
		if got := Command(joined); !bytes.Equal(got, cmd) {
			t.Fatalf("Command(%q) = %q, but Command(%q) = %q", joined, got, path, cmd)
		}
		// The join-group route: exactly the paths ending in /<command>.
		isJoin := string(cmd) == JoinGroupCommand
		if want := string(path) == JoinGroupCommand || bytes.HasSuffix(path, []byte("/"+JoinGroupCommand)); isJoin != want {
			t.Fatalf("Command(%q) = %q: join-group route %v, want %v", path, cmd, isJoin, want)
		}
		// IsCommand: "callback" + at least one byte + "Command", nothing else.
		is := IsCommand(cmd)
		want := len(cmd) > len("callbackCommand") && bytes.HasPrefix(cmd, []byte("callback")) && bytes.HasSuffix(cmd, []byte("Command"))
		if is != want {
			t.Fatalf("IsCommand(%q) = %v, want %v", cmd, is, want)
		}
		if isJoin && !is {
			t.Fatalf("the join-group command %q is not a command", cmd)
		}
	})
}
