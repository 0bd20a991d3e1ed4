package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// webRoot builds a web root with the things an operator's directory tends
// to contain besides the UI: a symlink to /etc/passwd, a symlinked
// directory leading out of the root, a .git dir, a .env file, a
// subdirectory without index.html, one with an index.html, and a symlink
// that stays inside the root.
func webRoot(t *testing.T) string {
	t.Helper()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("outside-secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("index.html", "<!doctype html><title>dev ui</title>")
	write("app.js", "console.log('dev')")
	write(".env", "ICEY_AUTH_TOKEN=leaked")
	write(".git/config", "[core]\n")
	write(".git/HEAD", "ref: refs/heads/main\n")
	write("assets/logo.svg", "<svg/>")      // a subdirectory without index.html
	write("docs/index.html", "<p>docs</p>") // one with
	write("docs/.htpasswd", "admin:hash")
	link("/etc/passwd", "passwd")
	link(outside, "out") // a directory outside
	link(filepath.Join(outside, "secret.txt"), "secret.txt")
	link("app.js", "alias.js") // stays inside: fine
	return dir
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://ui.test"+path, nil)
	req.URL.Path = path // keep dots and ".." exactly as a raw client could send them
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestWebRootIsConfined(t *testing.T) {
	dir := webRoot(t)
	files, err := FS(dir)
	if err != nil {
		t.Fatalf("FS(%s): %v", dir, err)
	}
	h := Handler(files)
	for _, tc := range []struct {
		path string
		code int
		body string // substring of a 200 body
	}{
		{"/", 200, "dev ui"},
		{"/app.js", 200, "console.log"},
		{"/alias.js", 200, "console.log"}, // a symlink inside the root still works
		{"/docs/", 200, "docs"},
		{"/assets/logo.svg", 200, "<svg/>"},
		{"/passwd", 404, ""},
		{"/secret.txt", 404, ""},
		{"/out/secret.txt", 404, ""},
		{"/out/", 404, ""},
		{"/.env", 404, ""},
		{"/.git/config", 404, ""},
		{"/.git/HEAD", 404, ""},
		{"/.git/", 404, ""},
		{"/docs/.htpasswd", 404, ""},
		{"/assets/", 404, ""}, // no listing
		{"/assets", 404, ""},
		{"/../../../../etc/passwd", 404, ""},
		{"/docs/../.env", 404, ""},
		{"/missing.js", 404, ""},
	} {
		code, body := get(t, h, tc.path)
		if code != tc.code {
			t.Errorf("GET %s: %d, want %d (body %.80q)", tc.path, code, tc.code, body)
			continue
		}
		if tc.code == 200 && !strings.Contains(body, tc.body) {
			t.Errorf("GET %s: body %.80q lacks %q", tc.path, body, tc.body)
		}
		for _, leak := range []string{"root:x:0:0", "outside-secret", "leaked", "[core]", "admin:hash", "logo.svg"} {
			if tc.code != 200 && strings.Contains(body, leak) {
				t.Errorf("GET %s leaks %q: %.120q", tc.path, leak, body)
			}
		}
	}
	// The headers of every response, refused or not.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/.env", nil))
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("404 headers %v", rec.Header())
	}
}

// The embedded UI is served exactly as before: index at /, the assets, the
// /index.html redirect, 404 for what is not there.
func TestEmbeddedUI(t *testing.T) {
	files, err := FS("")
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(files)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/", 200, "<title>icey-server</title>"},
		{"/app.js", 200, "SympleClient"},
		{"/symple.js", 200, "symple/4"},
		{"/app.css", 200, ".stage"},
		{"/index.html", 301, ""},
		{"/nope.js", 404, ""},
		{"/.hidden", 404, ""},
	} {
		code, body := get(t, h, tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s: %d %.60q, want %d with %q", tc.path, code, body, tc.code, tc.body)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/app.js", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("app.js content type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q", cc)
	}
}

func TestCheckRoot(t *testing.T) {
	if err := CheckRoot(""); err != nil {
		t.Fatalf("empty (embedded UI): %v", err)
	}
	good := webRoot(t)
	if err := CheckRoot(good); err != nil {
		t.Fatalf("a usable root: %v", err)
	}

	base := t.TempDir()
	file := filepath.Join(base, "file.html")
	os.WriteFile(file, []byte("x"), 0o644)
	noIndex := filepath.Join(base, "noindex")
	os.MkdirAll(filepath.Join(noIndex, "sub"), 0o755)
	os.WriteFile(filepath.Join(noIndex, "sub", "index.html"), []byte("x"), 0o644)
	idxDir := filepath.Join(base, "idxdir")
	os.MkdirAll(filepath.Join(idxDir, "index.html"), 0o755)
	idxOut := filepath.Join(base, "idxout")
	os.MkdirAll(idxOut, 0o755)
	os.Symlink(file, filepath.Join(idxOut, "index.html"))
	idxBroken := filepath.Join(base, "idxbroken")
	os.MkdirAll(idxBroken, 0o755)
	os.Symlink("gone.html", filepath.Join(idxBroken, "index.html"))

	for _, tc := range []struct {
		name, dir string
		want      []string
	}{
		{"missing", filepath.Join(base, "nope"), []string{"does not exist", filepath.Join(base, "nope")}},
		{"a file", file, []string{"is a file, not a directory"}},
		{"no index.html", noIndex, []string{"has no index.html"}},
		{"index.html is a directory", idxDir, []string{"index.html", "not a regular file"}},
		{"index.html outside", idxOut, []string{"index.html", "outside the web root"}},
		{"index.html broken symlink", idxBroken, []string{"broken symlink"}},
	} {
		err := CheckRoot(tc.dir)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		msg := err.Error()
		for _, w := range append(tc.want, "--web-root") {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q lacks %q", tc.name, msg, w)
			}
		}
		if _, ferr := FS(tc.dir); ferr == nil {
			t.Errorf("%s: FS accepted a root CheckRoot refuses", tc.name)
		}
	}

	// Unreadable: only observable when not root (root reads anything).
	if os.Geteuid() != 0 {
		locked := filepath.Join(base, "locked")
		os.MkdirAll(locked, 0o755)
		os.WriteFile(filepath.Join(locked, "index.html"), []byte("x"), 0o644)
		os.Chmod(locked, 0)
		defer os.Chmod(locked, 0o755)
		if err := CheckRoot(locked); err == nil || !strings.Contains(err.Error(), "cannot be") {
			t.Errorf("unreadable root: %v", err)
		}
	}
}
