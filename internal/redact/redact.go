// Package redact strips credentials from text before it reaches a log line,
// an API response or the preflight report.
package redact

import (
	"regexp"
	"strings"
)

// userinfo matches "scheme://user[:pass]@" so the user part can be dropped.
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#]*@`)

// URL removes user:pass@ from every URL inside s.
func URL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfo.ReplaceAllString(s, "$1")
}

// Secrets replaces each non-empty secret inside s with "[redacted]".
func Secrets(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}
