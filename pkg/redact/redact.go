// Package redact keeps the secrets of connection URLs (a password, a
// token in the user-info, a password= option) out of logs and error
// messages. It works on text, not on parsed URLs: a URL that does not
// parse is quoted whole by url.Parse's own errors, and must be hidden too.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces each secret.
const Mask = "xxxxx"

var (
	userInfo = regexp.MustCompile(`://([^/@\s,]+)@`)
	password = regexp.MustCompile(`([?&]password=)([^&\s,]+)`)
)

// URL returns raw (one URL, or a comma-separated list) with every
// user-info and password= option replaced by Mask.
func URL(raw string) string {
	raw = userInfo.ReplaceAllString(raw, "://"+Mask+"@")
	return password.ReplaceAllString(raw, "${1}"+Mask)
}

// Secrets returns msg with every secret of raw replaced by Mask: the
// user-info's password (or, without one, the user-info itself: a token)
// and password= options, escaped or not.
func Secrets(msg, raw string) string {
	var secrets []string
	for _, m := range userInfo.FindAllStringSubmatch(raw, -1) {
		if _, pw, ok := strings.Cut(m[1], ":"); ok {
			secrets = append(secrets, pw)
		} else {
			secrets = append(secrets, m[1])
		}
	}
	for _, m := range password.FindAllStringSubmatch(raw, -1) {
		secrets = append(secrets, m[2])
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, s, Mask)
		if u, err := url.QueryUnescape(s); err == nil && u != s && u != "" {
			msg = strings.ReplaceAll(msg, u, Mask)
		}
	}
	return msg
}
