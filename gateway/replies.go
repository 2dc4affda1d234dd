package gateway

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// replies is the gateway's own request-reply over NATS: one wildcard
// subscription for the replies to every request, and a fixed set of
// waiting slots reused from request to request. It replaces nats.go's
// RequestMsg, which for each request takes the connection's lock twice,
// allocates a channel, a timer and a map entry and hands the reply over
// through that map: in BENCHMARKS.md (2026-12-07) the round trip through
// the embedded server cost 20-24 CPU µs with RequestMsg and 11-14 with
// this, at 64 requests in flight.
//
// Each request's reply subject is <inbox>.<id>, where id carries the
// slot's index and its generation. A request that ends without its reply
// (timeout, lost connection) moves its slot to the next generation: the
// reply that comes after its request gave up (a worker past the deadline)
// names a generation the slot no longer waits for and is dropped, never
// handed to the slot's next request. Workers answer with nats.Msg.Respond
// as before: nothing changes on the wire.
type replies struct {
	nc     *nats.Conn
	prefix string // "<inbox>."

	mu    sync.Mutex
	free  []*slot                 // idle slots
	slots atomic.Pointer[[]*slot] // every slot, by index; grows, never shrinks

	sub    *nats.Subscription
	status chan nats.Status
}

// slotBits is how many low bits of a reply ID are the slot's index.
const slotBits = 24

// slot is one request's wait, reused: its generation counts its requests.
type slot struct {
	timer   *time.Timer
	done    chan struct{} // one token when the reply or an error is in
	subject string        // the reply subject of id; "" once retired

	mu      sync.Mutex
	id      uint64 // generation<<slotBits | index
	waiting bool
	// What ended the wait; read by the request after it takes the token.
	reply []byte
	err   error
}

// Errors of a request, besides the connection's own from publishing.
var (
	// errReplyTimeout: no reply before the deadline.
	errReplyTimeout = errors.New("no reply within the decision timeout")
	// errDisconnected: the connection dropped while the request waited.
	errDisconnected = errors.New("nats connection lost while waiting for the reply")
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
	// Replies wait in nats.go's queue only until this goroutine reads
	// them; what bounds them is the number of requests in flight.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	r.sub = sub
	// nats.go ends a request at once when the connection drops (its
	// requests fail with ErrDisconnected): so do these, through the
	// connection's status events.
	r.status = nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	go r.watch(r.status)
	return r, nil
}

// close stops the subscription and the watch; requests still waiting end
// at their deadline.
func (r *replies) close() {
	r.nc.RemoveStatusListener(r.status)
	r.sub.Unsubscribe()
}

func (r *replies) watch(status <-chan nats.Status) {
	for range status {
		for _, s := range *r.slots.Load() {
			s.finish(0, nil, errDisconnected)
		}
	}
}

// request publishes m with a reply subject of its own and waits for the
// reply until deadline. The reply's data is the caller's. m.Reply is set.
func (r *replies) request(m *nats.Msg, deadline time.Time) ([]byte, error) {
	s, err := r.get()
	if err != nil {
		return nil, err
	}
	defer r.put(s)
	s.mu.Lock()
	id := s.id
	s.waiting = true
	s.mu.Unlock()
	if s.subject == "" {
		s.subject = r.prefix + strconv.FormatUint(id, 36)
	}
	m.Reply = s.subject
	if err := r.nc.PublishMsg(m); err != nil {
		s.finish(id, nil, err)
		<-s.done // this one's token, or the connection loss's
	} else {
		s.timer.Reset(time.Until(deadline))
		select {
		case <-s.done:
			s.timer.Stop()
		case <-s.timer.C:
			s.finish(id, nil, errReplyTimeout)
			// Whoever finished the wait (this request, a reply that came
			// just as the timer fired, the connection's loss) left one
			// token.
			<-s.done
		}
	}
	if s.err != nil && !errors.Is(s.err, nats.ErrNoResponders) {
		s.retire()
	}
	return s.reply, s.err
}

// retire moves the slot to its next generation, and so to a reply subject
// of its own, after a request that ended without its reply: that reply may
// still come, and must find no one waiting. A slot whose requests get
// their replies (a worker answers once, no responders not at all) keeps
// its subject, so that NATS finds it in its caches: the embedded server
// keeps the match of each subject a client publishes to, a subject new
// every request never found there.
func (s *slot) retire() {
	s.mu.Lock()
	s.id += 1 << slotBits
	s.mu.Unlock()
	s.subject = ""
}

// finish ends the wait of request id (any request, with id 0) with reply
// or err, unless it has ended already; it reports whether it ended it.
func (s *slot) finish(id uint64, reply []byte, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.waiting || id != 0 && id != s.id {
		return false
	}
	s.waiting, s.reply, s.err = false, reply, err
	s.done <- struct{}{}
	return true
}

// deliver hands a reply to the slot its subject names, if that slot still
// waits for it.
func (r *replies) deliver(m *nats.Msg) {
	token, ok := strings.CutPrefix(m.Subject, r.prefix)
	if !ok {
		return
	}
	id, err := strconv.ParseUint(token, 36, 64)
	if err != nil || id>>slotBits == 0 {
		return
	}
	slots := *r.slots.Load()
	index := id & (1<<slotBits - 1)
	if index >= uint64(len(slots)) {
		return
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		slots[index].finish(id, nil, nats.ErrNoResponders)
		return
	}
	slots[index].finish(id, m.Data, nil)
}

// errTooManyInFlight: every possible slot waits. fasthttp's concurrency
// (twice gateway.max_conns) keeps far below it.
var errTooManyInFlight = errors.New("too many requests in flight")

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
	s := &slot{id: 1<<slotBits | uint64(len(old)), done: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
	s.timer.Stop()
	grown := append(old[:len(old):len(old)], s)
	r.slots.Store(&grown)
	return s, nil
}

func (r *replies) put(s *slot) {
	r.mu.Lock()
	r.free = append(r.free, s)
	r.mu.Unlock()
}
