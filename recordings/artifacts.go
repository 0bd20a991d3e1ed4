package recordings

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Artifact URL prefixes (what intel's SnapshotsURLPrefix and
// ClipsURLPrefix announce).
const (
	SnapshotsPrefix = "/recordings/snapshots/"
	ClipsPrefix     = "/recordings/clips/"
)

// artifactTypes are the served artifact extensions and their types.
var artifactTypes = map[string]string{".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg"}

// ArtifactsConfig configures an Artifacts directory.
type ArtifactsConfig struct {
	// Dir holds the artifacts (created if missing).
	Dir string
	// Prefix is the URL prefix its files are served under, with both
	// slashes: SnapshotsPrefix or ClipsPrefix.
	Prefix string
	// MaxAge and MaxTotalBytes are the retention rules, as StoreConfig's
	// (0: none).
	MaxAge        time.Duration
	MaxTotalBytes int64
}

// Artifacts is a flat directory of intelligence artifacts: event clips
// (<path>-<UTC time>.mp4, written by Store.CreateClip on a Store opened on
// the same directory) and snapshots (<path>-<UTC time>.png or .jpg,
// written to a temporary name and renamed). It lists, retains and serves
// them as Store does recordings, under its own URL prefix.
type Artifacts struct {
	cfg ArtifactsConfig
	log *slog.Logger
}

// OpenArtifacts opens (creating it if needed) an artifacts directory.
func OpenArtifacts(cfg ArtifactsConfig, log *slog.Logger) (*Artifacts, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" {
		return nil, errors.New("recordings: no artifacts directory")
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/") || len(cfg.Prefix) < 3 {
		return nil, fmt.Errorf("recordings: bad artifacts URL prefix %q", cfg.Prefix)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	return &Artifacts{cfg: cfg, log: log.With("module", "recordings", "artifacts", cfg.Prefix)}, nil
}

// Dir is the artifacts directory.
func (a *Artifacts) Dir() string { return a.cfg.Dir }

// ListURL is where Handler serves the list: "/api" + Prefix without its
// last slash (/api/recordings/clips, /api/recordings/snapshots).
func (a *Artifacts) ListURL() string { return "/api" + strings.TrimSuffix(a.cfg.Prefix, "/") }

// parseArtifact checks that name is the canonical name of an artifact
// (what FileName gives for a valid path name, with a served extension)
// and splits it.
func parseArtifact(name string) (path string, start time.Time, ok bool) {
	ext := filepath.Ext(name)
	if artifactTypes[ext] == "" {
		return "", time.Time{}, false
	}
	return parseRecording(strings.TrimSuffix(name, ext) + Ext)
}

// HandlesPath reports whether Handler serves urlPath: the list URL and
// Prefix{path}/{name}. A recording of a path named like the prefix's last
// segment (/recordings/clips/clips-….mp4) is not one of them: it has one
// segment after the prefix, an artifact two. Route these to Handler
// before the recordings' Handler.
func (a *Artifacts) HandlesPath(urlPath string) bool {
	if urlPath == a.ListURL() {
		return true
	}
	rest, ok := strings.CutPrefix(urlPath, a.cfg.Prefix)
	return ok && strings.Contains(rest, "/")
}

// List returns the finalized artifacts, of path only when path is not
// empty, newest first (Complete is always true; URL is under Prefix).
func (a *Artifacts) List(path string) ([]Info, error) {
	all, err := a.scan()
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, in := range all {
		if path == "" || in.Path == path {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.After(out[j].Start)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// scan lists the finalized artifacts (temporary and .part files, other
// names, symlinks and directories are ignored).
func (a *Artifacts) scan() ([]Info, error) {
	entries, err := os.ReadDir(a.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	out := make([]Info, 0, len(entries))
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		path, start, ok := parseArtifact(e.Name())
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		in := infoOf(path, e.Name(), start, fi, true)
		in.URL = a.cfg.Prefix + path + "/" + e.Name()
		out = append(out, in)
	}
	return out, nil
}

// Sweep applies retention at now, as Store.Sweep: artifacts older than
// MaxAge go, then the oldest while the total exceeds MaxTotalBytes. Files
// being written (.part, temporary) are never deleted. It returns the
// names deleted.
func (a *Artifacts) Sweep(now time.Time) (deleted []string, err error) {
	if a.cfg.MaxAge <= 0 && a.cfg.MaxTotalBytes <= 0 {
		return nil, nil
	}
	all, err := a.scan()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, in := range all {
		total += in.Bytes
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Start.Before(all[j].Start) })
	root, err := os.OpenRoot(a.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	defer root.Close()
	var errs []error
	for _, in := range all {
		old := a.cfg.MaxAge > 0 && now.Sub(in.End) > a.cfg.MaxAge
		big := a.cfg.MaxTotalBytes > 0 && total > a.cfg.MaxTotalBytes
		if !old && !big {
			continue
		}
		if err := root.Remove(in.Name); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("recordings: deleting %s: %w", in.Name, err))
			}
			continue
		}
		total -= in.Bytes
		deleted = append(deleted, in.Name)
		reason := "maxAge"
		if !old {
			reason = "maxTotalBytes"
		}
		a.log.Info("artifact deleted by retention", "path", in.Path, "name", in.Name, "bytes", in.Bytes, "reason", reason)
	}
	return deleted, errors.Join(errs...)
}

// RunRetention sweeps now and then every interval (DefaultRetentionInterval
// when every <= 0) until ctx ends.
func (a *Artifacts) RunRetention(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultRetentionInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := a.Sweep(time.Now()); err != nil {
			a.log.Warn("artifacts retention", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Handler serves the artifacts with the recordings' rules (token, origin,
// Range, ETag, canonical names only, regular files in the directory only):
//
//	GET  /api{Prefix without its last slash}?path=   the list (JSON, newest first)
//	GET|HEAD {Prefix}{path}/{name}                   the file (video/mp4, image/png, image/jpeg)
//
// Route the requests for which HandlesPath is true to it, before the
// recordings' Handler and before http.ServeMux cleans the path.
func (a *Artifacts) Handler(o HandlerOptions) http.Handler {
	return &artifactHandler{a: a, o: o}
}

type artifactHandler struct {
	a *Artifacts
	o HandlerOptions
}

func (h *artifactHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.o.admit(w, r) {
		return
	}
	p := r.URL.EscapedPath()
	if p == h.a.ListURL() {
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		list, err := h.a.List(r.URL.Query().Get("path"))
		if err != nil {
			h.a.log.Warn("listing artifacts", "err", err)
			replyError(w, http.StatusInternalServerError, "recordings_unavailable")
			return
		}
		if list == nil {
			list = []Info{}
		}
		replyJSON(w, http.StatusOK, list)
		return
	}
	rest, ok := strings.CutPrefix(p, h.a.cfg.Prefix)
	if !ok {
		replyError(w, http.StatusNotFound, "not_found")
		return
	}
	ep, en, found := strings.Cut(rest, "/")
	path, err1 := url.PathUnescape(ep)
	name, err2 := url.PathUnescape(en)
	if !found || strings.Contains(en, "/") || err1 != nil || err2 != nil {
		replyError(w, http.StatusNotFound, "not_found")
		return
	}
	if ap, _, ok := parseArtifact(name); !ok || ap != path {
		replyError(w, http.StatusNotFound, "not_found")
		return
	}
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	serveFile(w, r, h.a.cfg.Dir, name, artifactTypes[filepath.Ext(name)])
}
