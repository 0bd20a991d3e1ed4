package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The client address decides: loopback clients scrape without a token, other
// hosts need the bearer token (403 with a reason when none is configured).
func TestMetricsAuthByClientAddress(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("icey_up 1\n")) })
	cases := []struct {
		token, remote, auth string
		want                int
	}{
		{"", "127.0.0.1:40000", "", 200},
		{"", "[::1]:40000", "", 200},
		{"", "[::ffff:127.0.0.1]:40000", "", 200},
		{"", "198.18.0.7:40000", "", 403},
		{"", "[2001:db8::1]:40000", "", 403},
		{"tok", "198.18.0.7:40000", "", 401},
		{"tok", "198.18.0.7:40000", "Bearer nope", 401},
		{"tok", "198.18.0.7:40000", "bearer tok", 200},
		{"tok", "127.0.0.1:40000", "", 401}, // a configured token applies to everyone
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.RemoteAddr = c.remote
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		metricsAuth(c.token, ok).ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("token %q from %s auth %q: %d, want %d (%s)", c.token, c.remote, c.auth, w.Code, c.want, w.Body)
		}
		if w.Code == 403 && !strings.Contains(w.Body.String(), "metrics.bearerToken") {
			t.Errorf("403 without the way out: %s", w.Body)
		}
	}
}
