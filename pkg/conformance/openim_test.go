package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openimsdk/open-im-server/v3/pkg/callbackstruct"
	"github.com/openimsdk/open-im-server/v3/pkg/common/config"
	"github.com/openimsdk/open-im-server/v3/pkg/common/servererrs"
	"github.com/openimsdk/open-im-server/v3/pkg/common/storage/model"
	"github.com/openimsdk/open-im-server/v3/pkg/common/webhook"
	"github.com/openimsdk/protocol/constant"
	"github.com/openimsdk/protocol/sdkws"
	"github.com/openimsdk/tools/errs"
	"github.com/openimsdk/tools/mcontext"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/testenv"
)

// imserver is IMServer's side of the webhook: open-im-server v3.8.3's own
// client, built as its group service builds it (webhook.NewWebhookClient
// sets up the HTTP transport), and its before-callback configuration.
type imserver struct {
	client *webhook.Client
	before *config.BeforeConfig
	seq    atomic.Int64
}

func newIMServer(base string) *imserver {
	// Timeout is whole seconds, as in IMServer's webhooks.yml.
	return &imserver{client: webhook.NewWebhookClient(base), before: &config.BeforeConfig{Enable: true, Timeout: 5}}
}

func (s *imserver) ctx() context.Context {
	return mcontext.SetOperationID(context.Background(), fmt.Sprintf("conformance-%d", s.seq.Add(1)))
}

// apply is internal/rpc/group JoinGroup's webhook step: the request as
// group.go builds it (GroupType: string(group.GroupType)), posted as
// webhookBeforeApplyJoinGroup posts it. It returns what JoinGroup returns
// to the app: nil when the join goes on.
func (s *imserver) apply(groupID, applyID, reqMessage string) error {
	var groupType int32 = constant.WorkingGroup
	req := &callbackstruct.CallbackJoinGroupReq{
		GroupID:    groupID,
		GroupType:  string(groupType),
		ApplyID:    applyID,
		ReqMessage: reqMessage,
	}
	err := webhook.WithCondition(s.ctx(), s.before, func(ctx context.Context) error {
		req.CallbackCommand = callbackstruct.CallbackBeforeJoinGroupCommand
		resp := &callbackstruct.CallbackJoinGroupResp{}
		return s.client.SyncPost(ctx, req.GetCallbackCommand(), req, resp, s.before)
	})
	// group.go: `if err := ...; err != nil && err != servererrs.ErrCallbackContinue { return nil, err }`
	if err != nil && err != servererrs.ErrCallbackContinue {
		return err
	}
	return nil
}

// invite is internal/rpc/group InviteUserToGroup's webhook step, as
// webhookBeforeInviteUserToGroup builds and posts it (the operation ID from
// ctx). OpenIM ignores the answer's refusedMembersAccount: the invitation
// goes on or fails whole.
func (s *imserver) invite(ctx context.Context, groupID, reason string, invited ...string) error {
	err := webhook.WithCondition(ctx, s.before, func(ctx context.Context) error {
		req := &callbackstruct.CallbackBeforeInviteUserToGroupReq{
			CallbackCommand: callbackstruct.CallbackBeforeInviteJoinGroupCommand,
			OperationID:     mcontext.GetOperationID(ctx),
			GroupID:         groupID,
			Reason:          reason,
			InvitedUserIDs:  invited,
		}
		resp := &callbackstruct.CallbackBeforeInviteUserToGroupResp{}
		return s.client.SyncPost(ctx, req.GetCallbackCommand(), req, resp, s.before)
	})
	if err != nil && err != servererrs.ErrCallbackContinue {
		return err
	}
	return nil
}

// membersJoin is webhookBeforeMembersJoinGroup (internal/rpc/group
// callback.go), which creation, invitation, approval and direct join all
// call: the members as group.go builds them (MuteEndTime 0), the request,
// and the answer applied to them as OpenIM applies it, muteEndTime
// included. It returns the members as OpenIM would store them.
func (s *imserver) membersJoin(groupID string, userIDs ...string) ([]*model.GroupMember, error) {
	var members []*model.GroupMember
	for _, id := range userIDs {
		members = append(members, &model.GroupMember{GroupID: groupID, UserID: id, RoleLevel: constant.GroupOrdinaryUsers, JoinTime: time.Now(), MuteEndTime: time.UnixMilli(0)})
	}
	err := webhook.WithCondition(s.ctx(), s.before, func(ctx context.Context) error {
		byID := map[string]*model.GroupMember{}
		var list []*callbackstruct.CallbackGroupMember
		for _, m := range members {
			byID[m.UserID] = m
			list = append(list, &callbackstruct.CallbackGroupMember{UserID: m.UserID, Ex: m.Ex})
		}
		req := &callbackstruct.CallbackBeforeMembersJoinGroupReq{
			CallbackCommand: callbackstruct.CallbackBeforeMembersJoinGroupCommand,
			GroupID:         groupID,
			MembersList:     list,
		}
		resp := &callbackstruct.CallbackBeforeMembersJoinGroupResp{}
		if err := s.client.SyncPost(ctx, req.GetCallbackCommand(), req, resp, s.before); err != nil {
			return err
		}
		for _, r := range resp.MemberCallbackList {
			if m, ok := byID[*r.UserID]; ok { // OpenIM dereferences userID unchecked
				if r.MuteEndTime != nil {
					m.MuteEndTime = time.UnixMilli(*r.MuteEndTime)
				}
				notNilReplace(&m.FaceURL, r.FaceURL)
				notNilReplace(&m.Ex, r.Ex)
				notNilReplace(&m.Nickname, r.Nickname)
				notNilReplace(&m.RoleLevel, r.RoleLevel)
			}
		}
		return nil
	})
	if err != nil && err != servererrs.ErrCallbackContinue {
		return nil, err
	}
	return members, nil
}

// notNilReplace is datautil.NotNilReplace (openimsdk/tools), which the
// group service applies the answer with; its package would bring one more
// module into this one's go.sum for four lines.
func notNilReplace[T any](dst, src *T) {
	if src != nil {
		*dst = *src
	}
}

// refusal is what the app user is shown when OpenIM refuses a join.
type refusal struct {
	code        int
	msg, detail string
}

// refusedWith reports the errs.CodeError OpenIM returned, or fails the test
// if the join went on or failed otherwise.
func refusedWith(t *testing.T, what string, err error) refusal {
	t.Helper()
	var ce errs.CodeError
	if err == nil {
		t.Fatalf("%s: OpenIM let the join through, want it refused", what)
	}
	if !errors.As(err, &ce) {
		t.Fatalf("%s: OpenIM returned %v (%T), not a refusal with a code", what, err, err)
	}
	return refusal{ce.Code(), ce.Msg(), ce.Detail()}
}

func wantRefused(t *testing.T, what string, err error, code int, msg string) refusal {
	t.Helper()
	r := refusedWith(t, what, err)
	if r.code != code || r.msg != msg {
		t.Fatalf("%s: OpenIM refused with %d %q (%q), want %d %q", what, r.code, r.msg, r.detail, code, msg)
	}
	return r
}

func wantJoined(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: OpenIM refused the join: %v", what, err)
	}
}

// policy is the joingate configuration of the conformance runs: a step of
// each kind, and a decision timeout that a slow machine does not reach.
const policy = `
admin_token: ` + adminToken + `
shutdown_timeout: 5s
gateway:
  decision_timeout: 900ms
join_group:
  allow_applicants: [vip]
  deny_applicants: [troll]
  deny_groups: [closed]
  max_message_bytes: 64
  blocked_words: [spam]
  limits:
    - name: per-applicant
      key: applicant
      limit: 3
      period: 1h
      err_code: 5009
      err_msg: "slow down"
invite_to_group:
  deny_invitees: [troll]
  max_invitees: 4
  limits:
    - {name: per-group, key: group, limit: 5, period: 1h}
member_join:
  deny_members: [troll]
  limits:
    - {name: per-group, key: group, limit: 4, period: 1h}
  probation:
    mute_for: 10m
    groups: [g-new]
`

// TestIMServerBytes pins what the rest of joingate's tests send for
// IMServer: OpenIM's client, pointed at a recorder, posts exactly
// callback.IMServerJoinGroup's bytes with these headers, to the base plus
// "/" plus the command, with no query.
func TestIMServerBytes(t *testing.T) {
	type got struct {
		target string
		header http.Header
		body   []byte
	}
	seen := make(chan got, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- got{r.RequestURI, r.Header.Clone(), body}
		io.WriteString(w, callback.AllowJSON)
	}))
	defer srv.Close()

	for _, tc := range []struct{ base, target string }{
		{srv.URL + "/callbackExample", "/callbackExample/callbackBeforeJoinGroupCommand"},
		{srv.URL + "/", "//callbackBeforeJoinGroupCommand"}, // a base ending in "/"
	} {
		im := newIMServer(tc.base)
		msg := "hi <3 & > \u2028 bad\xff"
		wantJoined(t, tc.base, im.apply("g1", "u1", msg))
		g := <-seen
		if g.target != tc.target {
			t.Errorf("base %s: IMServer posted to %q, want %q", tc.base, g.target, tc.target)
		}
		if want := callback.IMServerJoinGroup("g1", "u1", msg); string(g.body) != want {
			t.Errorf("IMServer's body\n %q\ncallback.IMServerJoinGroup\n %q", g.body, want)
		}
		// The other two ways in: the fixtures are OpenIM's bytes too.
		wantJoined(t, tc.base, im.invite(mcontext.SetOperationID(context.Background(), "op-g1"), "g1", msg, "u2", "u3"))
		if b, want := (<-seen).body, callback.IMServerInvite("g1", msg, "u2", "u3"); string(b) != want {
			t.Errorf("IMServer's invitation\n %q\ncallback.IMServerInvite\n %q", b, want)
		}
		_, err := im.membersJoin("g1", "u2", "u3")
		wantJoined(t, tc.base, err)
		if b, want := (<-seen).body, callback.IMServerMembersJoin("g1", "u2", "u3"); string(b) != want {
			t.Errorf("IMServer's members-join\n %q\ncallback.IMServerMembersJoin\n %q", b, want)
		}
		for name, want := range map[string]string{
			"Content-Type":    "application/json; charset=utf-8",
			"Accept-Encoding": "gzip",
			"Operationid":     "conformance-1",
			"User-Agent":      "Go-http-client/1.1",
		} {
			if v := g.header.Get(name); v != want {
				t.Errorf("IMServer's %s: %q, want %q", name, v, want)
			}
		}
	}
}

// TestConformance drives joingate as IMServer's group service does, in
// both shapes an operator runs: `joingate all`, and the distributed set
// as separate processes.
func TestConformance(t *testing.T) {
	for _, shape := range []struct {
		name  string
		start func(*testing.T, string) *deployment
	}{{"all", startAll}, {"distributed", startDistributed}} {
		t.Run(shape.name, func(t *testing.T) {
			t.Parallel()
			d := shape.start(t, writeConfig(t, policy))
			im := newIMServer(d.base)
			testDecisions(t, d, im)
			testEveryWayIn(t, d, im)
			testOtherCallbacks(t, im)
			testConcurrent(t, d)
			if d.nats != nil {
				testFallbacks(t, d, im)
			}
		})
	}
}

func testDecisions(t *testing.T, d *deployment, im *imserver) {
	t.Run("allow", func(t *testing.T) {
		wantJoined(t, "first application", im.apply("g1", "alice", "hello"))
	})

	t.Run("limit refusal", func(t *testing.T) {
		for i := range 3 {
			wantJoined(t, fmt.Sprintf("application %d of bob", i+1), im.apply("g1", "bob", "hi"))
		}
		r := wantRefused(t, "fourth application of bob", im.apply("g2", "bob", "hi"), 5009, "slow down")
		// errDlt tells the client when it may retry: one token per
		// 1h/3, so within 20 minutes.
		s, ok := strings.CutPrefix(r.detail, "retry in ")
		secs, err := strconv.Atoi(strings.TrimSuffix(s, "s"))
		if !ok || err != nil || secs < 1 || secs > 1200 {
			t.Fatalf("refusal detail %q, want \"retry in <1..1200>s\"", r.detail)
		}
	})

	t.Run("static deny lists", func(t *testing.T) {
		wantRefused(t, "deny-listed applicant", im.apply("g1", "troll", "hi"), 5002, "join request not allowed")
		wantRefused(t, "deny-listed group", im.apply("closed", "carol", "hi"), 5002, "join request not allowed")
	})

	t.Run("dynamic deny lists", func(t *testing.T) {
		wantJoined(t, "before the deny entry", im.apply("g1", "dave", "hi"))
		d.ctl(t, "deny", "add", "applicant", "dave")
		wantRefused(t, "dynamically denied applicant", im.apply("g1", "dave", "hi"), 5002, "join request not allowed")
		d.ctl(t, "deny", "remove", "applicant", "dave")
		wantJoined(t, "after the deny entry is removed", im.apply("g1", "dave", "hi"))

		d.ctl(t, "deny", "add", "group", "g-dyn")
		wantRefused(t, "dynamically denied group", im.apply("g-dyn", "erin", "hi"), 5002, "join request not allowed")
		d.ctl(t, "deny", "remove", "group", "g-dyn")
		wantJoined(t, "after the group entry is removed", im.apply("g-dyn", "erin", "hi"))
	})

	t.Run("allow-list", func(t *testing.T) {
		// Past the limit, into a denied group, with a blocked word: never
		// refused.
		for i := range 5 {
			wantJoined(t, fmt.Sprintf("allow-listed application %d", i+1), im.apply("closed", "vip", "spam"))
		}
	})

	t.Run("message rules", func(t *testing.T) {
		wantRefused(t, "message over 64 bytes", im.apply("g1", "frank", strings.Repeat("x", 65)), 5003, "join request message too long")
		// IMServer escapes "<" and ">": the word is still found.
		wantRefused(t, "blocked word", im.apply("g1", "grace", "<spam>"), 5004, "join request message not allowed")
		wantJoined(t, "a clean message of 64 bytes", im.apply("g1", "heidi", strings.Repeat("x", 64)))
	})

	t.Run("base URL with a trailing slash", func(t *testing.T) {
		slash := newIMServer(d.base + "/")
		wantJoined(t, "through //", slash.apply("g1", "ivan", "hi"))
		wantRefused(t, "deny-listed through //", slash.apply("g1", "troll", "hi"), 5002, "join request not allowed")
	})
}

// testEveryWayIn drives the invitation and members-join callbacks as the
// group service does: all or nothing per call, lists per command, and
// probation's muteEndTime as OpenIM stores it.
func testEveryWayIn(t *testing.T, d *deployment, im *imserver) {
	t.Run("invitation", func(t *testing.T) {
		wantJoined(t, "invitation of 3 of 5", im.invite(im.ctx(), "g-inv", "welcome", "a", "b", "c"))
		wantRefused(t, "invitation of 3 more", im.invite(im.ctx(), "g-inv", "", "d", "e", "f"), 5101, "too many invitations")
		// Refused whole, counted not at all: 2 still fit.
		wantJoined(t, "invitation of 2 more", im.invite(im.ctx(), "g-inv", "", "d", "e"))
		wantRefused(t, "too many at once", im.invite(im.ctx(), "g-inv2", "", "a", "b", "c", "d", "e"), 5102, "too many users invited at once")
		wantRefused(t, "a denied invitee", im.invite(im.ctx(), "g-inv2", "", "a", "troll"), 5100, "invitation not allowed")
		d.ctl(t, "list", "add", "invite_to_group.deny_groups", "g-inv2")
		wantRefused(t, "into a dynamically denied group", im.invite(im.ctx(), "g-inv2", "", "a"), 5100, "invitation not allowed")
		// The application door has lists of its own.
		wantJoined(t, "an application into that group", im.apply("g-inv2", "zoe", "hi"))
		d.ctl(t, "list", "remove", "invite_to_group.deny_groups", "g-inv2")
		wantJoined(t, "after the entry is removed", im.invite(im.ctx(), "g-inv2", "", "a"))
	})

	t.Run("members join", func(t *testing.T) {
		before := time.Now()
		members, err := im.membersJoin("g-new", "m1", "m2")
		wantJoined(t, "members join under probation", err)
		for _, m := range members {
			// OpenIM mutes a member while MuteEndTime is in the future.
			if !m.MuteEndTime.After(before.Add(10*time.Minute-time.Second)) || m.MuteEndTime.After(time.Now().Add(10*time.Minute)) {
				t.Fatalf("member %s: MuteEndTime %s, want 10m after %s", m.UserID, m.MuteEndTime, before)
			}
		}
		members, err = im.membersJoin("g-old", "m1")
		wantJoined(t, "members join without probation", err)
		if !members[0].MuteEndTime.Equal(time.UnixMilli(0)) {
			t.Fatalf("muted outside probation: %s", members[0].MuteEndTime)
		}
		// 2 of g-new's 4 are taken: 3 more are refused whole, 2 fit.
		_, err = im.membersJoin("g-new", "m3", "m4", "m5")
		wantRefused(t, "3 more members", err, 5201, "too many new members")
		_, err = im.membersJoin("g-new", "m3", "m4")
		wantJoined(t, "2 more members", err)
		_, err = im.membersJoin("g-old", "m9", "troll")
		wantRefused(t, "a denied member", err, 5200, "joining this group is not allowed")
		d.ctl(t, "list", "add", "member_join.deny_members", "m9")
		_, err = im.membersJoin("g-old", "m9")
		wantRefused(t, "a dynamically denied member", err, 5200, "joining this group is not allowed")
		d.ctl(t, "list", "remove", "member_join.deny_members", "m9")
		_, err = im.membersJoin("g-old", "m9")
		wantJoined(t, "after the entry is removed", err)
	})
}

// testOtherCallbacks posts every other before-callback OpenIM defines, each
// with its own request struct, and parses the answer with the matching
// response struct: joingate holds no policy for them and lets them on.
func testOtherCallbacks(t *testing.T, im *imserver) {
	str := func(s string) *string { return &s }
	cmd := func(c string) callbackstruct.CallbackCommand { return callbackstruct.CallbackCommand(c) }
	common := func(c string) callbackstruct.CommonCallbackReq {
		return callbackstruct.CommonCallbackReq{CallbackCommand: c, SendID: "u1", Content: "<b>hi</b>", SessionType: 1}
	}
	status := func(c string) callbackstruct.UserStatusBaseCallback {
		return callbackstruct.UserStatusBaseCallback{CallbackCommand: c, OperationID: "op", PlatformID: 1, Platform: "IOS"}
	}
	for _, c := range []struct {
		req  callbackstruct.CallbackReq
		resp callbackstruct.CallbackResp
	}{
		{&callbackstruct.CallbackBeforeCreateGroupReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeCreateGroupCommand), GroupInfo: &sdkws.GroupInfo{GroupID: "g9", GroupType: constant.WorkingGroup}}, &callbackstruct.CallbackBeforeCreateGroupResp{}},
		{&callbackstruct.CallbackBeforeSetGroupMemberInfoReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeSetGroupMemberInfoCommand), GroupID: "g1", UserID: "u1", Nickname: str("n")}, &callbackstruct.CallbackBeforeSetGroupMemberInfoResp{}},
		{&callbackstruct.CallbackBeforeSetGroupInfoReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeSetGroupInfoCommand), GroupID: "g1", GroupName: "name"}, &callbackstruct.CallbackBeforeSetGroupInfoResp{}},
		{&callbackstruct.CallbackBeforeSetGroupInfoExReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeSetGroupInfoExCommand), GroupID: "g1"}, &callbackstruct.CallbackBeforeSetGroupInfoExResp{}},
		{&callbackstruct.CallbackBeforeSendSingleMsgReq{CommonCallbackReq: common(callbackstruct.CallbackBeforeSendSingleMsgCommand), RecvID: "u2"}, &callbackstruct.CallbackBeforeSendSingleMsgResp{}},
		{&callbackstruct.CallbackBeforeSendGroupMsgReq{CommonCallbackReq: common(callbackstruct.CallbackBeforeSendGroupMsgCommand), GroupID: "g1"}, &callbackstruct.CallbackBeforeSendGroupMsgResp{}},
		{&callbackstruct.CallbackMsgModifyCommandReq{CommonCallbackReq: common(callbackstruct.CallbackBeforeMsgModifyCommand)}, &callbackstruct.CallbackMsgModifyCommandResp{}},
		{&callbackstruct.CallbackBeforeAddFriendReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeAddFriendCommand), FromUserID: "u1", ToUserID: "u2"}, &callbackstruct.CallbackBeforeAddFriendResp{}},
		{&callbackstruct.CallbackBeforeAddFriendAgreeReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeAddFriendAgreeCommand), FromUserID: "u1", ToUserID: "u2", HandleResult: 1}, &callbackstruct.CallbackBeforeAddFriendAgreeResp{}},
		{&callbackstruct.CallbackBeforeSetFriendRemarkReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeSetFriendRemarkCommand), OwnerUserID: "u1", FriendUserID: "u2", Remark: "r"}, &callbackstruct.CallbackBeforeSetFriendRemarkResp{}},
		{&callbackstruct.CallbackBeforeAddBlackReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeAddBlackCommand), OwnerUserID: "u1", BlackUserID: "u2"}, &callbackstruct.CallbackBeforeAddBlackResp{}},
		{&callbackstruct.CallbackBeforeImportFriendsReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeImportFriendsCommand), OwnerUserID: "u1", FriendUserIDs: []string{"u2"}}, &callbackstruct.CallbackBeforeImportFriendsResp{}},
		{&callbackstruct.CallbackBeforeUpdateUserInfoReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeUpdateUserInfoCommand), UserID: "u1", Nickname: str("n")}, &callbackstruct.CallbackBeforeUpdateUserInfoResp{}},
		{&callbackstruct.CallbackBeforeUpdateUserInfoExReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeUpdateUserInfoExCommand), UserID: "u1"}, &callbackstruct.CallbackBeforeUpdateUserInfoExResp{}},
		{&callbackstruct.CallbackBeforeUserRegisterReq{CallbackCommand: cmd(callbackstruct.CallbackBeforeUserRegisterCommand), Users: []*sdkws.UserInfo{{UserID: "u9"}}}, &callbackstruct.CallbackBeforeUserRegisterResp{}},
		{&callbackstruct.CallbackBeforePushReq{UserStatusBatchCallbackReq: callbackstruct.UserStatusBatchCallbackReq{UserStatusBaseCallback: status(callbackstruct.CallbackBeforeOfflinePushCommand), UserIDList: []string{"u2"}}, OfflinePushInfo: &sdkws.OfflinePushInfo{Title: "t"}}, &callbackstruct.CallbackBeforePushResp{}},
		{&callbackstruct.CallbackBeforePushReq{UserStatusBatchCallbackReq: callbackstruct.UserStatusBatchCallbackReq{UserStatusBaseCallback: status(callbackstruct.CallbackBeforeOnlinePushCommand), UserIDList: []string{"u2"}}}, &callbackstruct.CallbackBeforePushResp{}},
		{&callbackstruct.CallbackBeforeSuperGroupOnlinePushReq{UserStatusBaseCallback: status(callbackstruct.CallbackBeforeGroupOnlinePushCommand), GroupID: "g1"}, &callbackstruct.CallbackBeforeSuperGroupOnlinePushResp{}},
	} {
		command := c.req.GetCallbackCommand()
		if err := im.client.SyncPost(im.ctx(), command, c.req, c.resp, im.before); err != nil {
			t.Errorf("%s: OpenIM's client concluded %v, want the call to go on", command, err)
		}
	}
}

// testConcurrent runs a few seconds of concurrent applications through
// OpenIM's client (its transport as NewWebhookClient sets it up): no error
// on OpenIM's side but the limit's refusals, and every applicant admitted
// exactly as often as the limit allows.
func testConcurrent(t *testing.T, d *deployment) {
	t.Run("concurrent", func(t *testing.T) {
		im := newIMServer(d.base)
		const applicants, workers = 200, 32
		var (
			next     atomic.Int64
			mu       sync.Mutex
			admitted = map[string]int{}
			failures []string
			wg       sync.WaitGroup
		)
		stop := time.Now().Add(3 * time.Second)
		for range workers {
			wg.Go(func() {
				for time.Now().Before(stop) {
					who := fmt.Sprintf("load-%d", next.Add(1)%applicants)
					err := im.apply("g-load", who, "let me in <3")
					var ce errs.CodeError
					mu.Lock()
					switch {
					case err == nil:
						admitted[who]++
					case errors.As(err, &ce) && ce.Code() == 5009:
					default:
						failures = append(failures, err.Error())
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%d calls failed on OpenIM's side, e.g. %s", len(failures), failures[0])
		}
		if int(next.Load()) < 2*applicants*3 {
			t.Fatalf("only %d applications in 3s: too few to exhaust the limit", next.Load())
		}
		for i := range applicants {
			if who := fmt.Sprintf("load-%d", i); admitted[who] != 3 {
				t.Fatalf("%s admitted %d times, want exactly the limit, 3", who, admitted[who])
			}
		}
		t.Logf("%d applications through OpenIM's client, every applicant admitted 3 times", next.Load())
	})
}

// testFallbacks takes away what stands behind the gateway, as outages do:
// OpenIM must still see every join go on (gateway.fallback: allow), and
// the gateway must say why.
func testFallbacks(t *testing.T, d *deployment, im *imserver) {
	cause := func(c string) float64 {
		return metric(t, d.gatewayAdm, `joingate_gateway_fallbacks_total{cause="`+c+`"}`)
	}
	fallback := func(t *testing.T, what, c string) {
		t.Helper()
		before := cause(c)
		// troll is deny-listed: only a fallback lets it through.
		wantJoined(t, what, im.apply("g1", "troll", "hi"))
		if after := cause(c); after != before+1 {
			t.Fatalf("%s: fallbacks{cause=%q} %v -> %v, want one more", what, c, before, after)
		}
	}
	t.Run("worker slower than the timeout", func(t *testing.T) {
		for _, w := range d.workers {
			w.Cmd.Process.Signal(syscall.SIGSTOP)
		}
		defer func() {
			for _, w := range d.workers {
				w.Cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		fallback(t, "both workers paused", "timeout")
	})
	t.Run("no worker", func(t *testing.T) {
		for _, w := range d.workers {
			w.Cmd.Process.Kill()
			w.Wait(10 * time.Second)
		}
		// Once NATS has dropped the workers' subscriptions.
		if !testenv.Eventually(10*time.Second, func() bool {
			before := cause("no_responders")
			return im.apply("g1", "troll", "hi") == nil && cause("no_responders") == before+1
		}) {
			t.Fatal("no no_responders fallback within 10s of killing every worker")
		}
		fallback(t, "no worker", "no_responders")
	})
	t.Run("NATS down", func(t *testing.T) {
		d.nats.Cmd.Process.Kill()
		d.nats.Wait(10 * time.Second)
		if !testenv.Eventually(10*time.Second, func() bool {
			before := cause("nats_unavailable")
			return im.apply("g1", "troll", "hi") == nil && cause("nats_unavailable") == before+1
		}) {
			t.Fatal("no nats_unavailable fallback within 10s of killing nats-server")
		}
		fallback(t, "NATS down", "nats_unavailable")
	})
}

// TestBasicAuth carries the credentials the way IMServer does: user-info
// in the webhook URL, which Go's client sends as Authorization: Basic.
// With wrong or missing credentials joingate answers actionCode 1 (the
// request is not a callback it may judge), and OpenIM reads that as a
// failed callback: the join goes on, unchecked. The gateway counts and logs
// each such request, so an operator sees the misconfiguration.
func TestBasicAuth(t *testing.T) {
	d := startAll(t, writeConfig(t, strings.Replace(policy, "gateway:\n", "gateway:\n  basic_auth: {username: imserver, password: \"s3cret\"}\n", 1)))
	host := strings.TrimPrefix(d.base, "http://")
	rejected := func() float64 {
		return metric(t, d.gatewayAdm, `joingate_gateway_requests_total{command="none",outcome="rejected"}`)
	}

	right := newIMServer("http://imserver:s3cret@" + host)
	wantJoined(t, "right credentials", right.apply("g1", "alice", "hi"))
	wantRefused(t, "right credentials, deny-listed applicant", right.apply("g1", "troll", "hi"), 5002, "join request not allowed")
	if n := rejected(); n != 0 {
		t.Fatalf("requests rejected with the right credentials: %v", n)
	}

	for i, base := range []string{"http://imserver:wrong@" + host, "http://" + host} {
		im := newIMServer(base)
		wantJoined(t, base+": OpenIM reads actionCode 1 as a failed callback", im.apply("g1", "troll", "hi"))
		if n := rejected(); n != float64(i+1) {
			t.Fatalf("%s: rejected requests %v, want %d", base, n, i+1)
		}
	}
}
