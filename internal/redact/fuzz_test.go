package redact

import (
	"strings"
	"testing"

	"github.com/icey/icey-server/internal/fuzzhelp"
)

// FuzzURLPassword: a URL with a password, anywhere in a message, leaves
// URL with no trace of the password (unless the password's text also
// occurs in the rest of the message, where it is not a secret).
func FuzzURLPassword(f *testing.F) {
	f.Add("dial ", "rtsp", "admin", "hunter2", "10.0.0.5:554/live", ": timeout")
	f.Add(`open "`, "rtsps", "u", "p%40ss", "cam.local", `"`)
	f.Add("", "rtsp", "u", "p@ss@word", "h/x", "")
	f.Add("a rtsp://x@y/z and ", "http", "", "tok", "[::1]:80?q=1#f", " end")
	f.Add("<", "rtmp", "a", "b:c", "h:1935/app", ">")
	f.Fuzz(func(t *testing.T, prefix, scheme, user, pass, rest, suffix string) {
		raw, ok := fuzzhelp.UserinfoURL(scheme, user, pass, rest)
		if !ok || pass == "" {
			return
		}
		in := prefix + raw + suffix
		out := URL(in)
		if fuzzhelp.PasswordLeft(out, pass, prefix+scheme+"://"+rest+suffix) {
			t.Fatalf("URL(%q) = %q still contains the password %q", in, out, pass)
		}
		// A bare URL keeps everything but its userinfo.
		if prefix == "" && suffix == "" {
			// After the userinfo, rest is redacted on its own.
			if want := scheme + "://" + URL(rest); URL(raw) != want {
				t.Fatalf("URL(%q) = %q, want %q", raw, URL(raw), want)
			}
		}
	})
}

// FuzzURL: for any text, URL only deletes (userinfo runs ending in '@'),
// changes nothing without "://" and '@', and is idempotent.
func FuzzURL(f *testing.F) {
	for _, s := range []string{
		"rtsp://admin:hunter2@10.1.1.1:554/s1",
		"dial rtsp://u:p@h/x: connection refused",
		"a rtsp://u@h/x and rtsps://u:p%40x@h2:322/y end",
		"user@example.com no scheme",
		"rtsp://u:p@ss@host/x",
		`open "rtsp://u:pw@h:554"`,
		"x://@://u@h",
		"://@",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := URL(s)
		if !strings.Contains(s, "@") || !strings.Contains(s, "://") {
			if out != s {
				t.Fatalf("URL(%q) = %q: changed text without userinfo", s, out)
			}
			return
		}
		if !isSubsequence(out, s) {
			t.Fatalf("URL(%q) = %q: not the input with parts deleted", s, out)
		}
		if again := URL(out); again != out {
			t.Fatalf("not idempotent: URL(%q) = %q, URL of that = %q", s, out, again)
		}
	})
}

// FuzzSecrets: no secret survives in text that came from the input. The
// output is recomputed with each byte tagged by where it came from (input
// or an inserted "[redacted]"); every occurrence of a secret in the output
// must use some inserted byte. (A later secret may cut an earlier marker,
// so secrets made of marker letters can re-form from its pieces: that
// reveals nothing.)
func FuzzSecrets(f *testing.F) {
	f.Add("token=abc123 secret=zzz", "abc123", "zzz", "")
	f.Add("aaa", "aa", "a", "")
	f.Add("Qz", "d]z", "Q", "x")
	f.Fuzz(func(t *testing.T, s, a, b, c string) {
		out := Secrets(s, a, b, c)
		text, orig := s, make([]bool, len(s))
		for i := range orig {
			orig[i] = true
		}
		for _, sec := range []string{a, b, c} {
			text, orig = replaceTagged(text, orig, sec)
		}
		if text != out {
			t.Fatalf("Secrets(%q, %q, %q, %q) = %q, want %q", s, a, b, c, out, text)
		}
		for _, sec := range []string{a, b, c} {
			if sec == "" {
				continue
			}
			for i := 0; ; i++ {
				j := strings.Index(out[i:], sec)
				if j < 0 {
					break
				}
				i += j
				fromInput := true
				for k := i; k < i+len(sec); k++ {
					fromInput = fromInput && orig[k]
				}
				if fromInput {
					t.Fatalf("Secrets(%q, %q, %q, %q) = %q: %q left at %d", s, a, b, c, out, sec, i)
				}
			}
		}
	})
}

// replaceTagged is strings.ReplaceAll(s, old, "[redacted]") that carries
// along, per byte, whether it came from the input.
func replaceTagged(s string, orig []bool, old string) (string, []bool) {
	if old == "" {
		return s, orig
	}
	const marker = "[redacted]"
	var b strings.Builder
	var tags []bool
	for {
		i := strings.Index(s, old)
		if i < 0 {
			b.WriteString(s)
			tags = append(tags, orig...)
			return b.String(), tags
		}
		b.WriteString(s[:i])
		tags = append(tags, orig[:i]...)
		b.WriteString(marker)
		for range len(marker) {
			tags = append(tags, false)
		}
		s, orig = s[i+len(old):], orig[i+len(old):]
	}
}

func isSubsequence(sub, s string) bool {
	i := 0
	for j := 0; j < len(s) && i < len(sub); j++ {
		if s[j] == sub[i] {
			i++
		}
	}
	return i == len(sub)
}
