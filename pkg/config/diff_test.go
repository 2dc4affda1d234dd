package config

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestDiff(t *testing.T) {
	old := Default()
	old.JoinGroup.Limits = append(old.JoinGroup.Limits, Limit{Name: "extra", Key: KeyGlobal, Limit: 9, Period: time.Second, Burst: 9})
	cur := Default()
	cur.JoinGroup.Limits[0].Limit++
	cur.JoinGroup.DenyApplicants = []string{"mallory"}
	cur.Redis.URL = "redis://:secret@127.0.0.1:6379"
	cur.Worker.StoreErrorRefusal.ErrMsg = "later"
	cur.Gateway.DecisionTimeout += time.Millisecond
	cur.Gateway.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}

	got := Diff(old, cur)
	want := []string{"redis.url", "gateway.decision_timeout", "gateway.allow_cidrs", "worker.store_error_refusal.err_msg",
		"join_group.deny_applicants", "join_group.limits[0].limit", "join_group.limits[2]"}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff = %q, want %q", got, want)
	}
	if d := Diff(old, old); len(d) != 0 {
		t.Fatalf("Diff of a configuration with itself = %q", d)
	}
	var reloadable []string
	for _, k := range got {
		if Reloadable(k) {
			reloadable = append(reloadable, k)
		}
	}
	if want := want[3:]; !slices.Equal(reloadable, want) {
		t.Fatalf("reloadable %q, want %q", reloadable, want)
	}
	if Reloadable("worker.concurrency") || Reloadable("join_groupx") {
		t.Fatal("a key outside the policy is reloadable")
	}
}
