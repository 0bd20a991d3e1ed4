// Package fuzzhelp holds helpers shared by the fuzz tests of several
// packages (config, internal/redact, media). It is test-only code: only
// _test.go files import it.
package fuzzhelp

import (
	"net/url"
	"strings"
)

// UserinfoURL builds scheme://user:pass@rest and reports whether Go's URL
// parser reads it as a URL whose userinfo is exactly user:pass (so pass is
// a password by RFC 3986, not text that merely looks like one).
func UserinfoURL(scheme, user, pass, rest string) (string, bool) {
	if scheme == "" || strings.ContainsAny(user, ":@") {
		return "", false
	}
	// The authority of rest must not carry another '@' (the userinfo
	// would then extend past pass).
	if i := strings.IndexAny(rest, "/?#"); strings.Contains(rest[:max(i, 0)], "@") || (i < 0 && strings.Contains(rest, "@")) {
		return "", false
	}
	raw := scheme + "://" + user + ":" + pass + "@" + rest
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		return "", false
	}
	wantUser, err1 := url.PathUnescape(user)
	wantPass, err2 := url.PathUnescape(pass)
	pw, ok := u.User.Password()
	if err1 != nil || err2 != nil || !ok || u.User.Username() != wantUser || pw != wantPass {
		return "", false
	}
	return raw, true
}

// PasswordLeft reports whether redacted text out still holds pass when the
// public text (the same message without the userinfo) does not: there, pass
// is a secret that redaction missed.
func PasswordLeft(out, pass, public string) bool {
	// "[redacted]" is what redaction writes in place of secrets: its letters
	// are not a leak of a one-letter password.
	return strings.Contains(strings.ReplaceAll(out, "[redacted]", ""), pass) && !strings.Contains(public, pass)
}
