package logging

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestScrubsSecretsAndURLCredentials(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		l := New(&buf, slog.LevelDebug, format, []string{"s3cr3t-token", ""})
		l = Module(l, "test").With("src", "rtsp://admin:pw123@cam/x")
		l.Info("connect rtsp://admin:pw123@cam/x failed", "err", errors.New("auth s3cr3t-token rejected"),
			slog.Group("g", "tok", "s3cr3t-token"))
		out := buf.String()
		for _, bad := range []string{"s3cr3t-token", "pw123", "admin:"} {
			if strings.Contains(out, bad) {
				t.Fatalf("%s: output leaks %q: %s", format, bad, out)
			}
		}
		if !strings.Contains(out, "module") || !strings.Contains(out, "rtsp://cam/x") {
			t.Fatalf("%s: expected module and redacted URL: %s", format, out)
		}
	}
}

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	lv, err := ParseLevel("warn")
	if err != nil {
		t.Fatal(err)
	}
	l := New(&buf, lv, "text", nil)
	l.Info("hidden")
	l.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Fatalf("level filter: %s", buf.String())
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Fatal("want error for unknown level")
	}
}

func TestModuleKeptOnce(t *testing.T) {
	var buf bytes.Buffer
	l := Module(Module(New(&buf, slog.LevelInfo, "text", nil), "media"), "media/file")
	l.Info("x", "k", "v")
	out := buf.String()
	if strings.Count(out, "module=") != 1 || !strings.Contains(out, "module=media/file") {
		t.Fatalf("module attr: %s", out)
	}
}
