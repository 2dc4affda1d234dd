package callback

import (
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// JoinGroup is the body of callbackBeforeJoinGroupCommand. ApplyID is the
// applicant's user ID.
type JoinGroup struct {
	CallbackCommand string
	GroupID         string
	// GroupType is the group type the sender meant, for logs and `ctl
	// explain` only: it plays no part in any decision. IMServer writes it
	// with Go's string(int32), so a WorkingGroup (2) arrives as "\u0002";
	// OpenIM's docs show the number 2. See groupType for every reading;
	// GroupTypeUnknown when the value has none.
	GroupType  int32
	ApplyID    string
	ReqMessage string
	Ex         string
}

// GroupTypeUnknown is JoinGroup.GroupType for a groupType value that names
// no number (an object, a word, a fraction): accepted all the same.
const GroupTypeUnknown = -1

// ErrMalformed is wrapped by every error DecodeJoinGroup returns: the body is
// not a callback joingate can judge, and the edge answers actionCode 1.
var ErrMalformed = errors.New("malformed callback")

// maxDepth bounds the nesting of unknown fields that the decoder skips, as
// encoding/json does, so hostile input cannot exhaust the stack.
const maxDepth = 10000

// DecodeJoinGroup decodes a callbackBeforeJoinGroupCommand body into r.
//
// It is a hand-written scanner rather than encoding/json because it runs on
// every callback at both the edge and the worker; it accepts exactly what
// encoding/json would accept into the fields below (keys matched exactly),
// which the fuzz test checks. Unknown fields are skipped, groupType may be
// any JSON value, and groupID and applyID are required.
func DecodeJoinGroup(body []byte, r *JoinGroup) error {
	return decodeJoinGroup(body, r, true)
}

// ValidateJoinGroup reports whether DecodeJoinGroup would accept body,
// without copying any field: the edge only needs to know, on every
// callback.
func ValidateJoinGroup(body []byte) error {
	var r JoinGroup
	return decodeJoinGroup(body, &r, false)
}

// decodeJoinGroup fills r. With copy false it only validates: its strings
// are the raw JSON contents, still escaped, aliasing body (non-empty exactly
// when the value is), groupType is not read, and nothing is allocated.
func decodeJoinGroup(body []byte, r *JoinGroup, copy bool) error {
	*r = JoinGroup{}
	d := decoder{b: body, copy: copy}
	d.space()
	if !d.eat('{') {
		if d.i == len(d.b) {
			return malformed("empty body")
		}
		return malformed("body is not a JSON object")
	}
	d.space()
	if !d.eat('}') {
		for {
			d.space()
			var kb [32]byte
			key, ok := d.rawString(kb[:0])
			if !ok {
				return d.syntax("object key")
			}
			d.space()
			if !d.eat(':') {
				return d.syntax("':' after object key")
			}
			d.space()
			var err error
			switch string(key) {
			case "callbackCommand":
				r.CallbackCommand, err = d.stringField("callbackCommand")
			case "groupID":
				r.GroupID, err = d.stringField("groupID")
			case "groupType":
				if d.copy {
					r.GroupType, err = d.groupType()
				} else {
					err = d.skip(2)
				}
			case "applyID":
				r.ApplyID, err = d.stringField("applyID")
			case "reqMessage":
				r.ReqMessage, err = d.stringField("reqMessage")
			case "ex":
				r.Ex, err = d.stringField("ex")
			default:
				// Depth 2: the callback object is level 1, as encoding/json
				// counts it.
				err = d.skip(2)
			}
			if err != nil {
				return err
			}
			d.space()
			if d.eat(',') {
				continue
			}
			if d.eat('}') {
				break
			}
			return d.syntax("',' or '}' in object")
		}
	}
	d.space()
	if d.i != len(d.b) {
		return malformed("data after the JSON object")
	}
	if r.GroupID == "" {
		return malformed("groupID is missing or empty")
	}
	if r.ApplyID == "" {
		return malformed("applyID is missing or empty")
	}
	return nil
}

func malformed(msg string) error {
	return fmt.Errorf("%w: %s", ErrMalformed, msg)
}

type decoder struct {
	b    []byte
	i    int
	copy bool
}

func (d *decoder) syntax(want string) error {
	if d.i >= len(d.b) {
		return malformed("unexpected end of JSON, want " + want)
	}
	return fmt.Errorf("%w: invalid JSON at offset %d, want %s", ErrMalformed, d.i, want)
}

func (d *decoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) eat(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *decoder) literal(lit string) bool {
	if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
		d.i += len(lit)
		return true
	}
	return false
}

// stringField decodes a string or null (which leaves the field empty).
func (d *decoder) stringField(name string) (string, error) {
	if d.literal("null") {
		return "", nil
	}
	if d.i < len(d.b) && d.b[d.i] != '"' {
		return "", malformed(name + " must be a string")
	}
	if !d.copy {
		start := d.i + 1
		if !d.scanString() {
			return "", d.syntax("string value of " + name)
		}
		if raw := d.b[start : d.i-1]; len(raw) > 0 {
			return unsafe.String(&raw[0], len(raw)), nil
		}
		return "", nil
	}
	s, ok := d.rawString(nil)
	if !ok {
		return "", d.syntax("string value of " + name)
	}
	return string(s), nil
}

// groupType reads groupType, which never makes a callback malformed: any
// JSON value is accepted. Its reading, for display: a number in int32 range
// is itself; a string of decimal digits is that number (OpenIM's docs and
// older servers); any other one-character string is its code point (what
// IMServer's string(int32) wrote: "\u0002" is 2); null and "" are 0;
// anything else is GroupTypeUnknown. Real group types are small, so the
// digit and code-point readings never meet.
func (d *decoder) groupType() (int32, error) {
	if d.i < len(d.b) && d.b[d.i] == '"' {
		// "\u0002" has an escape: unescaped on the stack, not the heap.
		var buf [16]byte
		s, ok := d.rawString(buf[:0])
		if !ok {
			return 0, d.syntax("string value of groupType")
		}
		if len(s) == 0 {
			return 0, nil
		}
		if n, ok := parseInt32(s); ok {
			return n, nil
		}
		if r, size := utf8.DecodeRune(s); size == len(s) {
			return r, nil
		}
		return GroupTypeUnknown, nil
	}
	if d.literal("null") {
		return 0, nil
	}
	start := d.i
	if d.i < len(d.b) && (d.b[d.i] == '-' || '0' <= d.b[d.i] && d.b[d.i] <= '9') {
		if !d.number() {
			return 0, d.syntax("value of groupType")
		}
		if n, ok := parseInt32(d.b[start:d.i]); ok {
			return n, nil
		}
		return GroupTypeUnknown, nil
	}
	if err := d.skip(2); err != nil {
		return 0, err
	}
	return GroupTypeUnknown, nil
}

// parseInt32 reads an optionally signed decimal integer in int32 range
// ("-0" and leading zeros too, as strconv does).
func parseInt32(s []byte) (int32, bool) {
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	if len(s) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n = n*10 + int64(c-'0'); n > 1<<31 {
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	if n > 1<<31-1 {
		return 0, false
	}
	return int32(n), true
}

// rawString reads a JSON string at the cursor and returns its unescaped
// bytes. Without escapes or invalid UTF-8 the result aliases the input;
// otherwise it is built in buf (grown as needed). Invalid UTF-8 and lone
// surrogates become U+FFFD, as in encoding/json.
func (d *decoder) rawString(buf []byte) ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			return s, true
		case c == '\\':
			return d.slowString(start, buf)
		case c < 0x20:
			return nil, false
		case c < utf8.RuneSelf:
			d.i++
		default:
			r, size := utf8.DecodeRune(d.b[d.i:])
			if r == utf8.RuneError && size == 1 {
				return d.slowString(start, buf)
			}
			d.i += size
		}
	}
	return nil, false
}

// scanString passes over a JSON string at the cursor, validating it as
// rawString would, without unescaping anything.
func (d *decoder) scanString() bool {
	if !d.eat('"') {
		return false
	}
	for d.i < len(d.b) {
		c := d.b[d.i]
		d.i++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if d.i >= len(d.b) {
				return false
			}
			e := d.b[d.i]
			d.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if _, ok := d.hex4(); !ok {
					return false
				}
			default:
				return false
			}
		}
	}
	return false
}

// slowString finishes a string that holds escapes or invalid UTF-8 by
// copying it into buf; the cursor is inside the string, start is its first
// byte.
func (d *decoder) slowString(start int, buf []byte) ([]byte, bool) {
	out := append(buf[:0], d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return out, true
		case c < 0x20:
			return nil, false
		case c == '\\':
			d.i++
			if d.i >= len(d.b) {
				return nil, false
			}
			e := d.b[d.i]
			d.i++
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return nil, false
				}
				if utf16.IsSurrogate(r) {
					// A high surrogate followed by "\uDC00".."\uDFFF" makes one rune;
					// anything else is a lone surrogate.
					r2 := utf8.RuneError
					if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
						save := d.i
						d.i += 2
						lo, ok := d.hex4()
						if !ok {
							return nil, false
						}
						if dec := utf16.DecodeRune(r, lo); dec != utf8.RuneError {
							r2 = dec
						} else {
							d.i = save
						}
					}
					r = r2
				}
				out = utf8.AppendRune(out, r)
			default:
				return nil, false
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			d.i++
		default:
			r, size := utf8.DecodeRune(d.b[d.i:])
			d.i += size
			out = utf8.AppendRune(out, r) // RuneError for invalid bytes
		}
	}
	return nil, false
}

func (d *decoder) hex4() (rune, bool) {
	if len(d.b)-d.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	d.i += 4
	return r, true
}

// number reads a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() bool {
	d.eat('-')
	switch {
	case d.eat('0'):
	case d.i < len(d.b) && '1' <= d.b[d.i] && d.b[d.i] <= '9':
		d.digits()
	default:
		return false
	}
	if d.eat('.') {
		if !d.digits() {
			return false
		}
	}
	if d.eat('e') || d.eat('E') {
		if !d.eat('+') {
			d.eat('-')
		}
		if !d.digits() {
			return false
		}
	}
	return true
}

func (d *decoder) digits() bool {
	start := d.i
	for d.i < len(d.b) && '0' <= d.b[d.i] && d.b[d.i] <= '9' {
		d.i++
	}
	return d.i > start
}

// skip passes over one JSON value of any kind, validating it.
func (d *decoder) skip(depth int) error {
	if d.i >= len(d.b) {
		return d.syntax("a value")
	}
	switch c := d.b[d.i]; {
	case c == '"':
		if !d.scanString() {
			return d.syntax("a string")
		}
	case c == '{' || c == '[':
		if depth > maxDepth {
			return malformed("JSON nested too deeply")
		}
		d.i++
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		d.space()
		if d.eat(closing) {
			return nil
		}
		for {
			d.space()
			if c == '{' {
				if !d.scanString() {
					return d.syntax("object key")
				}
				d.space()
				if !d.eat(':') {
					return d.syntax("':' after object key")
				}
				d.space()
			}
			if err := d.skip(depth + 1); err != nil {
				return err
			}
			d.space()
			if d.eat(',') {
				continue
			}
			if d.eat(closing) {
				return nil
			}
			return d.syntax("',' or closing bracket")
		}
	case c == 't':
		if !d.literal("true") {
			return d.syntax("true")
		}
	case c == 'f':
		if !d.literal("false") {
			return d.syntax("false")
		}
	case c == 'n':
		if !d.literal("null") {
			return d.syntax("null")
		}
	default:
		if !d.number() {
			return d.syntax("a value")
		}
	}
	return nil
}
