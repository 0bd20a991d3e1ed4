// Package redact strips credentials from text before it reaches a log line,
// an API response or the preflight report.
package redact

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// URL removes the userinfo (user:pass@) of every URL inside s:
// `dial rtsp://admin:secret@10.0.0.5/live: timeout` becomes
// `dial rtsp://10.0.0.5/live: timeout`. A password containing a raw '@'
// is removed whole (the authority ends at the last '@' before '/').
func URL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		// The authority ends at the path, query, fragment, whitespace or a
		// delimiter typical of quoting in messages. Not at '\'': RFC 3986
		// allows it in a password (a quote closing 'scheme://u:p@host' is
		// after the '@' anyway).
		end := strings.IndexFunc(s, func(r rune) bool {
			switch r {
			case '/', '?', '#', ' ', '\t', '\n', '\r', '"', '<', '>', '`':
				return true
			}
			return false
		})
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndexByte(s[:end], '@'); at >= 0 {
			s = s[at+1:]
		}
	}
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

// MaxText bounds a text from a peer (an error naming what a camera sent)
// once Printable has made it safe for logs and the API.
const MaxText = 300

// Printable makes a text that may quote bytes from a peer safe to log and
// to show: invalid UTF-8 and non-printable characters become '?', and a
// text longer than MaxText bytes is cut at a character boundary and ends
// with "… (truncated)". Printable text within the bound is unchanged.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean && len(s) <= MaxText {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > MaxText {
			b.WriteString("… (truncated)")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
