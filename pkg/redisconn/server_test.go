package redisconn_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/redisconn"
	"github.com/joingate/joingate/pkg/testenv"
)

// client is NewUniversal in standalone mode, closed when the test ends.
func client(t *testing.T, url string, tl redisconn.TLS) redis.UniversalClient {
	t.Helper()
	c, err := redisconn.NewUniversal(url, redisconn.Standalone, tl, time.Second, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitUp polls c until redis-server answers it.
func waitUp(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	var err error
	if !testenv.Eventually(10*time.Second, func() bool {
		err = c.Ping(context.Background()).Err()
		return err == nil
	}) {
		t.Fatalf("redis-server did not answer within 10s: %v", err)
	}
}

// decides runs one limiter decision through c: the script, its keys and
// its reply, over whatever c's connection is.
func decides(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	q := ratelimit.Query{Checks: []ratelimit.Check{{Key: "jg:k", Limit: ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}}}}
	var a ratelimit.Answer
	if err := ratelimit.NewRedis(c).Decide(context.Background(), &q, &a); err != nil || !a.Admitted(&q) {
		t.Fatalf("decision: %+v, %v", a, err)
	}
	if err := ratelimit.NewRedis(c).Decide(context.Background(), &q, &a); err != nil || a.Admitted(&q) {
		t.Fatalf("second decision against a burst of 1: %+v, %v; want refused", a, err)
	}
}

// pingFails checks that c cannot talk to the server, with an error that
// names want and not the password.
func pingFails(t *testing.T, c redis.UniversalClient, want string) {
	t.Helper()
	err := c.Ping(context.Background()).Err()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("ping: %v, want an error mentioning %q", err, want)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %q shows the password", err)
	}
}

// A password in the URL (redis://:password@host) authenticates; a wrong
// or missing one is refused by the server, and said so.
func TestPassword(t *testing.T) {
	port := testenv.StartRedisServer(t, false, "--requirepass", "s3cret-pw")
	good := client(t, fmt.Sprintf("redis://:s3cret-pw@127.0.0.1:%d", port), redisconn.TLS{})
	waitUp(t, good)
	decides(t, good)
	pingFails(t, client(t, fmt.Sprintf("redis://:wrong@127.0.0.1:%d", port), redisconn.TLS{}), "WRONGPASS")
	pingFails(t, client(t, fmt.Sprintf("redis://127.0.0.1:%d", port), redisconn.TLS{}), "NOAUTH")
}

// rediss:// with redis.tls.ca_file talks to a TLS-only redis-server whose
// certificate a private CA signed; without the CA file the certificate is
// not trusted, and a plain redis:// URL gets no answer.
func TestTLS(t *testing.T) {
	cert, key, _ := testenv.SelfSigned(t)
	port := testenv.StartRedisServer(t, true, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
		"--tls-auth-clients", "no", "--requirepass", "s3cret-pw")
	url := fmt.Sprintf("rediss://:s3cret-pw@127.0.0.1:%d", port)
	good := client(t, url, redisconn.TLS{CAFile: cert})
	waitUp(t, good)
	decides(t, good)
	pingFails(t, client(t, url, redisconn.TLS{}), "certificate")
	if err := client(t, fmt.Sprintf("redis://:s3cret-pw@127.0.0.1:%d", port), redisconn.TLS{}).Ping(context.Background()).Err(); err == nil {
		t.Fatal("a plain-text client was answered by a TLS-only server")
	}
}

// A server that asks for client certificates (--tls-auth-clients yes)
// accepts joingate with redis.tls.cert_file and key_file, and refuses it
// without them.
func TestTLSClientCertificate(t *testing.T) {
	cert, key, _ := testenv.SelfSigned(t)
	port := testenv.StartRedisServer(t, true, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
		"--tls-auth-clients", "yes")
	url := fmt.Sprintf("rediss://127.0.0.1:%d", port)
	good := client(t, url, redisconn.TLS{CAFile: cert, CertFile: cert, KeyFile: key})
	waitUp(t, good)
	decides(t, good)
	if err := client(t, url, redisconn.TLS{CAFile: cert}).Ping(context.Background()).Err(); err == nil {
		t.Fatal("a client without a certificate was answered by a server that requires one")
	}
}
