package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/redact"
	"github.com/joingate/joingate/pkg/redisconn"
)

// MaxDecisionTimeout caps gateway.decision_timeout. IMServer gives up after
// its own timeout (at least 1s) and then refuses the join, so the gateway
// must have answered well before.
const MaxDecisionTimeout = 900 * time.Millisecond

var (
	ruleName    = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	subjectPart = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// sourceOf says where key's value came from; for a group of keys
// ("redis.tls"), where the values set under it came from.
func (l *loader) sourceOf(key string) (string, bool) {
	if src, ok := l.source[key]; ok {
		return src, true
	}
	var srcs []string
	for k, src := range l.source {
		if strings.HasPrefix(k, key+".") && !slices.Contains(srcs, src) {
			srcs = append(srcs, src)
		}
	}
	slices.Sort(srcs)
	return strings.Join(srcs, ", "), len(srcs) > 0
}

// validate reports what is wrong with the merged configuration, after
// ensureDefaults; it changes nothing. Each error names the key and where
// its value came from.
func (l *loader) validate() error {
	c := &l.cfg
	var errs []error
	bad := func(key, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if src, ok := l.sourceOf(key); ok {
			errs = append(errs, fmt.Errorf("%s: %s: %s", src, key, msg))
		} else {
			errs = append(errs, fmt.Errorf("%s: %s", key, msg))
		}
	}
	addr := func(key, v string, optional bool) {
		if v == "" && optional {
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(key, "must be host:port such as :10006, got %q", v)
		}
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		bad(key, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	}
	refusal := func(key string, r *Refusal) {
		if r.ErrCode < callback.MinRefusalCode || r.ErrCode > callback.MaxRefusalCode {
			bad(key+".err_code", "must be in %d-%d (IMServer passes it to the client; 0 reads as success, under 100 as a server error), got %d",
				callback.MinRefusalCode, callback.MaxRefusalCode, r.ErrCode)
		}
		if r.ErrMsg == "" {
			bad(key+".err_msg", "must not be empty")
		}
	}

	addr("listen", c.Listen, false)
	addr("admin_listen", c.AdminListen, true)
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive, got %s", c.ShutdownTimeout)
	}
	if c.ShutdownDelay < 0 {
		bad("shutdown_delay", "must not be negative, got %s", c.ShutdownDelay)
	}
	oneOf("log.format", c.Log.Format, "text", "json")

	for _, u := range strings.Split(c.NATS.URL, ",") {
		if c.NATS.URL == "" {
			break
		}
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u // nats.go reads host:port as nats://host:port
		}
		if p, err := url.Parse(u); err != nil || p.Host == "" {
			bad("nats.url", "must be a URL such as nats://127.0.0.1:4222, got %q", redact.URL(u))
		}
	}
	addr("nats.embedded_listen", c.NATS.EmbeddedListen, true)
	for key, f := range map[string]string{"nats.creds_file": c.NATS.CredsFile, "nats.nkey_seed_file": c.NATS.NkeySeedFile, "nats.tls.ca_file": c.NATS.TLS.CAFile} {
		if _, err := os.Stat(f); f != "" && err != nil {
			bad(key, "cannot read: %v", err)
		}
	}
	if c.NATS.CredsFile != "" && c.NATS.NkeySeedFile != "" {
		bad("nats.nkey_seed_file", "use creds_file or nkey_seed_file, not both")
	}
	if (c.NATS.TLS.CertFile == "") != (c.NATS.TLS.KeyFile == "") {
		bad("nats.tls", "cert_file and key_file go together")
	} else if c.NATS.TLS.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.NATS.TLS.CertFile, c.NATS.TLS.KeyFile); err != nil {
			bad("nats.tls", "cannot load the client certificate: %v", err)
		}
	}
	for _, part := range strings.Split(c.NATS.Subject, ".") {
		if !subjectPart.MatchString(part) {
			bad("nats.subject", "must be dot-separated tokens of letters, digits, '_' and '-', got %q", c.NATS.Subject)
			break
		}
	}
	if !subjectPart.MatchString(c.NATS.Queue) {
		bad("nats.queue", "must be letters, digits, '_' and '-', got %q", c.NATS.Queue)
	}

	oneOf("redis.mode", c.Redis.Mode, redisconn.Modes...)
	if c.Redis.URL != "" && slices.Contains(redisconn.Modes, c.Redis.Mode) {
		// The URL's form depends on the mode (sentinel and cluster URLs list
		// more nodes in addr= options).
		switch err := redisconn.Validate(c.Redis.URL, c.Redis.Mode, c.Redis.RedisTLS()); {
		case errors.Is(err, redisconn.ErrTLS):
			bad("redis.tls", "%v", err)
		case err != nil:
			bad("redis.url", "%s", redact.Secrets(err.Error(), c.Redis.URL))
		}
	} else if c.Redis.URL == "" && c.Redis.TLS != (TLSClient{}) {
		bad("redis.tls", "needs a rediss:// redis.url (without one, limits are kept in process memory)")
	}
	if strings.ContainsAny(c.Redis.KeyPrefix, "{}") {
		bad("redis.key_prefix", "must not contain { or } (joingate uses Redis Cluster hash tags), got %q", c.Redis.KeyPrefix)
	}
	if c.Redis.Timeout <= 0 {
		bad("redis.timeout", "must be positive, got %s", c.Redis.Timeout)
	}

	g := &c.Gateway
	if g.DecisionTimeout < time.Millisecond || g.DecisionTimeout > MaxDecisionTimeout {
		bad("gateway.decision_timeout", "must be between 1ms and %s (IMServer refuses the join when it times out), got %s", MaxDecisionTimeout, g.DecisionTimeout)
	}
	if c.Redis.Timeout > 0 && c.Redis.Timeout >= g.DecisionTimeout {
		bad("redis.timeout", "must be below gateway.decision_timeout (%s): it is the worker's budget for one store call, "+
			"whose answer must reach the gateway while it still waits; got %s", g.DecisionTimeout, c.Redis.Timeout)
	}
	oneOf("gateway.fallback", g.Fallback, Allow, Deny)
	refusal("gateway.fallback_refusal", &g.FallbackRefusal)
	// A callback travels as one NATS message (max_payload 1 MiB by default).
	if g.MaxBodyBytes < 1024 || g.MaxBodyBytes > 1<<20-4096 {
		bad("gateway.max_body_bytes", "must be between 1024 and 1044480 (NATS's 1 MiB message limit less headers), got %d", g.MaxBodyBytes)
	}
	if g.ReadTimeout <= 0 {
		bad("gateway.read_timeout", "must be positive, got %s", g.ReadTimeout)
	}
	if g.IdleTimeout <= 0 {
		bad("gateway.idle_timeout", "must be positive, got %s", g.IdleTimeout)
	}
	if g.BasicAuth.Password != "" && g.BasicAuth.Username == "" {
		bad("gateway.basic_auth.username", "must be set when basic_auth.password is")
	}
	if (g.TLS.CertFile == "") != (g.TLS.KeyFile == "") {
		bad("gateway.tls", "cert_file and key_file go together")
	} else if g.TLS.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(g.TLS.CertFile, g.TLS.KeyFile); err != nil {
			bad("gateway.tls", "cannot load the certificate: %v", err)
		}
	}
	if g.MaxConns < 1 {
		bad("gateway.max_conns", "must be at least 1, got %d", g.MaxConns)
	}

	w := &c.Worker
	if w.Concurrency < 1 || w.Concurrency > 65536 {
		bad("worker.concurrency", "must be between 1 and 65536, got %d", w.Concurrency)
	}
	oneOf("worker.on_store_error", w.OnStoreError, Allow, Deny)
	refusal("worker.store_error_refusal", &w.StoreErrorRefusal)
	if w.RefusalMemory < 0 {
		bad("worker.refusal_memory", "must be 0 (off) or a number of entries, got %d", w.RefusalMemory)
	}
	if w.BreakerFailures < 1 {
		bad("worker.breaker_failures", "must be at least 1, got %d", w.BreakerFailures)
	}
	if w.BreakerCooldown < time.Millisecond {
		bad("worker.breaker_cooldown", "must be at least 1ms, got %s", w.BreakerCooldown)
	}

	j := &c.JoinGroup
	refusal("join_group.deny_refusal", &j.DenyRefusal)
	refusal("join_group.message_refusal", &j.MessageRefusal)
	refusal("join_group.blocked_word_refusal", &j.BlockedRefusal)
	if j.MaxMessageBytes < 0 {
		bad("join_group.max_message_bytes", "must be 0 (no limit) or positive, got %d", j.MaxMessageBytes)
	}
	for i, word := range j.BlockedWords {
		if strings.TrimSpace(word) == "" {
			bad(fmt.Sprintf("join_group.blocked_words[%d]", i), "must not be empty")
		}
	}
	limits := func(section string, list []Limit, kinds ...string) {
		names := make(map[string]bool)
		for i := range list {
			lim := &list[i]
			key := fmt.Sprintf("%s.limits[%d]", section, i)
			if !ruleName.MatchString(lim.Name) {
				bad(key+".name", "must be 1-64 letters, digits, '_', '.' or '-', got %q", lim.Name)
			} else if names[lim.Name] {
				bad(key+".name", "%q is used by another limit", lim.Name)
			}
			names[lim.Name] = true
			oneOf(key+".key", lim.Key, kinds...)
			if lim.Limit < 1 {
				bad(key+".limit", "must be at least 1, got %d", lim.Limit)
			}
			if lim.Period < time.Millisecond {
				bad(key+".period", "must be at least 1ms, got %s", lim.Period)
			} else if lim.Limit > 0 && lim.Period/time.Duration(lim.Limit) < time.Microsecond {
				bad(key+".limit", "%d per %s is finer than one request per microsecond", lim.Limit, lim.Period)
			}
			if lim.Burst < 0 {
				bad(key+".burst", "must be positive (or 0 for the limit), got %d", lim.Burst)
			}
			refusal(key, &Refusal{ErrCode: lim.ErrCode, ErrMsg: lim.ErrMsg})
		}
	}
	limits("join_group", j.Limits, KeyApplicant, KeyGroup, KeyApplicantGroup, KeyGlobal)

	inv := &c.InviteToGroup
	refusal("invite_to_group.deny_refusal", &inv.DenyRefusal)
	refusal("invite_to_group.max_invitees_refusal", &inv.MaxInviteesRefusal)
	if inv.MaxInvitees < 0 {
		bad("invite_to_group.max_invitees", "must be 0 (no limit) or positive, got %d", inv.MaxInvitees)
	}
	limits("invite_to_group", inv.Limits, KeyGroup, KeyInvitee, KeyGlobal)

	mj := &c.MemberJoin
	refusal("member_join.deny_refusal", &mj.DenyRefusal)
	limits("member_join", mj.Limits, KeyGroup, KeyMember, KeyMemberGroup, KeyGlobal)
	if mj.Probation.MuteFor < 0 || mj.Probation.MuteFor > 0 && mj.Probation.MuteFor < time.Second {
		bad("member_join.probation.mute_for", "must be 0 (off) or at least 1s, got %s", mj.Probation.MuteFor)
	}
	if mj.Probation.MuteFor == 0 && len(mj.Probation.Groups) > 0 {
		bad("member_join.probation.groups", "set, but member_join.probation.mute_for is 0: nobody would be muted")
	}
	return errors.Join(errs...)
}
