// Package web embeds the browser UI so the binary serves it with no files
// on disk. A web root directory can override it (for UI development).
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"os"
)

//go:embed static
var static embed.FS

// FS returns the UI files: the embedded copy, or dir when non-empty.
func FS(dir string) (fs.FS, error) {
	if dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return nil, err
		}
		return os.DirFS(dir), nil
	}
	return fs.Sub(static, "static")
}

// Handler serves the UI. index.html and other files are revalidated on
// every load (no-cache) so an upgraded server never serves a stale UI.
func Handler(files fs.FS) http.Handler {
	fsrv := http.FileServer(http.FS(files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		fsrv.ServeHTTP(w, r)
	})
}
