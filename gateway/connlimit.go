package gateway

import (
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/joingate/joingate/pkg/callback"
)

// limitListener serves at most max connections at once. A connection
// beyond that is answered 503 with a JSON failure (IMServer reads every
// answer as JSON), counted, and closed, without reaching fasthttp, whose
// own limit (Server.Concurrency) answers in plain text. It sits above TLS,
// so that the answer is encrypted like any other.
type limitListener struct {
	net.Listener
	max      int64
	active   atomic.Int64
	refusal  []byte // the whole HTTP response
	refused  prometheus.Counter
	refusing sync.WaitGroup
}

func newLimitListener(ln net.Listener, max int, refused prometheus.Counter) *limitListener {
	body := callback.AppendFailure(nil, "too many connections: gateway.max_conns ("+strconv.Itoa(max)+") are open; retry later")
	resp := "HTTP/1.1 503 Service Unavailable\r\nServer: joingate\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + string(body)
	return &limitListener{Listener: ln, max: int64(max), refusal: []byte(resp), refused: refused}
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
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.active.Add(-1)
		l.refused.Inc()
		l.refusing.Add(1)
		// Writing may wait for a client (a TLS handshake): not in Accept.
		go l.refuse(c)
	}
}

// refuse answers c, lets the client read the answer before the connection
// closes (closing with its request unread would reset the connection and
// lose the answer), and closes it; a second at most.
func (l *limitListener) refuse(c net.Conn) {
	defer l.refusing.Done()
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(l.refusal); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// limitedConn gives its slot back when closed. It hides the connection's
// SetKeepAlive from fasthttp (Server.TCPKeepalive); Go's TCP listener
// already turns keep-alive probes on for every accepted connection.
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.active.Add(-1) })
	return c.Conn.Close()
}
