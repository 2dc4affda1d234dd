// Package natsconn connects joingate to NATS the way both sides need it
// (reconnect forever, never buffer while disconnected, log state changes)
// and runs the embedded in-process server of `joingate all`.
package natsconn

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/joingate/joingate/pkg/redact"
)

// Connect dials urls (or, with inProc set, the in-process server) and keeps
// reconnecting forever. Publishing while disconnected fails at once instead
// of buffering: a callback that cannot reach a worker must fall back now,
// not be delivered after the gateway has answered.
//
// A NATS that cannot be reached at start (nothing listening, a name that
// does not resolve yet, a dial timeout) does not stop joingate: Connect
// logs it and returns a connection that keeps trying, so that processes
// start in any order. What the server refuses (credentials, TLS) is an
// error: retrying would not mend it.
//
// Credentials in the URL (nats://user:password@host, nats://token@host) are
// used as nats.go uses them; sec adds the other ways to authenticate.
func Connect(urls string, inProc *server.Server, name string, sec Security, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(false),
		nats.Timeout(2 * time.Second),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed on purpose
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			// nats.go gives up after the same authentication error twice in
			// a row; closed on purpose, there is no error.
			if err := nc.LastError(); err != nil {
				log.Error("nats connection closed for good: fix the cause and restart (a worker exits; a gateway keeps answering gateway.fallback)", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "err", err)
		}),
	}
	secOpts, err := sec.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, secOpts...)
	if inProc != nil {
		opts = append(opts, nats.InProcessServer(inProc))
		urls = ""
	}
	nc, err := nats.Connect(urls, opts...)
	if err == nil {
		return nc, nil
	}
	if inProc != nil || !unreachable(err) {
		return nil, fmt.Errorf("cannot connect to nats %s: %w", redact.URL(urls), err)
	}
	log.Warn("nats unreachable; connecting in the background", "url", redact.URL(urls), "err", err)
	opts = append(opts, nats.RetryOnFailedConnect(true), nats.ConnectHandler(func(nc *nats.Conn) {
		log.Info("nats connected", "server", nc.ConnectedUrlRedacted())
	}))
	if nc, err = nats.Connect(urls, opts...); err != nil {
		return nil, fmt.Errorf("cannot connect to nats %s: %w", redact.URL(urls), err)
	}
	return nc, nil
}

// Connected returns a gauge function of nc's state: 1 while connected, 0
// while not (reconnecting, or never connected yet).
func Connected(nc *nats.Conn) func() float64 {
	return func() float64 {
		if nc.IsConnected() {
			return 1
		}
		return 0
	}
}

// unreachable reports whether a failed first connect means that no server
// answered (worth retrying) rather than that one refused the client.
func unreachable(err error) bool {
	var (
		netErr net.Error
		op     *net.OpError
	)
	if errors.Is(err, nats.ErrTLS) || errors.As(err, &op) && op.Op == "remote error" {
		return false // the handshake failed, or the server refused our certificate
	}
	return errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, io.EOF) || errors.As(err, &netErr)
}

// Security holds the optional ways to authenticate to NATS and to secure
// the connection, beyond credentials in the URL.
type Security struct {
	// CredsFile is a NATS credentials file (JWT and nkey seed).
	CredsFile string
	// NkeySeedFile holds an nkey seed (SU...) for nkey authentication.
	NkeySeedFile string
	// CAFile verifies the server's certificate; CertFile and KeyFile are
	// this client's, for servers that verify clients.
	CAFile, CertFile, KeyFile string
}

func (s Security) options() ([]nats.Option, error) {
	var opts []nats.Option
	if s.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(s.CredsFile))
	}
	if s.NkeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(s.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", s.NkeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if s.CAFile != "" {
		opts = append(opts, nats.RootCAs(s.CAFile))
	}
	if s.CertFile != "" {
		opts = append(opts, nats.ClientCert(s.CertFile, s.KeyFile))
	}
	return opts, nil
}

// Drain drains nc (subscriptions finish their pending messages, then
// publishes are flushed) and waits until it is closed or timeout passes.
func Drain(nc *nats.Conn, timeout time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if nc.IsClosed() {
		return nil
	}
	if err := nc.Drain(); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		nc.Close() // reconnecting: nothing can be drained
		return fmt.Errorf("nats drain: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return fmt.Errorf("nats drain: not done within %s, closed", timeout)
	}
}

// Embedded starts an in-process NATS server. With listen empty it takes no
// network connections at all; otherwise it also serves listen
// ("host:port") so that workers in other processes can join.
func Embedded(listen string, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "joingate-embedded",
		NoSigs:     true,
		NoLog:      true,
		DontListen: listen == "",
		MaxPayload: 1 << 20,
	}
	if listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: %w", listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: port: %w", listen, err)
		}
		opts.Host, opts.Port = host, p
		if host == "" {
			opts.Host = "0.0.0.0"
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats server not ready within 10s (listen %q)", listen)
	}
	if listen != "" {
		log.Info("embedded nats server listening", "addr", ns.Addr().String())
	}
	return ns, nil
}
