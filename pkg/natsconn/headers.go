package natsconn

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers of a callback request on NATS. The body is IMServer's, as it came.
const (
	// HeaderOperationID carries IMServer's Operationid, for log correlation.
	HeaderOperationID = "Operationid"
	// HeaderDeadline is the absolute time (Unix nanoseconds) after which the
	// gateway has answered without this decision: a worker that gets the
	// request later drops it rather than consume quota for nothing.
	HeaderDeadline = "Joingate-Deadline"
)

// SetDeadline stamps msg with the deadline.
func SetDeadline(msg *nats.Msg, deadline time.Time) {
	msg.Header[HeaderDeadline] = []string{string(AppendDeadline(nil, deadline))}
}

// AppendDeadline appends the value of HeaderDeadline for deadline.
func AppendDeadline(dst []byte, deadline time.Time) []byte {
	return strconv.AppendInt(dst, deadline.UnixNano(), 10)
}

// Deadline reads the deadline of msg; ok is false when it is missing or
// unreadable.
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
