package redact

import (
	"net/url"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://:s3cret@host:6379/0":                    "redis://xxxxx@host:6379/0",
		"rediss://user:s3cret@host:6380":                 "rediss://xxxxx@host:6380",
		"nats://tok3n@n1:4222,nats://u:s3cret@n2:4222":   "nats://xxxxx@n1:4222,nats://xxxxx@n2:4222",
		"redis://s1:26379?master_name=m&password=s3cret": "redis://s1:26379?master_name=m&password=xxxxx",
		"redis://host:6379":                              "redis://host:6379",
		"http://user:s3cret@host%zz":                     "http://xxxxx@host%zz", // does not parse
	} {
		if got := URL(raw); got != want {
			t.Errorf("URL(%q) = %q, want %q", raw, got, want)
		}
	}
}

// Secrets hides what raw holds in the messages that quote it, url.Parse's
// own included.
func TestSecrets(t *testing.T) {
	for _, raw := range []string{
		"http://user:s3cret@host%zz",
		"nats://s3cret@host:4222",
		"redis://h?password=s3cret%21&x=1",
	} {
		_, err := url.Parse(raw)
		msg := "connect " + raw
		if err != nil {
			msg = err.Error()
		}
		msg += " (s3cret!)"
		got := Secrets(msg, raw)
		if strings.Contains(got, "s3cret") {
			t.Errorf("Secrets(%q) = %q: the secret is still there", raw, got)
		}
	}
	if got := Secrets("dial host: refused", "redis://host:6379"); got != "dial host: refused" {
		t.Errorf("a message without secrets changed: %q", got)
	}
}
