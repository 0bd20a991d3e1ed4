package redact

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestURL(t *testing.T) {
	cases := map[string]string{
		"rtsp://admin:hunter2@10.1.1.1:554/s1":            "rtsp://10.1.1.1:554/s1",
		"rtsp://cam.local/stream":                         "rtsp://cam.local/stream",
		"dial rtsp://u:p@h/x: connection refused":         "dial rtsp://h/x: connection refused",
		"a rtsp://u@h/x and rtsps://u:p%40x@h2:322/y end": "a rtsp://h/x and rtsps://h2:322/y end",
		"user@example.com no scheme":                      "user@example.com no scheme",
		"":                                                "",
		"rtsp://u:p@ss@host/x":                            "rtsp://host/x",
		`open "rtsp://u:pw@h:554"`:                        `open "rtsp://h:554"`,
		// Found by FuzzURLPassword: '\'' is valid in a password.
		"rtsp://u:it's@h/x":    "rtsp://h/x",
		"'rtsp://u:p'w@h:554'": "'rtsp://h:554'",
	}
	for in, want := range cases {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSecrets(t *testing.T) {
	got := Secrets("token=abc123 secret=zzz", "abc123", "", "zzz")
	if got != "token=[redacted] secret=[redacted]" {
		t.Fatalf("got %q", got)
	}
}

func TestPrintable(t *testing.T) {
	if got := Printable("DESCRIBE: invalid SDP: no media"); got != "DESCRIBE: invalid SDP: no media" {
		t.Errorf("clean text changed: %q", got)
	}
	if got := Printable("line: (\x10l\x88\xff)"); got != "line: (?l??)" {
		t.Errorf("got %q", got)
	}
	long := strings.Repeat("é", 1000)
	got := Printable(long)
	if len(got) > MaxText+len("… (truncated)") || !strings.HasSuffix(got, "… (truncated)") || !utf8.ValidString(got) {
		t.Errorf("long text: %d bytes, %q...", len(got), got[:20])
	}
}
