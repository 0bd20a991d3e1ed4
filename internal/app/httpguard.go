package app

import (
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds on what one HTTP request may cost before a handler runs.
const (
	// maxHeaderBytes bounds request headers (net/http's default is 1 MiB).
	maxHeaderBytes = 32 << 10
	// bodyReadTimeout bounds reading a request body (an SDP offer, a
	// trickle fragment): a client that sends it a byte at a time is cut off
	// and its goroutine freed. Streaming responses (SSE, WebSockets) are not
	// affected: they have no request body.
	bodyReadTimeout = BodyReadTimeout
)

// BodyReadTimeout bounds reading a request body (tests check the bound).
const (
	BodyReadTimeout = 10 * time.Second
)

// guardRequests refuses malformed request paths with 400 (rather than a
// file-system error turning into 500) and puts a deadline on reading
// request bodies.
func guardRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cleanPath(r.URL.Path) {
			http.Error(w, "malformed request path", http.StatusBadRequest)
			return
		}
		if r.Body != nil && r.Body != http.NoBody && !isUpgrade(r) {
			// Best effort: a writer that cannot set deadlines (tests) is fine.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath: valid UTF-8 without NUL or other control characters (what
// `%00` or an overlong `%c0%ae` decode to).
func cleanPath(p string) bool {
	if !utf8.ValidString(p) {
		return false
	}
	return !strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
