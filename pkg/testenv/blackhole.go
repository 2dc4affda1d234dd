package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Blackhole is a TCP proxy to a server that can be made to stop passing
// anything, as a network that drops packets does: connections stay open,
// what is sent is never delivered, new connections are accepted and never
// answered. It holds what it gets until Pass, then passes it on.
type Blackhole struct {
	Addr string // where clients connect

	ln     net.Listener
	target string
	mu     sync.Mutex
	closed bool
	gate   chan struct{} // closed while open
	conns  []net.Conn
}

// StartBlackhole proxies a loopback address to target until the test ends.
func StartBlackhole(t testing.TB, target string) *Blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Blackhole{Addr: ln.Addr().String(), ln: ln, target: target, gate: make(chan struct{})}
	close(b.gate)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

// Drop stops passing anything, in both directions, on every connection.
func (b *Blackhole) Drop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.gate:
		b.gate = make(chan struct{})
	default:
	}
}

// Pass passes traffic again.
func (b *Blackhole) Pass() {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.gate:
	default:
		close(b.gate)
	}
}

// wait blocks while the hole is closed.
func (b *Blackhole) wait() {
	b.mu.Lock()
	g := b.gate
	b.mu.Unlock()
	<-g
}

func (b *Blackhole) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.serve(c)
	}
}

func (b *Blackhole) serve(c net.Conn) {
	b.wait() // a new connection is accepted, and never answered while closed
	s, err := net.Dial("tcp", b.target)
	if err != nil {
		c.Close()
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	b.conns = append(b.conns, c, s)
	b.mu.Unlock()
	go b.pipe(s, c)
	b.pipe(c, s)
}

// pipe copies from src to dst, holding each read while the hole is closed.
func (b *Blackhole) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			return
		}
	}
}

func (b *Blackhole) close() {
	b.ln.Close()
	b.Pass()
	b.mu.Lock()
	b.closed = true
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
}
