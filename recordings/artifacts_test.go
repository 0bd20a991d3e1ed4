package recordings

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// artGet sends a request as written (no cleaning).
func artGet(t *testing.T, srv *httptest.Server, method, target string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// Artifacts are listed, served with Range and auth, only by canonical
// name under their prefix, never .part nor outside the directory, and
// retained; a recording of a path named "clips" is not theirs.
func TestArtifactsServe(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenArtifacts(ArtifactsConfig{Dir: dir, Prefix: ClipsPrefix, MaxTotalBytes: 2500}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenArtifacts(ArtifactsConfig{Dir: dir, Prefix: "/recordings/clips"}, nil); err == nil {
		t.Error("prefix without a trailing slash accepted")
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	write := func(name string, n int, mtime time.Time) {
		t.Helper()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(dir, name), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	clip := FileName("cam", t0)
	png := strings.TrimSuffix(FileName("cam", t0.Add(time.Second)), Ext) + ".png"
	jpg := strings.TrimSuffix(FileName("main", t0.Add(2*time.Second)), Ext) + ".jpg"
	write(clip, 1000, t0.Add(4*time.Second))
	write(png, 1000, t0.Add(time.Second))
	write(jpg, 1000, t0.Add(2*time.Second))
	write(FileName("cam", t0.Add(time.Hour))+".part", 100, t0)
	write("cam-x.png", 10, t0)
	write(".snap.png.123.part", 10, t0)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, strings.TrimSuffix(FileName("cam", t0.Add(3*time.Second)), Ext)+".png")); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(a.Handler(HandlerOptions{Token: "tok"}))
	defer srv.Close()
	auth := map[string]string{"Authorization": "Bearer tok"}

	if a.ListURL() != "/api/recordings/clips" {
		t.Errorf("list URL %q", a.ListURL())
	}
	for _, p := range []string{"/api/recordings/clips", "/recordings/clips/cam/" + clip} {
		if !a.HandlesPath(p) {
			t.Errorf("HandlesPath(%q) false", p)
		}
	}
	for _, p := range []string{"/recordings/clips/" + FileName("clips", t0), "/api/recordings", "/recordings/cam/" + clip} {
		if a.HandlesPath(p) {
			t.Errorf("HandlesPath(%q) true", p)
		}
	}

	resp, body := artGet(t, srv, "GET", "/api/recordings/clips", auth)
	var list []Info
	if resp.StatusCode != 200 || json.Unmarshal(body, &list) != nil || len(list) != 3 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if list[0].Name != jpg || list[2].Name != clip || list[2].URL != "/recordings/clips/cam/"+clip || !list[2].Complete {
		t.Errorf("list %+v", list)
	}
	resp, body = artGet(t, srv, "GET", "/api/recordings/clips?path=cam", auth)
	if json.Unmarshal(body, &list) != nil || len(list) != 2 {
		t.Errorf("list of cam: %s", body)
	}

	resp, body = artGet(t, srv, "GET", "/recordings/clips/cam/"+clip, map[string]string{"Authorization": "Bearer tok", "Range": "bytes=10-19"})
	if resp.StatusCode != http.StatusPartialContent || len(body) != 10 || body[0] != 10 || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Errorf("range: %d %q %v", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, _ = artGet(t, srv, "GET", "/recordings/clips/cam/"+png+"?token=tok", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
		t.Errorf("png: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, _ = artGet(t, srv, "HEAD", "/recordings/clips/main/"+jpg, auth)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || resp.ContentLength != 1000 {
		t.Errorf("head jpg: %d %q %d", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength)
	}
	resp, body = artGet(t, srv, "GET", "/recordings/clips/cam/"+clip, nil)
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")
	resp, body = artGet(t, srv, "DELETE", "/recordings/clips/cam/"+clip, auth)
	wantJSONError(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed")
	for _, p := range []string{
		"/recordings/clips/main/" + clip,                              // another path's
		"/recordings/clips/cam/" + clip + ".part",                     // not canonical
		"/recordings/clips/cam/" + FileName("cam", t0.Add(time.Hour)), // only a .part
		"/recordings/clips/cam/cam-x.png",
		"/recordings/clips/cam/" + strings.TrimSuffix(FileName("cam", t0.Add(3*time.Second)), Ext) + ".png", // symlink
		"/recordings/clips/cam/../../etc/passwd",
		"/recordings/clips/cam/..%2f" + clip,
		"/recordings/clips/cam%2f" + clip,
		"/recordings/clips/cam/x/" + clip,
		"/recordings/clips/",
	} {
		resp, body = artGet(t, srv, "GET", p, auth)
		wantJSONError(t, resp, body, http.StatusNotFound, "not_found")
	}

	// Retention: 3000 bytes over a 2500 budget: the oldest (the clip) goes;
	// the .part and others stay.
	deleted, err := a.Sweep(t0.Add(time.Hour))
	if err != nil || len(deleted) != 1 || deleted[0] != clip {
		t.Errorf("sweep: %v %v", deleted, err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName("cam", t0.Add(time.Hour))+".part")); err != nil {
		t.Error("the .part was deleted")
	}
	a.cfg.MaxAge = time.Minute
	if deleted, err = a.Sweep(t0.Add(time.Hour)); err != nil || len(deleted) != 2 {
		t.Errorf("sweep by age: %v %v", deleted, err)
	}
}
