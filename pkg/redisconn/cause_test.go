package redisconn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/redisconn"
	"github.com/joingate/joingate/pkg/testenv"
)

// Each way a real Redis call fails gets its cause, and only configuration
// errors need an operator. Every call fails within the client's timeout:
// one dial attempt, no retry.
func TestCause(t *testing.T) {
	port := testenv.StartRedisServer(t, false, "--requirepass", "s3cret-pw", "--databases", "4")
	waitUp(t, client(t, fmt.Sprintf("redis://:s3cret-pw@127.0.0.1:%d", port), redisconn.TLS{}))
	cert, key, _ := testenv.SelfSigned(t)
	tlsPort := testenv.StartRedisServer(t, true, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
		"--tls-auth-clients", "no")
	waitUp(t, client(t, fmt.Sprintf("rediss://127.0.0.1:%d", tlsPort), redisconn.TLS{CAFile: cert}))
	certPort := testenv.StartRedisServer(t, true, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
		"--tls-auth-clients", "yes")
	waitUp(t, client(t, fmt.Sprintf("rediss://127.0.0.1:%d", certPort), redisconn.TLS{CAFile: cert, CertFile: cert, KeyFile: key}))

	// A listener that accepts and never answers: Redis paused, or a
	// network that drops what it is sent.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	free := testenv.Loopback(t) // nothing listens there

	for _, c := range []struct {
		name, url string
		tls       redisconn.TLS
		want      string
	}{
		{"wrong password", fmt.Sprintf("redis://:wrong@127.0.0.1:%d", port), redisconn.TLS{}, redisconn.CauseAuth},
		{"missing password", fmt.Sprintf("redis://127.0.0.1:%d", port), redisconn.TLS{}, redisconn.CauseAuth},
		{"database out of range", fmt.Sprintf("redis://:s3cret-pw@127.0.0.1:%d/9", port), redisconn.TLS{}, redisconn.CauseDatabase},
		{"unknown host", "redis://no-such-host.invalid:6379", redisconn.TLS{}, redisconn.CauseUnknownHost},
		{"untrusted certificate", fmt.Sprintf("rediss://127.0.0.1:%d", tlsPort), redisconn.TLS{}, redisconn.CauseTLS},
		{"no client certificate", fmt.Sprintf("rediss://127.0.0.1:%d", certPort), redisconn.TLS{CAFile: cert}, redisconn.CauseTLS},
		// Mistakes of scheme look like outages: a plain Redis waits for the
		// end of a line that a TLS hello never sends, and a TLS-only one
		// drops a plain-text client.
		{"TLS to a plain server", fmt.Sprintf("rediss://127.0.0.1:%d", port), redisconn.TLS{CAFile: cert}, redisconn.CauseTimeout},
		{"plain text to a TLS server", fmt.Sprintf("redis://127.0.0.1:%d", tlsPort), redisconn.TLS{}, redisconn.CauseClosed},
		{"nothing listening", "redis://" + free, redisconn.TLS{}, redisconn.CauseRefused},
		{"socket removed", "unix:///nonexistent/redis.sock", redisconn.TLS{}, redisconn.CauseRefused},
		{"never answers", "redis://" + hole.Addr().String(), redisconn.TLS{}, redisconn.CauseTimeout},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A short timeout where the timeout is the answer; a long one
			// elsewhere, so that a TLS handshake slowed by a busy machine
			// (-race) is not read as one.
			timeout := 5 * time.Second
			if c.want == redisconn.CauseTimeout {
				timeout = 200 * time.Millisecond
			}
			cl, err := redisconn.NewUniversal(c.url, redisconn.Standalone, c.tls, timeout, 4)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			start := time.Now()
			err = cl.Ping(context.Background()).Err()
			took := time.Since(start)
			if err == nil {
				t.Fatal("ping succeeded")
			}
			if got := redisconn.Cause(err); got != c.want {
				t.Fatalf("Cause(%v) = %q, want %q", err, got, c.want)
			}
			outage := c.want == redisconn.CauseRefused || c.want == redisconn.CauseTimeout || c.want == redisconn.CauseClosed
			if redisconn.NeedsOperator(c.want) == outage {
				t.Fatalf("NeedsOperator(%q) = %v", c.want, redisconn.NeedsOperator(c.want))
			}
			// Five dial attempts 100ms apart (go-redis's default) would
			// take 400ms or more.
			if c.want == redisconn.CauseRefused && took >= 100*time.Millisecond {
				t.Fatalf("a refused connection failed after %s: the client retried its dial", took)
			}
		})
	}
	for _, err := range []error{errors.New("boom"), fmt.Errorf("wrapped: %w", context.DeadlineExceeded)} {
		want := redisconn.CauseOther
		if errors.Is(err, context.DeadlineExceeded) {
			want = redisconn.CauseTimeout
		}
		if got := redisconn.Cause(err); got != want {
			t.Errorf("Cause(%v) = %q, want %q", err, got, want)
		}
	}
}
