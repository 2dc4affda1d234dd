package redisconn_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/redisconn"
	"github.com/joingate/joingate/pkg/testenv"
)

// TestNewUniversal builds a client of each mode without a server: go-redis
// connects lazily. The concrete type matters: the limiter store splits
// requests by hash slot only for a *redis.ClusterClient.
func TestNewUniversal(t *testing.T) {
	f := func(url, mode string, check func(t *testing.T, c redis.UniversalClient)) {
		t.Helper()
		c, err := redisconn.NewUniversal(url, mode, redisconn.TLS{}, 123*time.Millisecond, 7)
		if err != nil {
			t.Fatalf("NewUniversal(%q, %q): %v", url, mode, err)
		}
		defer c.Close()
		check(t, c)
	}
	standalone := func(addr string, db int) func(t *testing.T, c redis.UniversalClient) {
		return func(t *testing.T, c redis.UniversalClient) {
			t.Helper()
			cl, ok := c.(*redis.Client)
			if !ok {
				t.Fatalf("got %T, want *redis.Client", c)
			}
			o := cl.Options()
			if o.Addr != addr || o.DB != db {
				t.Fatalf("addr %q db %d, want %q db %d", o.Addr, o.DB, addr, db)
			}
			wantTuned(t, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled, o.MaxRetries, o.PoolSize, o.ClientName)
		}
	}
	f("redis://127.0.0.1:6379/2", "", standalone("127.0.0.1:6379", 2))
	f("redis://127.0.0.1:6379/2", redisconn.Standalone, standalone("127.0.0.1:6379", 2))
	// Timeouts in the URL give way to redis.timeout.
	f("redis://h:1?dial_timeout=9s&read_timeout=9s&max_retries=5&pool_size=99", redisconn.Standalone, standalone("h:1", 0))
	f("unix:///tmp/redis.sock", redisconn.Standalone, standalone("/tmp/redis.sock", 0))

	// A failover client is a *redis.Client whose connections go to the
	// master the sentinels name.
	f("redis://:sentinelpw@s1:26379/3?master_name=mymaster&addr=s2:26379&password=masterpw", redisconn.Sentinel, func(t *testing.T, c redis.UniversalClient) {
		cl, ok := c.(*redis.Client)
		if !ok {
			t.Fatalf("got %T, want *redis.Client", c)
		}
		o := cl.Options()
		if o.DB != 3 || o.Password != "masterpw" {
			t.Fatalf("db %d password %q, want 3 and the master's password", o.DB, o.Password)
		}
		wantTuned(t, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled, o.MaxRetries, o.PoolSize, o.ClientName)
	})

	f("redis://n1:7000?addr=n2:7001&addr=n3:7002&read_timeout=9s", redisconn.Cluster, func(t *testing.T, c redis.UniversalClient) {
		cl, ok := c.(*redis.ClusterClient)
		if !ok {
			t.Fatalf("got %T, want *redis.ClusterClient", c)
		}
		o := cl.Options()
		if strings.Join(o.Addrs, ",") != "n1:7000,n2:7001,n3:7002" {
			t.Fatalf("addrs %q", o.Addrs)
		}
		wantTuned(t, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled, o.MaxRetries, o.PoolSize, o.ClientName)
	})
}

func wantTuned(t *testing.T, dial, read, write, pool time.Duration, ctxTimeout bool, retries, poolSize int, name string) {
	t.Helper()
	const timeout = 123 * time.Millisecond
	if dial != timeout || read != timeout || write != timeout || pool != timeout {
		t.Errorf("timeouts dial %s read %s write %s pool %s, want %s each", dial, read, write, pool, timeout)
	}
	if !ctxTimeout || (retries != 0 && retries != -1) || poolSize != 7 || name != "joingate" {
		t.Errorf("context timeouts %v, max retries %d, pool size %d, name %q; want true, no retries (-1, or 0 once go-redis has read it), 7, joingate", ctxTimeout, retries, poolSize, name)
	}
}

// wantError checks that NewUniversal and Validate refuse url in mode with
// t's files, with the same error, naming want and never the password.
func wantError(t *testing.T, url, mode string, tl redisconn.TLS, want ...string) error {
	t.Helper()
	c, err := redisconn.NewUniversal(url, mode, tl, time.Second, 1)
	if err == nil {
		c.Close()
		t.Fatalf("NewUniversal(%q, %q, %+v): no error", url, mode, tl)
	}
	if verr := redisconn.Validate(url, mode, tl); verr == nil || verr.Error() != err.Error() {
		t.Fatalf("Validate(%q, %q, %+v) = %v, want %v", url, mode, tl, verr, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("NewUniversal(%q, %q, %+v) error %q does not mention %q", url, mode, tl, err, w)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %q shows the password", err)
	}
	return err
}

func TestNewUniversalErrors(t *testing.T) {
	f := func(url, mode string, want ...string) {
		t.Helper()
		wantError(t, url, mode, redisconn.TLS{}, want...)
	}
	f("redis://h:1", "replicated", "unknown redis mode", `"replicated"`, "standalone, sentinel, cluster")
	f("redis://h:1", "Cluster", "unknown redis mode")

	f("http://h:1", redisconn.Standalone, "mode standalone", "invalid URL scheme")
	f("redis://h:1?addr=h:2", redisconn.Standalone, "unexpected option: addr", "mode sentinel or cluster?")
	f("redis://h:1?master_name=m", "", "unexpected option: master_name", "mode sentinel or cluster?")
	f("redis://:s3cret@h:port", redisconn.Standalone, "invalid port")

	f("redis://s1:26379", redisconn.Sentinel, "mode sentinel", "master_name")
	f("unix:///tmp/s.sock?master_name=m", redisconn.Sentinel, "invalid URL scheme")
	f("redis://s1:26379?master_name=m&addr=nonsense", redisconn.Sentinel, "addr param")
	f("redis://s1:26379?master_name=m&route_by_latency=true", redisconn.Sentinel, "not supported")
	f("redis://s1:26379?master_name=m&replica_only=true", redisconn.Sentinel, "not supported")
	f("redis://s1:26379?master_name=m&password=s3cret&bogus=1", redisconn.Sentinel, "unexpected option: bogus")

	f("redis://:s3cret@n1:7000?addr=n2", redisconn.Cluster, "mode cluster", "addr param")
	f("unix:///tmp/n.sock", redisconn.Cluster, "invalid URL scheme")
	f("redis://n1:7000/2", redisconn.Cluster, "database 0 only")
	f("redis://n1:7000?read_only=true", redisconn.Cluster, "not supported")
	f("redis://n1:7000?master_name=m", redisconn.Cluster, "unexpected option: master_name")
}

func TestValidate(t *testing.T) {
	for _, c := range []struct{ url, mode string }{
		{"redis://h:6379/1", redisconn.Standalone},
		{"unix:///run/redis.sock", ""},
		{"rediss://user:pw@s1:26379?master_name=m&addr=s2:26379", redisconn.Sentinel},
		{"redis://n1:7000/0?addr=n2:7000", redisconn.Cluster},
	} {
		if err := redisconn.Validate(c.url, c.mode, redisconn.TLS{}); err != nil {
			t.Errorf("Validate(%q, %q): %v", c.url, c.mode, err)
		}
	}
	if err := redisconn.Validate("redis://h:1", "x", redisconn.TLS{}); !errors.Is(err, redisconn.ErrMode) {
		t.Errorf("Validate with a bad mode: %v, want ErrMode", err)
	}
}

func TestAddrs(t *testing.T) {
	f := func(url, mode, want string) {
		t.Helper()
		if got := strings.Join(redisconn.Addrs(url, mode), ","); got != want {
			t.Errorf("Addrs(%q, %q) = %q, want %q", url, mode, got, want)
		}
	}
	f("redis://:pw@h:6379/1", redisconn.Standalone, "h:6379")
	f("unix:///run/redis.sock", "", "/run/redis.sock")
	f("redis://:pw@s1:26379?master_name=m&addr=s2:26379&password=pw", redisconn.Sentinel, "s1:26379,s2:26379")
	f("redis://n1:7000?addr=n2:7001", redisconn.Cluster, "n1:7000,n2:7001")
	f("redis://n1:7000?addr=n2:7001", "x", "")
	f("redis://s1:26379", redisconn.Sentinel, "")
}

// TLS files need a rediss:// URL in every mode, and must load; the errors
// wrap redisconn.ErrTLS (the configuration reports them under redis.tls).
func TestTLSErrors(t *testing.T) {
	cert, key, _ := testenv.SelfSigned(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	urls := map[string][2]string{ // mode: plain URL, TLS URL
		redisconn.Standalone: {"redis://:s3cret@h:1", "rediss://:s3cret@h:1"},
		redisconn.Sentinel:   {"redis://:s3cret@s1:26379?master_name=m", "rediss://:s3cret@s1:26379?master_name=m"},
		redisconn.Cluster:    {"redis://:s3cret@n1:7000?addr=n2:7000", "rediss://:s3cret@n1:7000?addr=n2:7000"},
	}
	for mode, u := range urls {
		for _, c := range []struct {
			url  string
			tls  redisconn.TLS
			want string
		}{
			{u[0], redisconn.TLS{CAFile: cert}, "need a rediss:// URL"},
			{u[1], redisconn.TLS{CAFile: filepath.Join(t.TempDir(), "missing.pem")}, "ca_file"},
			{u[1], redisconn.TLS{CAFile: notPEM}, "holds no PEM certificate"},
			{u[1], redisconn.TLS{CertFile: cert}, "cert_file and key_file go together"},
			{u[1], redisconn.TLS{CertFile: cert, KeyFile: notPEM}, "cannot load the client certificate"},
		} {
			if err := wantError(t, c.url, mode, c.tls, c.want); !errors.Is(err, redisconn.ErrTLS) {
				t.Fatalf("%s %+v: %v does not wrap ErrTLS", mode, c.tls, err)
			}
		}
		// Good files on a rediss:// URL: a client, not an error.
		c, err := redisconn.NewUniversal(u[1], mode, redisconn.TLS{CAFile: cert, CertFile: cert, KeyFile: key}, time.Second, 1)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		c.Close()
	}
	wantError(t, "unix:///tmp/redis.sock", redisconn.Standalone, redisconn.TLS{CAFile: cert}, "need a rediss:// URL")
}
