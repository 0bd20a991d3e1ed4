// Package web embeds the browser UI so the binary serves it with no files
// on disk. A web root directory can override it (for UI development).
//
// A web root is served defensively: it is opened with os.OpenRoot, so no
// symlink (or "..") can reach a file outside it; any path with a segment
// starting with "." (.git, .env, .htpasswd) is 404; and a directory is
// served only through its index.html, never as a listing.
package web

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
)

//go:embed static
var static embed.FS

// FS returns the UI files: the embedded copy, or dir when non-empty. A dir
// that CheckRoot refuses is an error (the caller falls back to the
// embedded UI); an accepted dir is confined to itself (see the package
// comment).
func FS(dir string) (fs.FS, error) {
	if dir == "" {
		return fs.Sub(static, "static")
	}
	if err := CheckRoot(dir); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("the web root %s cannot be opened: %w", dir, err)
	}
	// The root stays open for the life of the process: the handler serves
	// from it until exit.
	return root.FS(), nil
}

// CheckRoot says, in a sentence an operator can act on, why dir cannot be
// used as the web root: it does not exist, is not a directory, cannot be
// read, or has no index.html (or one that is not a regular file inside the
// root). An empty dir means the embedded UI and is always fine.
func CheckRoot(dir string) error {
	if dir == "" {
		return nil
	}
	shown := dir
	if abs, err := filepath.Abs(dir); err == nil {
		shown = abs
	}
	const fix = "fix it or unset webRoot (--web-root, ICEY_WEB_ROOT) to serve the embedded UI"
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the web root %s does not exist; %s", shown, fix)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("the web root %s cannot be read (permission denied); %s", shown, fix)
	case err != nil:
		return fmt.Errorf("the web root %s cannot be read (%v); %s", shown, err, fix)
	case !st.IsDir():
		return fmt.Errorf("the web root %s is a file, not a directory; %s", shown, fix)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("the web root %s cannot be read (permission denied); %s", shown, fix)
		}
		return fmt.Errorf("the web root %s cannot be opened (%v); %s", shown, err, fix)
	}
	defer root.Close()
	f, err := root.Open(".")
	if err == nil {
		_, err = f.ReadDir(1)
		f.Close()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("the web root %s cannot be listed by this process (%v); %s", shown, err, fix)
	}
	ist, err := root.Stat("index.html")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, lerr := root.Lstat("index.html"); lerr == nil {
			return fmt.Errorf("the web root %s has an index.html that is a broken symlink; %s", shown, fix)
		}
		return fmt.Errorf("the web root %s has no index.html; %s", shown, fix)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("index.html in the web root %s cannot be read (permission denied); %s", shown, fix)
	case err != nil:
		// os.Root refuses a symlink that leaves the root.
		return fmt.Errorf("index.html in the web root %s points outside the web root, which is never served; %s", shown, fix)
	case !ist.Mode().IsRegular():
		return fmt.Errorf("index.html in the web root %s is not a regular file; %s", shown, fix)
	}
	idx, err := root.Open("index.html")
	if err != nil {
		return fmt.Errorf("index.html in the web root %s cannot be read (%v); %s", shown, err, fix)
	}
	idx.Close()
	return nil
}

// Handler serves the UI. index.html and other files are revalidated on
// every load (no-cache) so an upgraded server never serves a stale UI.
// Dotfiles, anything that cannot be opened inside the root (a symlink out
// of it) and directories without an index.html are 404.
func Handler(files fs.FS) http.Handler {
	fsrv := http.FileServer(http.FS(files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if !servable(files, r.URL.Path) {
			http.NotFound(w, r)
			return
		}
		fsrv.ServeHTTP(w, r)
	})
}

// servable reports whether the URL path names something the UI may serve:
// no segment starts with ".", the target opens inside the root, and a
// directory has an index.html that does too.
func servable(files fs.FS, urlPath string) bool {
	if !strings.HasPrefix(urlPath, "/") {
		urlPath = "/" + urlPath
	}
	// Segments are checked before cleaning so "/a/../.git" is refused too.
	for _, seg := range strings.Split(urlPath, "/") {
		if strings.HasPrefix(seg, ".") {
			return false
		}
	}
	name := strings.TrimPrefix(path.Clean(urlPath), "/")
	if name == "" {
		name = "."
	}
	st, err := fs.Stat(files, name)
	if err != nil {
		return false
	}
	if !st.IsDir() {
		return st.Mode().IsRegular()
	}
	ist, err := fs.Stat(files, path.Join(name, "index.html"))
	return err == nil && ist.Mode().IsRegular()
}

// Index serves the UI's page (index.html, with Handler's headers) whatever
// the request path: mount it on GET /{path}/ so that a link to a path opens
// the UI on it. The page picks its path from location.pathname and loads
// its assets from /, so nothing else needs mapping.
func Index(files fs.FS) http.Handler {
	h := Handler(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/"
		r2.URL.RawPath = ""
		h.ServeHTTP(w, r2)
	})
}
