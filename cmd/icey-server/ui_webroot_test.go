package main

// --web-root on the binary: the directory is served confined to itself
// (no symlink out of it, no dotfiles, no listings), and an unusable
// directory stops startup with a sentence saying why.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWebRootOnTheBinary(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><title>dev ui</title>"), 0o644))
	must(os.WriteFile(filepath.Join(dir, ".env"), []byte("ICEY_AUTH_TOKEN=leaked"), 0o644))
	must(os.MkdirAll(filepath.Join(dir, ".git"), 0o755))
	must(os.WriteFile(filepath.Join(dir, ".git", "config"), []byte("[core]"), 0o644))
	must(os.MkdirAll(filepath.Join(dir, "assets"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "assets", "logo.svg"), []byte("<svg/>"), 0o644))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")))

	p := launch(t, []string{"--web-root", dir})
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/", 200, "dev ui"},
		{"/assets/logo.svg", 200, "<svg/>"},
		{"/passwd", 404, ""},
		{"/.env", 404, ""},
		{"/.git/config", 404, ""},
		{"/assets/", 404, ""},
	} {
		code, _, body := p.get(t, tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s: %d %.80q, want %d with %q", tc.path, code, body, tc.code, tc.body)
		}
		for _, leak := range []string{"root:x:0:0", "leaked", "[core]", "logo.svg"} {
			if tc.code == 404 && strings.Contains(body, leak) {
				t.Errorf("GET %s leaks %q", tc.path, leak)
			}
		}
	}

	// A root without index.html is refused at startup with the reason
	// (the web_root preflight check: exit 4).
	bare := t.TempDir()
	must(os.WriteFile(filepath.Join(bare, "app.js"), []byte("x"), 0o644))
	q := launch(t, []string{"--web-root", bare})
	if code := q.wait(t, 20*time.Second); code != 4 {
		t.Errorf("unusable web root: exit %d, want 4", code)
	}
	if log := q.stderr.String(); !strings.Contains(log, "web_root") || !strings.Contains(log, bare+" has no index.html") {
		t.Errorf("the log does not say why the web root is unusable:\n%s", log)
	}
}
