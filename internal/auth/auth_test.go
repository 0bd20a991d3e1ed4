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
