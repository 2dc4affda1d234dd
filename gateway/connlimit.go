package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/callback"
)

// maxRefusing bounds the connections being refused at once: under a
// connection flood, the rest are closed at once, unanswered.
const maxRefusing = 256

// limitListener serves at most max connections at once. A connection
// beyond that does not reach fasthttp, whose own limit
// (Server.Concurrency) answers in plain text, which IMServer reads as a
// refusal: it is answered as a request that cannot be decided, in JSON
// (gateway.fallback for a join callback, allow for any other command),
// with status 503, then closed, and counted. It sits above TLS, so that the
// answer is encrypted like any other.
type limitListener struct {
	net.Listener
	max              int64
	active           atomic.Int64
	joinResp, others []byte // whole HTTP responses
	refused          prometheus.Counter
	slots            chan struct{} // one per connection being refused
	refusing         sync.WaitGroup

	mu    sync.Mutex
	conns map[*limitedConn]struct{} // served now
}

func newLimitListener(ln net.Listener, max int, fallback []byte, refused prometheus.Counter) *limitListener {
	resp := func(body []byte) []byte {
		return []byte("HTTP/1.1 503 Service Unavailable\r\nServer: joingate\r\nContent-Type: application/json\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + string(body))
	}
	return &limitListener{
		Listener: ln,
		max:      int64(max),
		joinResp: resp(fallback),
		others:   resp([]byte(callback.AllowJSON)),
		refused:  refused,
		slots:    make(chan struct{}, maxRefusing),
		conns:    make(map[*limitedConn]struct{}),
	}
}

// Accept returns the next connection within the limit, refusing those
// beyond it as they come.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.active.Add(1) <= l.max {
			lc := &limitedConn{Conn: c, l: l, accepted: time.Now()}
			l.mu.Lock()
			l.conns[lc] = struct{}{}
			l.mu.Unlock()
			return lc, nil
		}
		l.active.Add(-1)
		l.refused.Inc()
		select {
		case l.slots <- struct{}{}:
			l.refusing.Add(1)
			// Reading and writing wait for the client (and a TLS
			// handshake): not in Accept.
			go l.refuse(c)
		default:
			c.Close()
		}
	}
}

// refuse reads the request line, answers it, lets the client read the
// answer before the connection closes (closing with its request unread
// would reset the connection and lose the answer), and closes it; within
// a second.
func (l *limitListener) refuse(c net.Conn) {
	defer func() {
		c.Close()
		<-l.slots
		l.refusing.Done()
	}()
	c.SetDeadline(time.Now().Add(time.Second))
	resp := l.others
	br := bufio.NewReaderSize(c, 4096)
	if line, err := br.ReadSlice('\n'); err == nil {
		// "POST /callbackExample/callbackBeforeJoinGroupCommand HTTP/1.1"
		if f := bytes.Fields(line); len(f) == 3 && string(command(f[1])) == callback.JoinGroupCommand {
			resp = l.joinResp
		}
	}
	if _, err := c.Write(resp); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(br, 64<<10))
}

// closeUnused closes the connections that have sent nothing since they
// were accepted and are older than age.
// fasthttp's shutdown closes idle keep-alive connections but waits for a
// new one until its first request or read_timeout: a client's spare
// connection (Go's Transport dials them) would hold a stopping gateway
// that long. age spares one whose first request is on its way.
func (l *limitListener) closeUnused(age time.Duration) {
	l.mu.Lock()
	var unused []*limitedConn
	for c := range l.conns {
		if !c.used.Load() && time.Since(c.accepted) >= age {
			unused = append(unused, c)
		}
	}
	l.mu.Unlock()
	for _, c := range unused {
		c.Close()
	}
}

// limitedConn gives its slot back when closed, and knows whether the
// client has sent anything. It hides the connection's SetKeepAlive from
// fasthttp (Server.TCPKeepalive); Go's TCP listener already turns
// keep-alive probes on for every accepted connection.
type limitedConn struct {
	net.Conn
	l        *limitListener
	accepted time.Time
	used     atomic.Bool
	once     sync.Once
}

func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.used.Load() {
		c.used.Store(true)
	}
	return n, err
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.active.Add(-1)
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
