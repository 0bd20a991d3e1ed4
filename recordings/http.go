package recordings

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/icey/icey-server/internal/auth"
)

// HandlerOptions configures Handler.
type HandlerOptions struct {
	// Token, when set, is required on every request: "Authorization:
	// Bearer", "X-Icey-Token" or ?token= (for <video> sources), as
	// internal/auth reads them.
	Token string
	// AllowedOrigins are the extra browser origins allowed besides this
	// server's own (auth.AllowOrigin).
	AllowedOrigins []string
}

// URL prefixes Handler serves.
const (
	urlList        = "/api/recordings"
	urlAPIPrefix   = "/api/recordings/"
	urlFilesPrefix = "/recordings/"
)

// HandlesPath reports whether Handler serves the request path urlPath
// (r.URL.Path): /api/recordings, /api/recordings/… and /recordings/…. A
// router can send these to Handler before http.ServeMux cleans the path
// (ServeMux answers a path with ".." with a redirect; Handler with 404).
func HandlesPath(urlPath string) bool {
	return urlPath == urlList || strings.HasPrefix(urlPath, urlAPIPrefix) || strings.HasPrefix(urlPath, urlFilesPrefix)
}

// Handler serves the recordings API and files:
//
//	GET  /api/recordings?path=&from=&to=   the list (JSON array, newest first)
//	DELETE /api/recordings/{path}/{name}   204; 404 unknown; 409 being written
//	GET|HEAD /recordings/{path}/{name}     the file (video/mp4, Range, ETag)
//
// Mount it at /api/recordings, /api/recordings/ and /recordings/. A
// foreign browser Origin gets 403 and a request without the token 401,
// with the ops API's JSON errors.
func (s *Store) Handler(o HandlerOptions) http.Handler {
	return &storeHandler{s: s, o: o}
}

// admit answers 403 to a foreign browser Origin and 401 to a request
// without the token (when one is set); true lets the request through.
func (o HandlerOptions) admit(w http.ResponseWriter, r *http.Request) bool {
	if !auth.AllowOrigin(r, o.AllowedOrigins) {
		replyError(w, http.StatusForbidden, "origin_not_allowed")
		return false
	}
	if o.Token != "" && !auth.TokenOK(o.Token, auth.QueryToken(r)) {
		replyError(w, http.StatusUnauthorized, "unauthorized")
		return false
	}
	return true
}

type storeHandler struct {
	s *Store
	o HandlerOptions
}

func (h *storeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.o.admit(w, r) {
		return
	}
	// Route on the escaped path, so that an encoded '/' stays inside its
	// segment (and fails the name check) instead of adding one.
	p := r.URL.EscapedPath()
	switch {
	case p == urlList:
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.list(w, r)
	case strings.HasPrefix(p, urlAPIPrefix):
		path, name, ok := splitRecordingURL(p[len(urlAPIPrefix):])
		if !ok {
			replyError(w, http.StatusNotFound, "not_found")
			return
		}
		if !allowMethods(w, r, http.MethodDelete) {
			return
		}
		h.delete(w, path, name)
	case strings.HasPrefix(p, urlFilesPrefix):
		_, name, ok := splitRecordingURL(p[len(urlFilesPrefix):])
		if !ok {
			replyError(w, http.StatusNotFound, "not_found")
			return
		}
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		serveFile(w, r, h.s.cfg.Dir, name, "video/mp4")
	default:
		replyError(w, http.StatusNotFound, "not_found")
	}
}

// allowMethods answers 405 with Allow unless r's method is one of methods.
func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	replyError(w, http.StatusMethodNotAllowed, "method_not_allowed")
	return false
}

// splitRecordingURL splits an escaped "{path}/{name}" into its decoded parts. The
// name must be the canonical name of one of path's recordings, which
// leaves no room for "..", separators or anything encoded.
func splitRecordingURL(escaped string) (path, name string, ok bool) {
	ep, en, found := strings.Cut(escaped, "/")
	if !found || strings.Contains(en, "/") {
		return "", "", false
	}
	path, err1 := url.PathUnescape(ep)
	name, err2 := url.PathUnescape(en)
	if err1 != nil || err2 != nil {
		return "", "", false
	}
	p, _, ok := parseRecording(name)
	if !ok || p != path {
		return "", "", false
	}
	return path, name, true
}

func (h *storeHandler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f Filter
	f.Path = q.Get("path")
	for _, t := range []struct {
		key string
		dst *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		v := q.Get(t.key)
		if v == "" {
			continue
		}
		tm, err := time.Parse(time.RFC3339, v)
		if err != nil {
			replyError(w, http.StatusBadRequest, "invalid_"+t.key)
			return
		}
		*t.dst = tm
	}
	if !f.From.IsZero() && !f.To.IsZero() && f.To.Before(f.From) {
		replyError(w, http.StatusBadRequest, "invalid_range")
		return
	}
	list, err := h.s.List(f)
	if err != nil {
		h.s.log.Warn("listing recordings", "err", err)
		replyError(w, http.StatusInternalServerError, "recordings_unavailable")
		return
	}
	if list == nil {
		list = []Info{}
	}
	replyJSON(w, http.StatusOK, list)
}

func (h *storeHandler) delete(w http.ResponseWriter, path, name string) {
	switch err := h.s.Delete(path, name); {
	case err == nil:
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrNotFound):
		replyError(w, http.StatusNotFound, "not_found")
	case errors.Is(err, ErrActive):
		replyError(w, http.StatusConflict, "recording_active")
	default:
		h.s.log.Warn("deleting a recording", "path", path, "name", name, "err", err)
		replyError(w, http.StatusInternalServerError, "delete_failed")
	}
}

// serveFile serves a finished file of dir (a recording, a clip, a
// snapshot): a regular file directly in the directory, opened through an
// os.Root (nothing outside it is reachable) and checked to be the very file
// lstat saw (no symlink, none swapped in); Range, ETag, inline.
func serveFile(w http.ResponseWriter, r *http.Request, dir, name, contentType string) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		replyError(w, http.StatusNotFound, "not_found")
		return
	}
	defer root.Close()
	lfi, err := root.Lstat(name)
	if err != nil || !lfi.Mode().IsRegular() {
		replyError(w, http.StatusNotFound, "not_found")
		return
	}
	f, err := root.Open(name)
	if err != nil {
		replyError(w, http.StatusNotFound, "not_found")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || !os.SameFile(lfi, fi) {
		replyError(w, http.StatusNotFound, "not_found")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", contentType)
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("Cache-Control", "private")
	hd.Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
	hd.Set("Content-Disposition", `inline; filename="`+name+`"`)
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// replyJSON and replyError answer as the ops API does (api.WriteJSON,
// api.WriteError): JSON, Cache-Control: no-store, errors as
// {"status":"error","error":code}.
func replyJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func replyError(w http.ResponseWriter, status int, code string) {
	replyJSON(w, status, map[string]string{"status": "error", "error": code})
}
