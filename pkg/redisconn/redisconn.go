// Package redisconn builds the Redis client of the limiter store from
// configuration, with every timeout set and context deadlines honoured, so
// that a slow or absent Redis costs a decision its budget and no more. It
// speaks to a standalone Redis, to a master found through Sentinel, or to a
// Redis Cluster (redis.mode).
package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/joingate/joingate/pkg/redact"
)

// The topologies of redis.mode.
const (
	// Standalone is one Redis server (or a proxy in front of one):
	// redis://[[user]:password@]host:port[/db], rediss:// or unix:///path.
	Standalone = "standalone"
	// Sentinel finds the master through Sentinel:
	// redis://[[user]:password@]sentinel1:26379[/db]?master_name=mymaster&addr=sentinel2:26379.
	// The user info authenticates to the sentinels; the master's own
	// credentials go in the username= and password= query options.
	Sentinel = "sentinel"
	// Cluster is a Redis Cluster, reached through any of its nodes:
	// redis://[[user]:password@]node1:7000?addr=node2:7000&addr=node3:7000.
	Cluster = "cluster"
)

// Modes lists the topologies, for validation and messages.
var Modes = []string{Standalone, Sentinel, Cluster}

// ErrMode is returned for a mode that is not one of Modes.
var ErrMode = errors.New("unknown redis mode")

// TLS names the files that secure a rediss:// connection: CAFile verifies
// the server instead of the system's roots (a private CA), CertFile and
// KeyFile authenticate joingate to a server that asks for a client
// certificate. All empty: a rediss:// URL verifies against the system's
// roots.
type TLS struct {
	CAFile, CertFile, KeyFile string
}

// ErrTLS is wrapped by errors about TLS's files or their use.
var ErrTLS = errors.New("redis tls")

// apply adds t's files to the TLS configuration a rediss:// URL gave
// (*cfg; nil for redis:// and unix://).
func (t TLS) apply(cfg **tls.Config) error {
	if t == (TLS{}) {
		return nil
	}
	if *cfg == nil {
		return fmt.Errorf("%w: ca_file, cert_file and key_file need a rediss:// URL", ErrTLS)
	}
	c := (*cfg).Clone()
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("%w: ca_file: %w", ErrTLS, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%w: ca_file %s holds no PEM certificate", ErrTLS, t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%w: cert_file and key_file go together", ErrTLS)
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("%w: cannot load the client certificate: %w", ErrTLS, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	*cfg = c
	return nil
}

// New returns a client for a standalone Redis at url (redis://, rediss://
// or unix://) without TLS files: NewUniversal in Standalone mode, as its
// concrete type.
func New(url string, timeout time.Duration, poolSize int) (*redis.Client, error) {
	return newStandalone(url, TLS{}, timeout, poolSize)
}

func newStandalone(url string, t TLS, timeout time.Duration, poolSize int) (*redis.Client, error) {
	opts, err := parseStandalone(url)
	if err != nil {
		return nil, err
	}
	if err := tune(fields{dial: &opts.DialTimeout, read: &opts.ReadTimeout, write: &opts.WriteTimeout, pool: &opts.PoolTimeout,
		contextTimeout: &opts.ContextTimeoutEnabled, maxRetries: &opts.MaxRetries, dialRetries: &opts.DialerRetries, minBackoff: &opts.MinRetryBackoff,
		maxBackoff: &opts.MaxRetryBackoff, poolSize: &opts.PoolSize, name: &opts.ClientName, tlsConfig: &opts.TLSConfig}, t, timeout, poolSize); err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// NewUniversal returns a client for url in mode (one of Modes; "" is
// Standalone), with t's files for a rediss:// URL. The interface holds the
// concrete client: *redis.Client for
// Standalone and Sentinel, *redis.ClusterClient for Cluster, which the
// limiter store recognises to split a request by hash slot.
//
// timeout bounds each dial, read, write and wait for a pooled connection,
// whatever url says; poolSize bounds connections (per node on Cluster) and
// should match the decisions made at once. A request's deadline cuts a call
// short, and no call is retried: the decision script is not idempotent (a
// retry after a slow reply would charge a request twice), and a request's
// budget leaves no time for a retry anyway.
func NewUniversal(url, mode string, t TLS, timeout time.Duration, poolSize int) (redis.UniversalClient, error) {
	switch mode {
	case "", Standalone:
		return newStandalone(url, t, timeout, poolSize)
	case Sentinel:
		opts, err := parseSentinel(url)
		if err != nil {
			return nil, err
		}
		if err := tune(fields{dial: &opts.DialTimeout, read: &opts.ReadTimeout, write: &opts.WriteTimeout, pool: &opts.PoolTimeout,
			contextTimeout: &opts.ContextTimeoutEnabled, maxRetries: &opts.MaxRetries, dialRetries: &opts.DialerRetries, minBackoff: &opts.MinRetryBackoff,
			maxBackoff: &opts.MaxRetryBackoff, poolSize: &opts.PoolSize, name: &opts.ClientName, tlsConfig: &opts.TLSConfig}, t, timeout, poolSize); err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(opts), nil
	case Cluster:
		opts, err := parseCluster(url)
		if err != nil {
			return nil, err
		}
		if err := tune(fields{dial: &opts.DialTimeout, read: &opts.ReadTimeout, write: &opts.WriteTimeout, pool: &opts.PoolTimeout,
			contextTimeout: &opts.ContextTimeoutEnabled, maxRetries: &opts.MaxRetries, dialRetries: &opts.DialerRetries, minBackoff: &opts.MinRetryBackoff,
			maxBackoff: &opts.MaxRetryBackoff, poolSize: &opts.PoolSize, name: &opts.ClientName, tlsConfig: &opts.TLSConfig}, t, timeout, poolSize); err != nil {
			return nil, err
		}
		// The cluster client retries a timed-out command within its redirect
		// loop, which would run a decision script twice: no redirects
		// either. A MOVED slot (resharding) fails that one call and makes
		// the client reload the slot map for the next.
		opts.MaxRedirects = -1
		return redis.NewClusterClient(opts), nil
	}
	return nil, modeError(mode)
}

// Validate reports whether url can be used in mode with t's files,
// without connecting: what NewUniversal would refuse. An error about the
// files wraps ErrTLS.
func Validate(url, mode string, t TLS) error {
	var cfg **tls.Config
	switch mode {
	case "", Standalone:
		o, err := parseStandalone(url)
		if err != nil {
			return err
		}
		cfg = &o.TLSConfig
	case Sentinel:
		o, err := parseSentinel(url)
		if err != nil {
			return err
		}
		cfg = &o.TLSConfig
	case Cluster:
		o, err := parseCluster(url)
		if err != nil {
			return err
		}
		cfg = &o.TLSConfig
	default:
		return modeError(mode)
	}
	return t.apply(cfg)
}

// Addrs returns the addresses url names in mode, for logs: the server (or
// socket), the sentinels, or the cluster's seed nodes; no credentials. It
// returns nil for a url that Validate refuses.
func Addrs(url, mode string) []string {
	switch mode {
	case "", Standalone:
		if o, err := parseStandalone(url); err == nil {
			return []string{o.Addr}
		}
	case Sentinel:
		if o, err := parseSentinel(url); err == nil {
			return o.SentinelAddrs
		}
	case Cluster:
		if o, err := parseCluster(url); err == nil {
			return o.Addrs
		}
	}
	return nil
}

// fields points at the options that every mode's client has (go-redis has
// one options type per mode), so that tune sets them in one place.
type fields struct {
	dial, read, write, pool *time.Duration
	contextTimeout          *bool
	maxRetries, dialRetries *int
	minBackoff, maxBackoff  *time.Duration
	poolSize                *int
	name                    *string
	tlsConfig               **tls.Config
}

// tune sets what every mode shares: timeout on every dial, read, write and
// wait for a pooled connection, context deadlines honoured, no retries (-1
// in go-redis: see NewUniversal), one dial attempt per connection, the pool
// size, the client name and t's TLS files.
//
// go-redis dials five times, 100ms apart, by default: against a stopped
// Redis each call would then wait 400ms, past any decision's budget,
// instead of failing at once with "connection refused".
func tune(f fields, t TLS, timeout time.Duration, poolSize int) error {
	*f.dial, *f.read, *f.write, *f.pool = timeout, timeout, timeout, timeout
	*f.contextTimeout = true
	*f.maxRetries, *f.minBackoff, *f.maxBackoff = -1, time.Millisecond, 10*time.Millisecond
	*f.dialRetries = 1
	*f.poolSize = poolSize
	*f.name = "joingate"
	return t.apply(f.tlsConfig)
}

func modeError(mode string) error {
	return fmt.Errorf("%w %q: want one of %s", ErrMode, mode, strings.Join(Modes, ", "))
}

func parseStandalone(raw string) (*redis.Options, error) {
	opts, err := redis.ParseURL(raw)
	if err != nil {
		if u, perr := url.Parse(raw); perr == nil && (u.Query().Has("master_name") || u.Query().Has("addr")) {
			err = fmt.Errorf("%w (a URL for redis.mode sentinel or cluster?)", err)
		}
		return nil, urlError(Standalone, raw, err)
	}
	return opts, nil
}

func parseSentinel(raw string) (*redis.FailoverOptions, error) {
	opts, err := redis.ParseFailoverURL(raw)
	if err != nil {
		return nil, urlError(Sentinel, raw, err)
	}
	switch {
	case opts.MasterName == "":
		err = errors.New("needs master_name=<name> (the name the sentinels monitor)")
	case opts.RouteByLatency, opts.RouteRandomly, opts.ReplicaOnly:
		// go-redis panics on the first two; a replica cannot run the
		// limiter's scripts, which write.
		err = errors.New("route_by_latency, route_randomly and replica_only are not supported: every decision writes to the master")
	}
	if err != nil {
		return nil, urlError(Sentinel, raw, err)
	}
	return opts, nil
}

func parseCluster(raw string) (*redis.ClusterOptions, error) {
	opts, err := redis.ParseClusterURL(raw)
	if err != nil {
		return nil, urlError(Cluster, raw, err)
	}
	// ParseClusterURL ignores a path; Redis Cluster has database 0 only.
	if u, _ := url.Parse(raw); u != nil && strings.Trim(u.Path, "/") != "" && strings.Trim(u.Path, "/") != "0" {
		err = fmt.Errorf("database %q: redis cluster has database 0 only", strings.Trim(u.Path, "/"))
	} else if opts.ReadOnly || opts.RouteByLatency || opts.RouteRandomly {
		err = errors.New("read_only, route_by_latency and route_randomly are not supported: every decision writes to the masters")
	}
	if err != nil {
		return nil, urlError(Cluster, raw, err)
	}
	return opts, nil
}

// urlError names the mode and keeps the secrets of raw out of the
// message: url.Parse errors quote the whole URL.
func urlError(mode, raw string, err error) error {
	return fmt.Errorf("redis url for mode %s: %s", mode, redact.Secrets(err.Error(), raw))
}
