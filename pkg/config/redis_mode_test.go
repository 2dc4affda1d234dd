package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestRedisMode checks redis.mode and that redis.url is read in its light:
// sentinel and cluster URLs name more nodes in addr= options.
func TestRedisMode(t *testing.T) {
	load := func(env ...string) (Config, error) {
		t.Helper()
		return Load("", env, nil)
	}
	if cfg, err := load(); err != nil || cfg.Redis.Mode != "standalone" {
		t.Fatalf("default redis.mode = %q, %v; want standalone", cfg.Redis.Mode, err)
	}
	ok := func(mode, url string) {
		t.Helper()
		cfg, err := load("JOINGATE_REDIS_MODE="+mode, "JOINGATE_REDIS_URL="+url)
		if err != nil {
			t.Fatalf("mode %s, url %s: %v", mode, url, err)
		}
		if cfg.Redis.Mode != mode {
			t.Fatalf("redis.mode = %q, want %q", cfg.Redis.Mode, mode)
		}
	}
	ok("standalone", "redis://127.0.0.1:6379/1")
	ok("sentinel", "redis://s1:26379?master_name=mymaster&addr=s2:26379")
	ok("cluster", "redis://n1:7000?addr=n2:7000&addr=n3:7000")

	bad := func(mode, url string, want ...string) {
		t.Helper()
		_, err := load("JOINGATE_REDIS_MODE="+mode, "JOINGATE_REDIS_URL="+url)
		if err == nil {
			t.Fatalf("mode %q, url %q: no error", mode, url)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("mode %q, url %q: error %q does not mention %q", mode, url, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error %q shows the password", err)
		}
	}
	bad("replicated", "redis://h:1", "JOINGATE_REDIS_MODE", "redis.mode", "standalone, sentinel, cluster")
	bad("standalone", "redis://:s3cret@h:1?addr=h:2", "JOINGATE_REDIS_URL", "redis.url", "mode sentinel or cluster?")
	bad("sentinel", "redis://:s3cret@s1:26379", "redis.url", "master_name")
	bad("cluster", "redis://:s3cret@n1:7000/2", "redis.url", "database 0 only")
}

// redis.tls is checked with redis.url: files that load, a rediss:// URL,
// errors under the key redis.tls.
func TestRedisTLS(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	load := func(env ...string) error {
		t.Helper()
		_, err := Load("", env, nil)
		return err
	}
	for _, c := range []struct {
		env  []string
		want []string
	}{
		{[]string{"JOINGATE_REDIS_URL=redis://h:6379", "JOINGATE_REDIS_TLS_CA_FILE=" + missing}, []string{"redis.tls", "JOINGATE_REDIS_TLS_CA_FILE", "rediss://"}},
		{[]string{"JOINGATE_REDIS_URL=rediss://h:6380", "JOINGATE_REDIS_TLS_CA_FILE=" + missing}, []string{"redis.tls", "ca_file", "missing.pem"}},
		{[]string{"JOINGATE_REDIS_URL=rediss://h:6380", "JOINGATE_REDIS_TLS_CERT_FILE=" + missing}, []string{"redis.tls", "go together"}},
		{[]string{"JOINGATE_REDIS_TLS_CA_FILE=" + missing}, []string{"redis.tls", "needs a rediss:// redis.url"}},
	} {
		err := load(c.env...)
		if err == nil {
			t.Fatalf("%v: no error", c.env)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%v: error %q does not mention %q", c.env, err, w)
			}
		}
	}
	if err := load("JOINGATE_REDIS_URL=rediss://:pw@h:6380"); err != nil {
		t.Fatalf("rediss:// without files (system roots): %v", err)
	}
}
