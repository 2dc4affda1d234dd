package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/launch"
	"github.com/joingate/joingate/pkg/redisconn"
)

// Cluster is a Redis Cluster of three masters and no replicas, each a
// redis-server process owned by one test.
type Cluster struct {
	// Addrs are the nodes' host:port.
	Addrs []string
	// URL names every node, for redisconn in cluster mode.
	URL string
	// Client is the client joingate builds for URL (production's timeouts).
	Client *redis.ClusterClient
}

// StartCluster starts three cluster-enabled redis-server processes on free
// loopback ports, joins them with `redis-cli --cluster create` and waits
// until every node reports cluster_state:ok and the client sees three
// masters. The processes stop when the test ends. A missing redis-server or
// redis-cli fails the test with what to install.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := lookRedis(t, "redis-server")
	cli := lookRedis(t, "redis-cli")
	c := &Cluster{}
	// Each node needs a client port and a cluster bus port; the default
	// bus port (port+10000) may be out of range or taken.
	err := launch.OnFreeAddrs(6, func(addrs []string) error {
		dir := t.TempDir()
		c.Addrs = c.Addrs[:0]
		var nodes []*Process
		for i := range 3 {
			addr, bus := addrs[2*i], launch.Port(addrs[2*i+1])
			ndir := filepath.Join(dir, fmt.Sprint("node", i))
			if err := os.Mkdir(ndir, 0o700); err != nil {
				return err
			}
			p, err := startRedis(t, "redis-server", bin, addr, ndir,
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(ndir, fmt.Sprintf("nodes-%d.conf", i)),
				"--cluster-port", bus)
			if err != nil {
				for _, p := range nodes {
					p.Stop(0)
				}
				return err
			}
			nodes = append(nodes, p)
			c.Addrs = append(c.Addrs, addr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	ctx := context.Background()
	for _, addr := range c.Addrs {
		node := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		var info string
		ok := Eventually(20*time.Second, func() bool {
			info, _ = node.ClusterInfo(ctx).Result()
			return strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3")
		})
		node.Close()
		if !ok {
			t.Fatalf("cluster node %s not ready within 20s:\n%s", addr, info)
		}
	}
	c.URL = fmt.Sprintf("redis://%s?addr=%s&addr=%s", c.Addrs[0], c.Addrs[1], c.Addrs[2])
	client, err := redisconn.NewUniversal(c.URL, redisconn.Cluster, redisconn.TLS{}, 250*time.Millisecond, 16)
	if err != nil {
		t.Fatal(err)
	}
	c.Client = client.(*redis.ClusterClient)
	t.Cleanup(func() { c.Client.Close() })
	var masters atomic.Int32
	if !Eventually(10*time.Second, func() bool {
		c.Client.ReloadState(ctx)
		masters.Store(0)
		// fn runs on every master at once.
		err := c.Client.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			masters.Add(1)
			return m.Ping(ctx).Err()
		})
		return err == nil && masters.Load() == 3
	}) {
		t.Fatalf("cluster client sees %d answering masters, want 3", masters.Load())
	}
	return c
}

// FlushAll empties every master.
func (c *Cluster) FlushAll(t testing.TB) {
	t.Helper()
	err := c.Client.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		return m.FlushAll(ctx).Err()
	})
	if err != nil {
		t.Fatalf("flush cluster: %v", err)
	}
}

// Sentinel is a Redis master watched by one Sentinel, both redis-server
// processes owned by one test.
type Sentinel struct {
	// MasterAddr and SentinelAddr are host:port.
	MasterAddr, SentinelAddr string
	// MasterName is what the sentinel monitors.
	MasterName string
	// URL names the sentinel and the master's name, for redisconn in
	// sentinel mode.
	URL string
	// Client is the client joingate builds for URL: connections go to the
	// master the sentinel names.
	Client *redis.Client
}

// StartSentinel starts a redis-server master and a sentinel monitoring it
// (quorum 1) on free loopback ports, and waits until the sentinel names the
// master and the failover client reaches it. The processes stop when the
// test ends. A missing redis-server fails the test with what to install.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin := lookRedis(t, "redis-server")
	s := &Sentinel{MasterName: "mymaster"}
	err := launch.OnFreeAddrs(2, func(addrs []string) error {
		s.MasterAddr, s.SentinelAddr = addrs[0], addrs[1]
		dir := t.TempDir()
		mdir, sdir := filepath.Join(dir, "master"), filepath.Join(dir, "sentinel")
		for _, d := range []string{mdir, sdir} {
			if err := os.Mkdir(d, 0o700); err != nil {
				return err
			}
		}
		master, err := startRedis(t, "redis-server", bin, s.MasterAddr, mdir)
		if err != nil {
			return err
		}
		// Sentinel rewrites its configuration file, so it gets its own.
		conf := filepath.Join(sdir, "sentinel.conf")
		if err := os.WriteFile(conf, fmt.Appendf(nil, `port %s
bind 127.0.0.1
daemonize no
dir %s
loglevel warning
sentinel monitor %s 127.0.0.1 %s 1
`, launch.Port(s.SentinelAddr), sdir, s.MasterName, launch.Port(s.MasterAddr)), 0o600); err != nil {
			return err
		}
		sentinel, err := launch.StartReady(context.Background(), "sentinel", bin, []string{conf, "--sentinel"}, nil, sdir,
			launch.Greets(s.SentinelAddr, "PING\r\n", "+PONG"))
		if err != nil {
			master.Stop(0)
			return err
		}
		stopAtEnd(t, func() []*Process { return []*Process{sentinel} })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer sc.Close()
	var got []string
	if !Eventually(10*time.Second, func() bool {
		got, _ = sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		return len(got) == 2 && got[0]+":"+got[1] == s.MasterAddr
	}) {
		t.Fatalf("sentinel %s names master %q within 10s, want %s", s.SentinelAddr, got, s.MasterAddr)
	}
	s.URL = fmt.Sprintf("redis://%s?master_name=%s", s.SentinelAddr, s.MasterName)
	client, err := redisconn.NewUniversal(s.URL, redisconn.Sentinel, redisconn.TLS{}, 250*time.Millisecond, 16)
	if err != nil {
		t.Fatal(err)
	}
	s.Client = client.(*redis.Client)
	t.Cleanup(func() { s.Client.Close() })
	var lastErr error
	if !Eventually(10*time.Second, func() bool {
		lastErr = s.Client.Ping(ctx).Err()
		return lastErr == nil
	}) {
		t.Fatalf("master %s through sentinel %s did not answer within 10s: %v", s.MasterAddr, s.SentinelAddr, lastErr)
	}
	return s
}

// lookRedis finds a Redis program or fails the test with what to install.
func lookRedis(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: run `make test` (installs it) or `apt-get install redis-server` (redis-cli comes with it, in redis-tools)", name)
	}
	return bin
}

// startRedis starts redis-server (launch.StartRedis) on addr, its files
// in dir, until the test ends or the process is stopped.
func startRedis(t testing.TB, name, bin, addr, dir string, args ...string) (*Process, error) {
	p, err := launch.StartRedis(context.Background(), name, bin, addr, dir, args...)
	if err != nil {
		return nil, err
	}
	stopAtEnd(t, func() []*Process { return []*Process{p} })
	return p, nil
}
