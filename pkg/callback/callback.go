// Package callback holds OpenIM's webhook wire contract as joingate sees it:
// routing a callback by the last path segment, decoding the
// callbackBeforeJoinGroupCommand body, and the response bodies IMServer reads.
package callback

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// JoinGroupCommand is the callback IMServer calls before a user's application
// to join a group goes through.
const JoinGroupCommand = "callbackBeforeJoinGroupCommand"

// Command returns the callback command a request path names: its last
// segment. IMServer posts to "<webhook base>/<command>", so any prefix works
// and a base ending in "/" still routes. The query must already be stripped.
func Command(path []byte) []byte {
	if i := bytes.LastIndexByte(path, '/'); i >= 0 {
		path = path[i+1:]
	}
	return path
}

// IsCommand reports whether name has the shape of an OpenIM callback command
// ("callback...Command"), as opposed to a path nobody should be posting to.
func IsCommand(name []byte) bool {
	return len(name) > len("callbackCommand") &&
		bytes.HasPrefix(name, []byte("callback")) &&
		bytes.HasSuffix(name, []byte("Command"))
}

// AllowJSON is the body that lets the join go through. IMServer refuses a
// join only when actionCode is 0 and nextCode is 1; any actionCode other
// than 0 means "the callback failed" and IMServer lets the join through. A
// constant, so that no caller can change every allow answer at once.
const AllowJSON = `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`

// MinRefusalCode and MaxRefusalCode bound a refusal's errCode: IMServer hands
// the code to the client as it is, 0 reads as success and codes under 100
// become server errors.
const (
	MinRefusalCode = 5000
	MaxRefusalCode = 9999
)

// AppendRefusal appends a body that makes IMServer refuse the join with the
// given errCode, errMsg and errDlt.
func AppendRefusal(dst []byte, code int, msg, dlt string) []byte {
	dst = append(dst, `{"actionCode":0,"errCode":`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, `,"errMsg":`...)
	dst = AppendString(dst, msg)
	dst = append(dst, `,"errDlt":`...)
	dst = AppendString(dst, dlt)
	return append(dst, `,"nextCode":1}`...)
}

// IsRefusal reports whether body, written by AppendRefusal or
// AppendRetryRefusal, refuses the join: the gateway counts the answers it
// passes on by what IMServer will do with them, without parsing them.
func IsRefusal(body []byte) bool {
	return bytes.HasSuffix(body, []byte(`,"nextCode":1}`)) && bytes.HasPrefix(body, []byte(`{"actionCode":0,`))
}

// AppendRetryRefusal appends a refusal whose errDlt tells the client when it
// may try again: "retry in <seconds>s".
func AppendRetryRefusal(dst []byte, code int, msg string, seconds int64) []byte {
	dst = append(dst, `{"actionCode":0,"errCode":`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, `,"errMsg":`...)
	dst = AppendString(dst, msg)
	dst = append(dst, `,"errDlt":"retry in `...)
	dst = strconv.AppendInt(dst, seconds, 10)
	return append(dst, `s","nextCode":1}`...)
}

// AppendFailure appends the body for a callback joingate could not process
// (actionCode 1): IMServer logs errMsg and lets the join through.
func AppendFailure(dst []byte, msg string) []byte {
	dst = append(dst, `{"actionCode":1,"errCode":0,"errMsg":`...)
	dst = AppendString(dst, msg)
	return append(dst, `,"errDlt":"","nextCode":0}`...)
}

// AppendString appends s as a JSON string, byte for byte as encoding/json
// writes it (HTML characters escaped). Invalid UTF-8 becomes U+FFFD so the
// body stays valid JSON whatever a client sent.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 break JavaScript consumers of JSON.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
