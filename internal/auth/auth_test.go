package auth

import (
	"net/http/httptest"
	"testing"
)

func TestTokens(t *testing.T) {
	cases := []struct {
		hdr, val, url, want, wantQuery string
	}{
		{"Authorization", "Bearer s3cret", "/", "s3cret", "s3cret"},
		{"Authorization", "bearer  s3cret ", "/", "s3cret", "s3cret"},
		{"Authorization", "Basic czNjcmV0", "/?token=q", "", "q"},
		{"X-Icey-Token", "s3cret", "/", "s3cret", "s3cret"},
		{"", "", "/?token=q", "", "q"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", c.url, nil)
		if c.hdr != "" {
			r.Header.Set(c.hdr, c.val)
		}
		if got := RequestToken(r); got != c.want {
			t.Errorf("RequestToken(%s: %q) = %q, want %q", c.hdr, c.val, got, c.want)
		}
		if got := QueryToken(r); got != c.wantQuery {
			t.Errorf("QueryToken(%s: %q, %s) = %q, want %q", c.hdr, c.val, c.url, got, c.wantQuery)
		}
	}
	if TokenOK("", "") || TokenOK("a", "") || TokenOK("a", "b") || !TokenOK("abc", "abc") {
		t.Fatal("TokenOK")
	}
}

// Behind a TLS-terminating proxy the page's https origin matches the
// proxied plain-HTTP request when the proxy says which scheme the browser
// used; without that it does not (port 443 vs 80).
func TestOriginBehindATLSProxy(t *testing.T) {
	cases := []struct {
		hdr, val string
		ok       bool
	}{
		{"", "", false},
		{"X-Forwarded-Proto", "https", true},
		{"X-Forwarded-Proto", "https, http", true},
		{"X-Forwarded-Proto", "http", false},
		{"Forwarded", `for=192.0.2.60;proto=https;by=203.0.113.43`, true},
		{"Forwarded", `for=192.0.2.60;proto=http`, false},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "http://cam.example.com/ws", nil)
		r.Header.Set("Origin", "https://cam.example.com")
		if c.hdr != "" {
			r.Header.Set(c.hdr, c.val)
		}
		if got := AllowOrigin(r, nil); got != c.ok {
			t.Errorf("%s: %q → %v, want %v", c.hdr, c.val, got, c.ok)
		}
	}
	// The forwarded scheme does not make another host's page acceptable.
	r := httptest.NewRequest("GET", "http://cam.example.com/ws", nil)
	r.Header.Set("Origin", "https://evil.example.com")
	r.Header.Set("X-Forwarded-Proto", "https")
	if AllowOrigin(r, nil) {
		t.Fatal("another host allowed")
	}
}
