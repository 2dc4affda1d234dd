package natsconn

import (
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// A callback request travels from gateway to worker in one of three forms.
//
// Tagged, on <subject>.v3.<command>: the payload is a tag (8 bytes) and
// then the framed form's payload; the worker's reply is the tag and then
// the answer. Gateways send it: a gateway waits for each request's reply
// on a subject of its own that it keeps from request to request (found in
// the NATS server's caches), and tells this request's reply from a late or
// second reply to an earlier one by the tag.
//
// Framed, on <subject>.v2.<command>: the payload is the deadline (8 bytes,
// big-endian Unix nanoseconds), the length of IMServer's operation ID
// (uvarint), the operation ID and IMServer's body as it came; the reply is
// the answer. Gateways before the tagged form sent it: NATS headers cost
// the gateway, nats-server and the worker more than the request's whole
// decision from memory (BENCHMARKS.md, History).
//
// With headers, on <subject>.<command>: the body as it came, the operation
// ID and the deadline in the headers below; gateways before the framed
// form sent it, and a request made by hand (nats req) may carry neither.
// Workers take all three, so that workers upgraded first keep deciding for
// the gateways not yet upgraded; a request reaching no worker that knows
// its form finds no responders, and its gateway falls back at once.
const (
	// TaggedToken is the subject token between the prefix and the command
	// of a tagged request.
	TaggedToken = "v3"
	// FramedToken is the subject token between the prefix and the command
	// of a framed request.
	FramedToken = "v2"
	// HeaderOperationID carries IMServer's Operationid, for log correlation.
	HeaderOperationID = "Operationid"
	// HeaderDeadline is the absolute time (Unix nanoseconds) after which the
	// gateway has answered without this decision: a worker that gets the
	// request later drops it rather than consume quota for nothing.
	HeaderDeadline = "Joingate-Deadline"
)

// FramedSubject is the subject of framed requests for command under the
// prefix subject (nats.subject).
func FramedSubject(subject, command string) string {
	return subject + "." + FramedToken + "." + command
}

// AppendFramed appends the framed request of body to dst.
func AppendFramed(dst []byte, deadline time.Time, opID, body []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(deadline.UnixNano()))
	dst = binary.AppendUvarint(dst, uint64(len(opID)))
	dst = append(dst, opID...)
	return append(dst, body...)
}

// ErrFrame is a framed request too short for what its frame says.
var ErrFrame = errors.New("framed request truncated or its deadline unreadable")

// ParseFramed splits a framed request; opID and body alias data.
func ParseFramed(data []byte) (deadline time.Time, opID, body []byte, err error) {
	if len(data) < 9 {
		return time.Time{}, nil, nil, ErrFrame
	}
	ns := int64(binary.BigEndian.Uint64(data))
	n, w := binary.Uvarint(data[8:])
	rest := data[8+max(w, 0):]
	if ns <= 0 || w <= 0 || n > uint64(len(rest)) {
		return time.Time{}, nil, nil, ErrFrame
	}
	return time.Unix(0, ns), rest[:n], rest[n:], nil
}

// TaggedSubject is the subject of tagged requests for command under the
// prefix subject (nats.subject).
func TaggedSubject(subject, command string) string {
	return subject + "." + TaggedToken + "." + command
}

// AppendTagged appends the tagged request of body to dst.
func AppendTagged(dst []byte, tag uint64, deadline time.Time, opID, body []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, tag)
	return AppendFramed(dst, deadline, opID, body)
}

// ParseTagged splits a tagged request; opID and body alias data.
func ParseTagged(data []byte) (tag uint64, deadline time.Time, opID, body []byte, err error) {
	if len(data) < 8 {
		return 0, time.Time{}, nil, nil, ErrFrame
	}
	deadline, opID, body, err = ParseFramed(data[8:])
	return binary.BigEndian.Uint64(data), deadline, opID, body, err
}

// AppendReply appends the reply to a tagged request to dst.
func AppendReply(dst []byte, tag uint64, answer []byte) []byte {
	return append(binary.BigEndian.AppendUint64(dst, tag), answer...)
}

// ParseReply splits the reply to a tagged request; answer aliases data.
func ParseReply(data []byte) (tag uint64, answer []byte, ok bool) {
	if len(data) < 8 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(data), data[8:], true
}

// SetDeadline stamps msg with the deadline header.
func SetDeadline(msg *nats.Msg, deadline time.Time) {
	msg.Header[HeaderDeadline] = []string{strconv.FormatInt(deadline.UnixNano(), 10)}
}

// Deadline reads the deadline header of msg; ok is false when it is missing
// or unreadable.
func Deadline(msg *nats.Msg) (deadline time.Time, ok bool) {
	v := msg.Header[HeaderDeadline]
	if len(v) == 0 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || ns <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
