package recordings

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// httpFixture is a store with known files behind a test server.
type httpFixture struct {
	s       *Store
	srv     *httptest.Server
	main    string // main's finalized recording, content: 0..255 repeated
	content []byte
	cam     string // cam's finalized recording
	active  string // main's recording being written
}

func newHTTPFixture(t *testing.T, o HandlerOptions) *httpFixture {
	t.Helper()
	s := openTestStore(t, StoreConfig{})
	fx := &httpFixture{s: s}
	fx.content = make([]byte, 1000)
	for i := range fx.content {
		fx.content[i] = byte(i)
	}
	name, f, err := s.Create("main", t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(fx.content); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := s.Finalize(name); err != nil {
		t.Fatal(err)
	}
	setMtime(t, filepath.Join(s.Dir(), name), t0.Add(90*time.Second))
	fx.main = name
	fx.cam = record(t, s, "cam", t0.Add(time.Minute), 10, t0.Add(2*time.Minute))
	var af *os.File
	fx.active, af = createPart(t, s, "main", t0.Add(time.Hour), 5)
	t.Cleanup(func() { af.Close(); s.Discard(fx.active) })
	fx.srv = httptest.NewServer(s.Handler(o))
	t.Cleanup(fx.srv.Close)
	return fx
}

// do sends a request; the target is sent as written (no cleaning).
func (fx *httpFixture) do(t *testing.T, method, target string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, fx.srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := fx.srv.Client().Do(req)
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

// wantJSONError checks the ops API's error shape.
func wantJSONError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d (%s)", resp.Request.Method, resp.Request.URL, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	var e map[string]string
	if err := json.Unmarshal(body, &e); err != nil || e["status"] != "error" || (code != "" && e["error"] != code) {
		t.Errorf("error body %s, want {status: error, error: %s}", body, code)
	}
}

func TestHTTPList(t *testing.T) {
	leaktest.Check(t)
	fx := newHTTPFixture(t, HandlerOptions{})
	resp, body := fx.do(t, "GET", "/api/recordings", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("list: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	var raw []map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 3 {
		t.Fatalf("list: %s", body)
	}
	for _, k := range []string{"path", "name", "start", "end", "durationSec", "bytes", "complete", "url"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("list entry lacks %q: %v", k, raw[0])
		}
	}
	var list []Info
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if got := names(list); got[0] != fx.active || got[1] != fx.cam || got[2] != fx.main {
		t.Errorf("order %q", got)
	}
	m := list[2]
	if m.Path != "main" || m.Bytes != 1000 || !m.Complete || m.DurationSec != 90 || !m.Start.Equal(t0) ||
		!m.End.Equal(t0.Add(90*time.Second)) || m.URL != "/recordings/main/"+fx.main {
		t.Errorf("main = %+v", m)
	}
	if list[0].Complete {
		t.Error("the active recording is listed as complete")
	}

	// Filters.
	q := "/api/recordings?path=main&from=" + t0.Add(30*time.Second).Format(time.RFC3339) + "&to=" + t0.Add(59*time.Minute).Format(time.RFC3339Nano)
	_, body = fx.do(t, "GET", q, nil)
	list = nil
	if err := json.Unmarshal(body, &list); err != nil || len(list) != 1 || list[0].Name != fx.main {
		t.Errorf("filtered list: %s", body)
	}
	// Nothing matches: [] (never null).
	_, body = fx.do(t, "GET", "/api/recordings?path=nope", nil)
	if strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("empty list: %s", body)
	}
	// Bad times.
	for _, q := range []string{"from=yesterday", "to=2026-11-30", "from=2026-11-30T16:00:00Z&to=2026-11-30T15:00:00Z"} {
		resp, body := fx.do(t, "GET", "/api/recordings?"+q, nil)
		wantJSONError(t, resp, body, http.StatusBadRequest, "")
	}
	// Methods.
	resp, body = fx.do(t, "POST", "/api/recordings", nil)
	wantJSONError(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed")
	if a := resp.Header.Get("Allow"); a != "GET, HEAD" {
		t.Errorf("Allow %q", a)
	}
	resp, body = fx.do(t, "GET", "/api/elsewhere", nil)
	wantJSONError(t, resp, body, http.StatusNotFound, "not_found")
}

func TestHTTPServeFile(t *testing.T) {
	leaktest.Check(t)
	fx := newHTTPFixture(t, HandlerOptions{})
	url := "/recordings/main/" + fx.main

	resp, body := fx.do(t, "GET", url, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, fx.content) {
		t.Fatalf("GET: %d, %d bytes", resp.StatusCode, len(body))
	}
	h := resp.Header
	if h.Get("Content-Type") != "video/mp4" || h.Get("Accept-Ranges") != "bytes" || h.Get("Cache-Control") != "private" ||
		h.Get("Content-Length") != "1000" || h.Get("Last-Modified") == "" {
		t.Errorf("headers %v", h)
	}
	etag := h.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || len(etag) < 4 {
		t.Fatalf("ETag %q", etag)
	}

	// Range.
	resp, body = fx.do(t, "GET", url, map[string]string{"Range": "bytes=100-199"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, fx.content[100:200]) {
		t.Fatalf("Range: %d, %v", resp.StatusCode, body)
	}
	if cr := resp.Header.Get("Content-Range"); cr != "bytes 100-199/1000" {
		t.Errorf("Content-Range %q", cr)
	}
	resp, body = fx.do(t, "GET", url, map[string]string{"Range": "bytes=-10"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, fx.content[990:]) ||
		resp.Header.Get("Content-Range") != "bytes 990-999/1000" {
		t.Errorf("suffix Range: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	resp, _ = fx.do(t, "GET", url, map[string]string{"Range": "bytes=5000-"})
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("unsatisfiable Range: %d", resp.StatusCode)
	}

	// Conditional requests.
	resp, body = fx.do(t, "GET", url, map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	resp, _ = fx.do(t, "GET", url, map[string]string{"If-None-Match": `"other"`})
	if resp.StatusCode != 200 {
		t.Errorf("If-None-Match (other): %d", resp.StatusCode)
	}
	resp, body = fx.do(t, "GET", url, map[string]string{"Range": "bytes=0-9", "If-Range": `"stale"`})
	if resp.StatusCode != 200 || len(body) != 1000 {
		t.Errorf("If-Range stale: %d, %d bytes", resp.StatusCode, len(body))
	}

	// HEAD.
	resp, body = fx.do(t, "HEAD", url, nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != "1000" ||
		resp.Header.Get("ETag") != etag || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Errorf("HEAD: %d %v", resp.StatusCode, resp.Header)
	}

	// Methods.
	resp, body = fx.do(t, "DELETE", url, nil)
	wantJSONError(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed")
	if a := resp.Header.Get("Allow"); a != "GET, HEAD" {
		t.Errorf("Allow %q", a)
	}

	// Another file's ETag differs.
	resp, _ = fx.do(t, "GET", "/recordings/cam/"+fx.cam, nil)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == etag {
		t.Errorf("cam: %d, ETag %q", resp.StatusCode, resp.Header.Get("ETag"))
	}
}

func TestHTTPNotServed(t *testing.T) {
	leaktest.Check(t)
	fx := newHTTPFixture(t, HandlerOptions{})
	dir := fx.s.Dir()
	// A secret next to the recordings directory and one far outside.
	parent := filepath.Dir(dir)
	writeFile(t, filepath.Join(parent, "secret.mp4"), 6, t0)
	outside := filepath.Join(t.TempDir(), "outside.mp4")
	writeFile(t, outside, 6, t0)
	linkOut := FileName("main", t0.Add(3*time.Hour))
	if err := os.Symlink(outside, filepath.Join(dir, linkOut)); err != nil {
		t.Fatal(err)
	}
	linkIn := FileName("main", t0.Add(4*time.Hour)) // a symlink to a recording in the directory
	if err := os.Symlink(fx.main, filepath.Join(dir, linkIn)); err != nil {
		t.Fatal(err)
	}
	dirNamed := FileName("main", t0.Add(5*time.Hour))
	if err := os.Mkdir(filepath.Join(dir, dirNamed), 0o755); err != nil {
		t.Fatal(err)
	}

	for _, target := range []string{
		"/recordings/../x",
		"/recordings/../" + filepath.Base(dir) + "/" + fx.main,
		"/recordings/main/../" + fx.main,
		"/recordings/main/%2e%2e%2fsecret.mp4",
		"/recordings/main/..%2fsecret.mp4",
		"/recordings/main/..%2f..%2fetc%2fpasswd",
		"/recordings/main/%2E%2E/secret.mp4",
		"/recordings/main%2f" + fx.main,
		"/recordings/main/" + strings.Replace(fx.main, "main", "%6dain", 1) + "%2f",
		"/recordings/main/" + fx.main + "/",
		"/recordings/main/" + fx.main + "/x",
		"/recordings/main//" + fx.main,
		"/recordings/" + fx.main,
		"/recordings/cam/" + fx.main, // the path element differs from the name's
		"/recordings/main/" + fx.main + ".part",
		"/recordings/main/" + fx.active,           // being written: only the .part exists
		"/recordings/main/" + fx.active + ".part", // never served
		"/recordings/main/" + linkOut,
		"/recordings/main/" + linkIn,
		"/recordings/main/" + dirNamed,
		"/recordings/main/" + FileName("main", t0.Add(time.Second)), // no such file
		"/recordings/main/secret.mp4",
		"/recordings/",
		"/recordings/main/",
	} {
		resp, body := fx.do(t, "GET", target, nil)
		wantJSONError(t, resp, body, http.StatusNotFound, "not_found")
		if bytes.Contains(body, []byte{0, 1, 2}) || bytes.Contains(body, []byte("yyyyyy")) {
			t.Errorf("%s leaked file content", target)
		}
	}
	// The escaped form of a valid name is the same name.
	esc := "/recordings/main/" + strings.Replace(fx.main, "main", "%6dain", 1)
	if resp, _ := fx.do(t, "GET", esc, nil); resp.StatusCode != 200 {
		t.Errorf("%s: %d", esc, resp.StatusCode)
	}
}

func TestHTTPDelete(t *testing.T) {
	leaktest.Check(t)
	fx := newHTTPFixture(t, HandlerOptions{})
	resp, body := fx.do(t, "DELETE", "/api/recordings/main/"+fx.active, nil)
	wantJSONError(t, resp, body, http.StatusConflict, "recording_active")
	for _, target := range []string{
		"/api/recordings/main/" + FileName("main", t0.Add(time.Second)),
		"/api/recordings/cam/" + fx.main,
		"/api/recordings/main/..%2f" + fx.main,
		"/api/recordings/main/" + fx.main + ".part",
		"/api/recordings/main",
		"/api/recordings/",
	} {
		resp, body := fx.do(t, "DELETE", target, nil)
		wantJSONError(t, resp, body, http.StatusNotFound, "not_found")
	}
	resp, body = fx.do(t, "GET", "/api/recordings/main/"+fx.main, nil)
	wantJSONError(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed")
	if a := resp.Header.Get("Allow"); a != "DELETE" {
		t.Errorf("Allow %q", a)
	}

	resp, body = fx.do(t, "DELETE", "/api/recordings/main/"+fx.main, nil)
	if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	if exists(t, filepath.Join(fx.s.Dir(), fx.main)) {
		t.Error("the file is still there")
	}
	resp, body = fx.do(t, "DELETE", "/api/recordings/main/"+fx.main, nil)
	wantJSONError(t, resp, body, http.StatusNotFound, "not_found")
	resp, _ = fx.do(t, "GET", "/recordings/main/"+fx.main, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d", resp.StatusCode)
	}
}

func TestHTTPAuth(t *testing.T) {
	leaktest.Check(t)
	const token = "s3cret-token"
	fx := newHTTPFixture(t, HandlerOptions{Token: token, AllowedOrigins: []string{"https://ui.example"}})
	file := "/recordings/main/" + fx.main
	targets := []string{"/api/recordings", file}

	for _, target := range targets {
		for _, hdr := range []map[string]string{
			nil,
			{"Authorization": "Bearer wrong"},
			{"X-Icey-Token": "wrong"},
			{"Authorization": "Basic " + token},
		} {
			resp, body := fx.do(t, "GET", target, hdr)
			wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")
		}
		resp, body := fx.do(t, "GET", target+"?token=wrong", nil)
		wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")

		for _, hdr := range []map[string]string{
			{"Authorization": "Bearer " + token},
			{"Authorization": "bearer " + token},
			{"X-Icey-Token": token},
		} {
			if resp, body := fx.do(t, "GET", target, hdr); resp.StatusCode != 200 {
				t.Errorf("GET %s with %v: %d %s", target, hdr, resp.StatusCode, body)
			}
		}
		if resp, body := fx.do(t, "GET", target+"?token="+token, nil); resp.StatusCode != 200 {
			t.Errorf("GET %s?token=: %d %s", target, resp.StatusCode, body)
		}
	}
	// ?token= with a Range, as a <video> element asks.
	resp, body := fx.do(t, "GET", file+"?token="+token, map[string]string{"Range": "bytes=0-3"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, fx.content[:4]) {
		t.Errorf("?token= Range: %d %v", resp.StatusCode, body)
	}
	// Unauthenticated 404s and DELETEs are 401s: nothing is revealed.
	resp, body = fx.do(t, "GET", "/recordings/main/../x", nil)
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")
	resp, body = fx.do(t, "DELETE", "/api/recordings/main/"+fx.main, nil)
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized")
	if !exists(t, filepath.Join(fx.s.Dir(), fx.main)) {
		t.Fatal("an unauthenticated DELETE removed the file")
	}

	// Origins: foreign → 403 even with the token; own and configured → ok.
	auth := map[string]string{"X-Icey-Token": token}
	for _, origin := range []string{"https://evil.example", "http://localhost:1"} {
		for _, target := range targets {
			resp, body := fx.do(t, "GET", target, map[string]string{"X-Icey-Token": token, "Origin": origin})
			wantJSONError(t, resp, body, http.StatusForbidden, "origin_not_allowed")
		}
		resp, body := fx.do(t, "DELETE", "/api/recordings/main/"+fx.main, map[string]string{"X-Icey-Token": token, "Origin": origin})
		wantJSONError(t, resp, body, http.StatusForbidden, "origin_not_allowed")
	}
	for _, origin := range []string{fx.srv.URL, "https://ui.example"} {
		auth["Origin"] = origin
		if resp, body := fx.do(t, "GET", file, auth); resp.StatusCode != 200 {
			t.Errorf("Origin %s: %d %s", origin, resp.StatusCode, body)
		}
	}
	resp, _ = fx.do(t, "DELETE", "/api/recordings/main/"+fx.main, auth)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("authorized DELETE: %d", resp.StatusCode)
	}
}

// TestHTTPMountedOnServeMux mounts the handler as the app does: a path with
// ".." never reaches a file (ServeMux redirects to the cleaned path, which
// the handler then refuses), and HandlesPath lets a router bypass that.
func TestHTTPMountedOnServeMux(t *testing.T) {
	leaktest.Check(t)
	fx := newHTTPFixture(t, HandlerOptions{})
	mux := http.NewServeMux()
	h := fx.s.Handler(HandlerOptions{})
	for _, p := range []string{"/api/recordings", "/api/recordings/", "/recordings/"} {
		mux.Handle(p, h)
	}
	mux.Handle("/", http.NotFoundHandler())
	for _, target := range []string{"/recordings/main/%2e%2e%2fsecret.mp4", "/recordings/main/..%2f..%2fetc%2fpasswd", "/recordings/../x"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		if rec.Code == 200 {
			t.Errorf("mux %s: 200", target)
		}
		if !HandlesPath(httptest.NewRequest("GET", target, nil).URL.Path) {
			t.Errorf("HandlesPath(%s) = false", target)
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("handler %s: %d", target, rec.Code)
		}
	}
	for _, p := range []string{"/", "/api/status", "/recordingsx", "/api/recordingsx"} {
		if HandlesPath(p) {
			t.Errorf("HandlesPath(%s) = true", p)
		}
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/recordings/main/"+fx.main, nil))
	if rec.Code != 200 || rec.Body.Len() != 1000 {
		t.Errorf("mux GET: %d", rec.Code)
	}
}
