// Package config loads joingate's configuration: defaults, then one YAML
// file, then JOINGATE_* environment variables, then command-line flags, each
// overriding the one before. Unknown keys and invalid values are errors that
// name where the value came from (file and line, variable, or flag) and the
// key. Defaults are written here only (gateway and worker take theirs from
// Default), and values are parsed once, as they load, into the types the
// wiring uses.
package config

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/redisconn"
)

// Config is the whole configuration; deploy/joingate.example.yaml documents
// every key.
type Config struct {
	Listen      string `yaml:"listen"`
	AdminListen string `yaml:"admin_listen"`
	// AdminToken guards the admin API (/api/): `joingate ctl` sends it.
	// Empty disables the API.
	AdminToken string `yaml:"admin_token"`
	// AdminPprof serves /debug/pprof/ on the admin listener. Off by
	// default: it is unauthenticated and shows the process's memory.
	AdminPprof      bool          `yaml:"admin_pprof"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	ShutdownDelay   time.Duration `yaml:"shutdown_delay"`
	Log             Log           `yaml:"log"`
	NATS            NATS          `yaml:"nats"`
	Redis           Redis         `yaml:"redis"`
	Gateway         Gateway       `yaml:"gateway"`
	Worker          Worker        `yaml:"worker"`
	JoinGroup       JoinGroup     `yaml:"join_group"`
	InviteToGroup   InviteToGroup `yaml:"invite_to_group"`
	MemberJoin      MemberJoin    `yaml:"member_join"`
}

// Log configures the process's structured log.
type Log struct {
	// Level is written debug, info, warn or error.
	Level  slog.Level `yaml:"level"`
	Format string     `yaml:"format"`
}

// NATS names the message bus between gateways and workers.
type NATS struct {
	URL            string    `yaml:"url"`
	EmbeddedListen string    `yaml:"embedded_listen"`
	Subject        string    `yaml:"subject"`
	Queue          string    `yaml:"queue"`
	CredsFile      string    `yaml:"creds_file"`
	NkeySeedFile   string    `yaml:"nkey_seed_file"`
	TLS            TLSClient `yaml:"tls"`
}

// TLSClient secures a client connection: CAFile verifies the server,
// CertFile and KeyFile authenticate this client.
type TLSClient struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Redis names the limiter store.
type Redis struct {
	URL string `yaml:"url"`
	// Mode is the topology url points at: standalone, sentinel or cluster.
	Mode      string `yaml:"mode"`
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds each Redis call (dial, read, write, pool wait): the
	// worker's store budget, below gateway.decision_timeout.
	Timeout time.Duration `yaml:"timeout"`
	// TLS adds a private CA and a client certificate to a rediss:// URL.
	TLS TLSClient `yaml:"tls"`
}

// RedisTLS is r.TLS as the Redis client takes it.
func (r Redis) RedisTLS() redisconn.TLS {
	return redisconn.TLS{CAFile: r.TLS.CAFile, CertFile: r.TLS.CertFile, KeyFile: r.TLS.KeyFile}
}

// Gateway configures the callback edge.
type Gateway struct {
	DecisionTimeout time.Duration `yaml:"decision_timeout"`
	Fallback        string        `yaml:"fallback"`
	FallbackRefusal Refusal       `yaml:"fallback_refusal"`
	MaxBodyBytes    int           `yaml:"max_body_bytes"`
	ReadTimeout     time.Duration `yaml:"read_timeout"`
	IdleTimeout     time.Duration `yaml:"idle_timeout"`
	MaxConns        int           `yaml:"max_conns"`
	BasicAuth       BasicAuth     `yaml:"basic_auth"`
	// AllowCIDRs are written as CIDRs or single addresses.
	AllowCIDRs []netip.Prefix `yaml:"allow_cidrs"`
	TLS        TLS            `yaml:"tls"`
}

// FallbackBody is the gateway's answer when no decision comes in time:
// allow, or FallbackRefusal when Fallback is deny.
func (g Gateway) FallbackBody() []byte {
	if g.Fallback == Deny {
		return callback.AppendRefusal(nil, g.FallbackRefusal.ErrCode, g.FallbackRefusal.ErrMsg, "")
	}
	return []byte(callback.AllowJSON)
}

// BasicAuth are the credentials callbacks must carry when Username is set.
type BasicAuth struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// TLS names a certificate and its key; both empty: plain TCP.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Worker configures the deciders.
type Worker struct {
	Concurrency       int     `yaml:"concurrency"`
	OnStoreError      string  `yaml:"on_store_error"`
	StoreErrorRefusal Refusal `yaml:"store_error_refusal"`
	// The store's circuit breaker opens after BreakerFailures failed calls
	// in a row and lets one probe through after BreakerCooldown.
	BreakerFailures int           `yaml:"breaker_failures"`
	BreakerCooldown time.Duration `yaml:"breaker_cooldown"`
	// BatchRedis sends the decisions a worker makes at once to Redis
	// together, in one script call (not on Redis Cluster).
	BatchRedis bool `yaml:"batch_redis"`
	// RefusalMemory is how many refusals (and list keys known absent) a
	// worker keeps, to refuse again without asking Redis until GCRA would
	// admit; 0 turns it off.
	RefusalMemory int `yaml:"refusal_memory"`
}

// Refusal is what IMServer passes on to the client when joingate refuses.
type Refusal struct {
	ErrCode int    `yaml:"err_code"`
	ErrMsg  string `yaml:"err_msg"`
}

// JoinGroup is the policy for callbackBeforeJoinGroupCommand.
type JoinGroup struct {
	AllowApplicants []string `yaml:"allow_applicants"`
	DenyApplicants  []string `yaml:"deny_applicants"`
	DenyGroups      []string `yaml:"deny_groups"`
	DenyRefusal     Refusal  `yaml:"deny_refusal"`
	MaxMessageBytes int      `yaml:"max_message_bytes"`
	MessageRefusal  Refusal  `yaml:"message_refusal"`
	BlockedWords    []string `yaml:"blocked_words"`
	BlockedRefusal  Refusal  `yaml:"blocked_word_refusal"`
	Limits          []Limit  `yaml:"limits"`
	// DryRun makes every limit a shadow limit: counted and logged, never
	// refusing.
	DryRun bool `yaml:"dry_run"`
}

// InviteToGroup is the policy for callbackBeforeInviteJoinGroupCommand,
// which IMServer calls before users are invited into a group. An
// invitation of N users counts N against every limit, all or nothing.
type InviteToGroup struct {
	// AllowGroups bypass the lists and limits: every invitation into them
	// goes through, uncounted.
	AllowGroups  []string `yaml:"allow_groups"`
	DenyGroups   []string `yaml:"deny_groups"`
	DenyInvitees []string `yaml:"deny_invitees"`
	DenyRefusal  Refusal  `yaml:"deny_refusal"`
	// MaxInvitees refuses an invitation of more users at once; 0: no limit.
	MaxInvitees        int     `yaml:"max_invitees"`
	MaxInviteesRefusal Refusal `yaml:"max_invitees_refusal"`
	// Limits are keyed by group, invitee or global.
	Limits []Limit `yaml:"limits"`
	DryRun bool    `yaml:"dry_run"`
}

// MemberJoin is the policy for callbackBeforeMembersJoinGroupCommand, which
// IMServer calls whenever users are about to become members: creation with
// initial members, invitation, approval of an application, direct join. A
// call listing N members counts N against every limit, all or nothing.
type MemberJoin struct {
	AllowGroups []string `yaml:"allow_groups"`
	DenyGroups  []string `yaml:"deny_groups"`
	DenyMembers []string `yaml:"deny_members"`
	DenyRefusal Refusal  `yaml:"deny_refusal"`
	// Limits are keyed by group, member, member_group or global.
	Limits    []Limit   `yaml:"limits"`
	DryRun    bool      `yaml:"dry_run"`
	Probation Probation `yaml:"probation"`
}

// Probation mutes new members for MuteFor after they join (OpenIM's
// muteEndTime), in Groups, or in every group when Groups is empty; MuteFor
// 0 turns it off.
type Probation struct {
	MuteFor time.Duration `yaml:"mute_for"`
	Groups  []string      `yaml:"groups"`
}

// Limit is one named rate-limit rule.
type Limit struct {
	Name   string        `yaml:"name"`
	Key    string        `yaml:"key"`
	Limit  int           `yaml:"limit"`
	Period time.Duration `yaml:"period"`
	Burst  int           `yaml:"burst"`
	// Burst 0 is Limit; ErrCode 0 and ErrMsg "" are DefaultLimitErrCode
	// and DefaultLimitErrMsg (Load fills them in).
	ErrCode int    `yaml:"err_code"`
	ErrMsg  string `yaml:"err_msg"`
	Shadow  bool   `yaml:"shadow"`
}

// Limit keys: what a rule counts requests by.
const (
	KeyApplicant      = "applicant"
	KeyGroup          = "group"
	KeyApplicantGroup = "applicant_group"
	KeyGlobal         = "global"
	// invite_to_group counts each invited user; member_join each member.
	KeyInvitee     = "invitee"
	KeyMember      = "member"
	KeyMemberGroup = "member_group"
)

// Answers for gateway.fallback and worker.on_store_error.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Default returns the configuration `joingate all` runs with when nothing
// is configured: an embedded NATS server, an in-memory store, and a policy
// of at most 5 join applications per applicant per minute and 60 per group
// per minute.
func Default() Config {
	return Config{
		Listen:          ":10006",
		AdminListen:     ":9090",
		ShutdownTimeout: 15 * time.Second,
		Log:             Log{Level: slog.LevelInfo, Format: "text"},
		NATS:            NATS{Subject: "joingate", Queue: "joingate-workers"},
		Redis:           Redis{Mode: "standalone", KeyPrefix: "joingate:", Timeout: 100 * time.Millisecond},
		Gateway: Gateway{
			DecisionTimeout: 300 * time.Millisecond,
			Fallback:        Allow,
			FallbackRefusal: Refusal{ErrCode: 5000, ErrMsg: "join requests cannot be checked now, try again later"},
			MaxBodyBytes:    64 << 10,
			ReadTimeout:     5 * time.Second,
			IdleTimeout:     90 * time.Second,
			MaxConns:        100_000,
		},
		Worker: Worker{
			Concurrency:       256,
			OnStoreError:      Allow,
			StoreErrorRefusal: Refusal{ErrCode: 5000, ErrMsg: "join requests cannot be checked now, try again later"},
			BreakerFailures:   5,
			BreakerCooldown:   time.Second,
			BatchRedis:        true,
			RefusalMemory:     100_000,
		},
		JoinGroup: JoinGroup{
			DenyRefusal:    Refusal{ErrCode: 5002, ErrMsg: "join request not allowed"},
			MessageRefusal: Refusal{ErrCode: 5003, ErrMsg: "join request message too long"},
			BlockedRefusal: Refusal{ErrCode: 5004, ErrMsg: "join request message not allowed"},
			Limits: []Limit{
				{Name: "applicant-per-minute", Key: KeyApplicant, Limit: 5, Period: time.Minute, Burst: 5, ErrCode: DefaultLimitErrCode, ErrMsg: DefaultLimitErrMsg},
				{Name: "group-per-minute", Key: KeyGroup, Limit: 60, Period: time.Minute, Burst: 60, ErrCode: DefaultLimitErrCode, ErrMsg: "too many join requests for this group"},
			},
		},
		InviteToGroup: InviteToGroup{
			DenyRefusal:        Refusal{ErrCode: 5100, ErrMsg: "invitation not allowed"},
			MaxInviteesRefusal: Refusal{ErrCode: 5102, ErrMsg: "too many users invited at once"},
		},
		MemberJoin: MemberJoin{
			DenyRefusal: Refusal{ErrCode: 5200, ErrMsg: "joining this group is not allowed"},
		},
	}
}

// The refusal of an invite_to_group or member_join limit that names none.
var (
	DefaultInviteLimitRefusal = Refusal{ErrCode: 5101, ErrMsg: "too many invitations"}
	DefaultMemberLimitRefusal = Refusal{ErrCode: 5201, ErrMsg: "too many new members"}
)

// The refusal of a limit that names none.
const (
	DefaultLimitErrCode = 5001
	DefaultLimitErrMsg  = "too many join requests"
)

// ensureDefaults fills in the values whose default depends on another
// value: a limit's burst is its limit unless given, and its refusal the
// default one. Load calls it after merging every layer, before validate.
func (c *Config) ensureDefaults() {
	limitDefaults(c.JoinGroup.Limits, Refusal{ErrCode: DefaultLimitErrCode, ErrMsg: DefaultLimitErrMsg})
	limitDefaults(c.InviteToGroup.Limits, DefaultInviteLimitRefusal)
	limitDefaults(c.MemberJoin.Limits, DefaultMemberLimitRefusal)
}

func limitDefaults(limits []Limit, refusal Refusal) {
	for i := range limits {
		lim := &limits[i]
		if lim.Burst == 0 {
			lim.Burst = lim.Limit
		}
		if lim.ErrCode == 0 {
			lim.ErrCode = refusal.ErrCode
		}
		if lim.ErrMsg == "" {
			lim.ErrMsg = refusal.ErrMsg
		}
	}
}
