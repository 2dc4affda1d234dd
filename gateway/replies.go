package gateway

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/joingate/joingate/pkg/natsconn"
)

// replies is the gateway's own request-reply over NATS: one wildcard
// subscription for the replies to every request, and waiting slots (a
// channel and a timer each) reused from request to request. It replaces
// nats.go's RequestMsg, which for each request takes the connection's
// lock twice, allocates a channel, a timer and a map entry and hands the
// reply over through that map: BenchmarkNATSRoundTrip, 64 requests in
// flight through the embedded server, costs about a third less CPU with
// this (BENCHMARKS.md, 2026-12-07).
//
// Requests are tagged (natsconn): the tag is the slot's index and its
// generation, which every request advances, and the worker's reply starts
// with it. So a reply that comes after its request gave up (a worker past
// the deadline), or a second reply to one request (two queue groups on
// the subject, a debugging subscriber), carries a tag the slot no longer
// waits for and is dropped, never handed to another request. A slot asks
// for its replies on <inbox>.<asks>, the id of one of its requests in base
// 36, a subject it keeps while its requests get their replies, so that the
// NATS server finds it in its caches (it keeps the match of each subject
// a client publishes to; a subject new every request never is;
// BenchmarkNATSRoundTrip: 12% more CPU a round trip, BENCHMARKS.md,
// 2026-12-07). NATS's no-responders status carries no tag: after a
// request that ended without its reply (timeout, publish error, closed
// connection), whose status could still come, the slot asks on a new
// subject.
type replies struct {
	nc     *nats.Conn
	prefix string // "<inbox>."

	mu    sync.Mutex
	free  []*slot                 // idle slots
	slots atomic.Pointer[[]*slot] // every slot, by index; grows, never shrinks

	sub    *nats.Subscription
	closed chan nats.Status
}

// slotBits is how many low bits of a reply ID are the slot's index.
const slotBits = 24

// slot is one request's wait, reused. timer, done and subject belong to
// the request that holds the slot; the rest is shared with the
// subscription's goroutine, under mu.
type slot struct {
	timer   *time.Timer
	done    chan struct{} // one token when the reply or an error is in
	subject string        // <inbox>.<asks>; "" after a request went unanswered

	mu      sync.Mutex
	id      uint64 // the request's tag: generation<<slotBits | index; generation 0 is never asked
	asks    uint64 // the id whose subject the slot asks on
	waiting bool
	// What ended the wait; read by the request after it takes the token.
	reply []byte
	err   error
}

// Errors of a request, besides the connection's own from publishing.
var (
	// errReplyTimeout: no reply before the deadline.
	errReplyTimeout = errors.New("no reply within the decision timeout")
	// errConnClosed: the connection was closed while the request waited.
	errConnClosed = errors.New("nats connection closed while waiting for the reply")
	// errTooManyInFlight: every possible slot waits. fasthttp's concurrency
	// (twice gateway.max_conns) keeps far below it.
	errTooManyInFlight = errors.New("too many requests in flight")
)

// newReplies subscribes to the replies of nc's requests. The
// subscription is made at once and re-made by nats.go after each
// reconnect; a connection that is not up yet sends it when it connects.
func newReplies(nc *nats.Conn) (*replies, error) {
	r := &replies{nc: nc, prefix: nc.NewInbox() + "."}
	empty := []*slot{}
	r.slots.Store(&empty)
	sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
	if err != nil {
		return nil, err
	}
	r.sub = sub
	// As nats.go's requests, these end at once when the connection is
	// closed, and wait through a reconnect (a reply may still come).
	r.closed = nc.StatusChanged(nats.CLOSED)
	go r.watch()
	return r, nil
}

// close stops the subscription and the watch; requests still waiting end
// at their deadline.
func (r *replies) close() {
	r.nc.RemoveStatusListener(r.closed)
	r.sub.Unsubscribe()
}

// watch ends every waiting request when the connection is closed, until
// close.
func (r *replies) watch() {
	for range r.closed {
		for _, s := range *r.slots.Load() {
			s.abort(errConnClosed)
		}
	}
}

// request publishes m, a tagged request (natsconn.AppendTagged) whose tag
// it sets, with a reply subject of the slot's, and waits for the reply
// until deadline. It returns the answer, without the tag; the answer is
// the caller's. m.Reply is set.
func (r *replies) request(m *nats.Msg, deadline time.Time) ([]byte, error) {
	if len(m.Data) < 8 {
		return nil, natsconn.ErrFrame
	}
	s, err := r.get()
	if err != nil {
		return nil, err
	}
	defer r.put(s)
	s.mu.Lock()
	s.id += 1 << slotBits
	id := s.id
	if s.subject == "" {
		s.asks = id
		s.subject = r.prefix + strconv.FormatUint(id, 36)
	}
	s.waiting = true
	s.mu.Unlock()

	binary.BigEndian.PutUint64(m.Data, id)
	m.Reply = s.subject
	if err := r.nc.PublishMsg(m); err != nil {
		s.finish(id, nil, err)
		<-s.done // this one's token, or the closing connection's
	} else {
		s.timer.Reset(time.Until(deadline))
		select {
		case <-s.done:
			s.timer.Stop()
		case <-s.timer.C:
			s.finish(id, nil, errReplyTimeout)
			// Whoever ended the wait (this request, a reply that came
			// just as the timer fired, the connection's closing) left
			// one token.
			<-s.done
		}
	}
	if s.err != nil && !errors.Is(s.err, nats.ErrNoResponders) {
		s.subject = "" // its no-responders status may still come
	}
	return s.reply, s.err
}

// finish ends the wait of request id with reply or err, unless it has
// ended already or the slot waits for another request.
func (s *slot) finish(id uint64, reply []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting && s.id == id {
		s.end(reply, err)
	}
}

// abort ends the wait of whatever request the slot waits for, if any.
func (s *slot) abort(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting {
		s.end(nil, err)
	}
}

// end records what ended the wait and leaves the token; s.mu is held.
func (s *slot) end(reply []byte, err error) {
	s.waiting, s.reply, s.err = false, reply, err
	s.done <- struct{}{}
}

// deliver hands a reply to the slot its subject names, if that slot still
// waits for the request the reply's tag names; and a no-responders status
// to the slot, if it still asks on that subject.
func (r *replies) deliver(m *nats.Msg) {
	token, ok := strings.CutPrefix(m.Subject, r.prefix)
	if !ok {
		return
	}
	asks, err := strconv.ParseUint(token, 36, 64)
	if err != nil {
		return
	}
	slots := *r.slots.Load()
	index := asks & (1<<slotBits - 1)
	if index >= uint64(len(slots)) {
		return
	}
	s := slots[index]
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.waiting && s.asks == asks {
			s.end(nil, nats.ErrNoResponders)
		}
		return
	}
	if tag, answer, ok := natsconn.ParseReply(m.Data); ok {
		s.finish(tag, answer, nil)
	}
}

// get takes an idle slot, or makes one.
func (r *replies) get() (*slot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.free); n > 0 {
		s := r.free[n-1]
		r.free = r.free[:n-1]
		return s, nil
	}
	old := *r.slots.Load()
	if len(old) == 1<<slotBits {
		return nil, errTooManyInFlight
	}
	s := &slot{id: uint64(len(old)), done: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
	s.timer.Stop()
	grown := append(old[:len(old):len(old)], s)
	r.slots.Store(&grown)
	return s, nil
}

// put gives a slot whose request has ended back.
func (r *replies) put(s *slot) {
	r.mu.Lock()
	r.free = append(r.free, s)
	r.mu.Unlock()
}
