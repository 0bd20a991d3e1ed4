// Package auth holds the checks every surface shares: which browser origins
// may open a WebSocket or call the API.
package auth

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// AllowOrigin implements the spec's origin rule: no Origin (a non-browser
// client) is fine; a browser must come from this very origin, a loopback
// origin on the same port (localhost vs 127.0.0.1), or a configured one.
func AllowOrigin(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimRight(a, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	oHost, oPort := splitHostPort(u.Host, defaultPort(u.Scheme))
	rScheme := requestScheme(r)
	rHost, rPort := splitHostPort(r.Host, defaultPort(rScheme))
	if strings.EqualFold(oHost, rHost) && oPort == rPort {
		return true
	}
	// Loopback aliases of the same server: the port is what identifies it.
	return isLoopback(oHost) && isLoopback(rHost) && oPort == rPort
}

func defaultPort(scheme string) string {
	if scheme == "https" || scheme == "wss" {
		return "443"
	}
	return "80"
}

func splitHostPort(hostport, def string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return strings.Trim(h, "[]"), p
	}
	return strings.Trim(hostport, "[]"), def
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// requestScheme is the scheme the browser used: https when this server
// terminates TLS, or when a TLS-terminating proxy in front says so
// (X-Forwarded-Proto, or proto= in Forwarded). Trusting these headers here is
// safe: a page on another origin cannot set them on a WebSocket upgrade, and
// a fetch with them needs a CORS preflight this server never grants.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if p, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(p), "https") {
		return "https"
	}
	for _, part := range strings.Split(r.Header.Get("Forwarded"), ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && strings.EqualFold(k, "proto") {
			if first, _, _ := strings.Cut(v, ","); strings.EqualFold(strings.Trim(first, `" `), "https") {
				return "https"
			}
		}
	}
	return "http"
}
