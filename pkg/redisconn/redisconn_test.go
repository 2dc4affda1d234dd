package redisconn

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestNewUniversal builds a client of each mode without a server: go-redis
// connects lazily. The concrete type matters: the limiter store splits
// requests by hash slot only for a *redis.ClusterClient.
func TestNewUniversal(t *testing.T) {
	f := func(url, mode string, check func(t *testing.T, c redis.UniversalClient)) {
		t.Helper()
		c, err := NewUniversal(url, mode, 123*time.Millisecond, 7)
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
	f("redis://127.0.0.1:6379/2", Standalone, standalone("127.0.0.1:6379", 2))
	// Timeouts in the URL give way to redis.timeout.
	f("redis://h:1?dial_timeout=9s&read_timeout=9s&max_retries=5&pool_size=99", Standalone, standalone("h:1", 0))
	f("unix:///tmp/redis.sock", Standalone, standalone("/tmp/redis.sock", 0))

	// A failover client is a *redis.Client whose connections go to the
	// master the sentinels name.
	f("redis://:sentinelpw@s1:26379/3?master_name=mymaster&addr=s2:26379&password=masterpw", Sentinel, func(t *testing.T, c redis.UniversalClient) {
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

	f("redis://n1:7000?addr=n2:7001&addr=n3:7002&read_timeout=9s", Cluster, func(t *testing.T, c redis.UniversalClient) {
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

func TestNewUniversalErrors(t *testing.T) {
	f := func(url, mode string, want ...string) {
		t.Helper()
		c, err := NewUniversal(url, mode, time.Second, 1)
		if err == nil {
			c.Close()
			t.Fatalf("NewUniversal(%q, %q): no error", url, mode)
		}
		if verr := Validate(url, mode); verr == nil || verr.Error() != err.Error() {
			t.Fatalf("Validate(%q, %q) = %v, want %v", url, mode, verr, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("NewUniversal(%q, %q) error %q does not mention %q", url, mode, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error %q shows the password", err)
		}
	}
	f("redis://h:1", "replicated", "unknown redis mode", `"replicated"`, "standalone, sentinel, cluster")
	f("redis://h:1", "Cluster", "unknown redis mode")

	f("http://h:1", Standalone, "mode standalone", "invalid URL scheme")
	f("redis://h:1?addr=h:2", Standalone, "unexpected option: addr", "mode sentinel or cluster?")
	f("redis://h:1?master_name=m", "", "unexpected option: master_name", "mode sentinel or cluster?")
	f("redis://:s3cret@h:port", Standalone, "invalid port")

	f("redis://s1:26379", Sentinel, "mode sentinel", "master_name")
	f("unix:///tmp/s.sock?master_name=m", Sentinel, "invalid URL scheme")
	f("redis://s1:26379?master_name=m&addr=nonsense", Sentinel, "addr param")
	f("redis://s1:26379?master_name=m&route_by_latency=true", Sentinel, "not supported")
	f("redis://s1:26379?master_name=m&replica_only=true", Sentinel, "not supported")
	f("redis://s1:26379?master_name=m&password=s3cret&bogus=1", Sentinel, "unexpected option: bogus")

	f("redis://:s3cret@n1:7000?addr=n2", Cluster, "mode cluster", "addr param")
	f("unix:///tmp/n.sock", Cluster, "invalid URL scheme")
	f("redis://n1:7000/2", Cluster, "database 0 only")
	f("redis://n1:7000?read_only=true", Cluster, "not supported")
	f("redis://n1:7000?master_name=m", Cluster, "unexpected option: master_name")
}

func TestValidate(t *testing.T) {
	for _, c := range []struct{ url, mode string }{
		{"redis://h:6379/1", Standalone},
		{"unix:///run/redis.sock", ""},
		{"rediss://user:pw@s1:26379?master_name=m&addr=s2:26379", Sentinel},
		{"redis://n1:7000/0?addr=n2:7000", Cluster},
	} {
		if err := Validate(c.url, c.mode); err != nil {
			t.Errorf("Validate(%q, %q): %v", c.url, c.mode, err)
		}
	}
	if err := Validate("redis://h:1", "x"); !errors.Is(err, ErrMode) {
		t.Errorf("Validate with a bad mode: %v, want ErrMode", err)
	}
}

func TestAddrs(t *testing.T) {
	f := func(url, mode, want string) {
		t.Helper()
		if got := strings.Join(Addrs(url, mode), ","); got != want {
			t.Errorf("Addrs(%q, %q) = %q, want %q", url, mode, got, want)
		}
	}
	f("redis://:pw@h:6379/1", Standalone, "h:6379")
	f("unix:///run/redis.sock", "", "/run/redis.sock")
	f("redis://:pw@s1:26379?master_name=m&addr=s2:26379&password=pw", Sentinel, "s1:26379,s2:26379")
	f("redis://n1:7000?addr=n2:7001", Cluster, "n1:7000,n2:7001")
	f("redis://n1:7000?addr=n2:7001", "x", "")
	f("redis://s1:26379", Sentinel, "")
}
