package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Diff names the keys whose values differ between two configurations, as
// they are written in the file ("join_group.limits[0].limit",
// "join_group.deny_applicants"), so that a reload can say what it changed.
// A list of scalars is one key; a list of sections is compared element by
// element, and an element only one side has is named whole. Values are
// never part of the answer: some are secrets.
func Diff(old, cur Config) []string {
	var keys []string
	diff(reflect.ValueOf(old), reflect.ValueOf(cur), "", &keys)
	return keys
}

func diff(a, b reflect.Value, key string, keys *[]string) {
	switch {
	case section(a.Type()):
		for i := range a.NumField() {
			name, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			if key != "" {
				name = key + "." + name
			}
			diff(a.Field(i), b.Field(i), name, keys)
		}
	case a.Kind() == reflect.Slice:
		if !section(a.Type().Elem()) {
			if !reflect.DeepEqual(a.Interface(), b.Interface()) {
				*keys = append(*keys, key)
			}
			return
		}
		for i := range max(a.Len(), b.Len()) {
			elem := fmt.Sprintf("%s[%d]", key, i)
			if i >= a.Len() || i >= b.Len() {
				*keys = append(*keys, elem)
				continue
			}
			diff(a.Index(i), b.Index(i), elem, keys)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*keys = append(*keys, key)
		}
	}
}

// section reports whether t is a section of the file (a struct of keys),
// rather than a value (netip.Prefix, time.Duration) compared whole.
func section(t reflect.Type) bool {
	if t.Kind() != reflect.Struct {
		return false
	}
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("yaml") != "" {
			return true
		}
	}
	return false
}

// Reloadable reports whether a key of Diff takes effect on a reload: the
// policies do (join_group, invite_to_group, member_join, and what the
// worker answers when its store fails); everything else waits for a
// restart.
func Reloadable(key string) bool {
	for _, p := range []string{"join_group", "invite_to_group", "member_join", "worker.on_store_error", "worker.store_error_refusal"} {
		if key == p || strings.HasPrefix(key, p+".") || strings.HasPrefix(key, p+"[") {
			return true
		}
	}
	return false
}
