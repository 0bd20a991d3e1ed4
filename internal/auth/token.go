package auth

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// RequestToken is the token a request carries in "Authorization: Bearer
// <t>" (scheme case-insensitive) or "X-Icey-Token: <t>". Every surface (the
// ops API, WHEP/WHIP, /metrics, the Symple upgrade) reads it here.
func RequestToken(r *http.Request) string {
	if v := r.Header.Get("Authorization"); v != "" {
		if scheme, t, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(t)
		}
	}
	return strings.TrimSpace(r.Header.Get("X-Icey-Token"))
}

// QueryToken is RequestToken, or else `?token=`: for requests a browser
// cannot put headers on (WebSocket upgrades, <video> sources).
func QueryToken(r *http.Request) string {
	if t := RequestToken(r); t != "" {
		return t
	}
	return r.URL.Query().Get("token")
}

// TokenOK compares in constant time (the length check leaks only the
// length). An empty want never matches: callers decide what "no token
// configured" means.
func TokenOK(want, got string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}
