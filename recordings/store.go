// Package recordings records paths to fragmented MP4 files (remuxed, never
// re-encoded) and manages them on disk: a Recorder per recorded path
// writes into the Store, which names, finalizes, lists, retains and
// serves the files.
//
// Layout (flat, as the original icey-server's): <dir>/<path>-<UTC
// start>.mp4, e.g. main-2026-11-30T15-04-05.000Z.mp4; a file being written
// is <name>.part and is renamed when finalized, so every *.mp4 is
// complete.
package recordings

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Sentinel errors.
var (
	// ErrNotFound: no such recording (HTTP 404).
	ErrNotFound = errors.New("recordings: not found")
	// ErrActive: the recording is being written (it cannot be deleted).
	ErrActive = errors.New("recordings: being written")
)

// Extensions of finalized and in-progress files.
const (
	Ext     = ".mp4"
	PartExt = ".mp4.part"
)

// timeLayout is the UTC start time in a file name (colons are not
// portable in file names).
const timeLayout = "2006-01-02T15-04-05.000Z"

// StoreConfig configures a Store.
type StoreConfig struct {
	// Dir holds the recordings (created if missing).
	Dir string
	// MaxAge deletes finalized recordings older than this (0: keep).
	MaxAge time.Duration
	// MaxTotalBytes deletes the oldest finalized recordings while the
	// total exceeds it (0: no limit).
	MaxTotalBytes int64
	// Repair, when set, is applied at open to every leftover .part file
	// (a recording cut short by a crash) before it is renamed to .mp4:
	// it truncates the file to its last complete fragment.
	Repair func(partFile string) error
}

// Store is a directory of recordings.
type Store struct {
	cfg StoreConfig
	log *slog.Logger

	mu     sync.Mutex
	active map[string]bool // names (without .part) being written
}

// OpenStore opens (creating it if needed) the recordings directory.
func OpenStore(cfg StoreConfig, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" {
		return nil, errors.New("recordings: no directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	return &Store{cfg: cfg, log: log.With("module", "recordings"), active: map[string]bool{}}, nil
}

// Dir is the recordings directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// FileName is the name of path's recording started at start.
func FileName(path string, start time.Time) string {
	return path + "-" + start.UTC().Format(timeLayout) + Ext
}

// ParseName splits a recording's file name into its path and start time.
func ParseName(name string) (path string, start time.Time, ok bool) {
	base, found := strings.CutSuffix(name, Ext)
	if !found || len(base) < len(timeLayout)+2 {
		return "", time.Time{}, false
	}
	i := len(base) - len(timeLayout)
	if base[i-1] != '-' {
		return "", time.Time{}, false
	}
	t, err := time.Parse(timeLayout, base[i:])
	if err != nil {
		return "", time.Time{}, false
	}
	return base[:i-1], t, true
}

// Create starts a recording of path: it creates <name>.part (refusing to
// overwrite anything) and marks it active until Finalize or Discard. The
// returned name is the final file name.
func (s *Store) Create(path string, start time.Time) (name string, f *os.File, err error) {
	name = FileName(path, start)
	f, err = os.OpenFile(filepath.Join(s.cfg.Dir, name+".part"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("recordings: %w", err)
	}
	s.mu.Lock()
	s.active[name] = true
	s.mu.Unlock()
	return name, f, nil
}

// Finalize renames a recording's .part file to its final name and
// unmarks it. The caller has closed the file.
func (s *Store) Finalize(name string) error {
	defer s.release(name)
	part := filepath.Join(s.cfg.Dir, name+".part")
	if err := os.Rename(part, filepath.Join(s.cfg.Dir, name)); err != nil {
		return fmt.Errorf("recordings: finalizing %s: %w", name, err)
	}
	return nil
}

// Discard removes a recording's .part file (nothing worth keeping was
// written) and unmarks it. The caller has closed the file.
func (s *Store) Discard(name string) {
	defer s.release(name)
	_ = os.Remove(filepath.Join(s.cfg.Dir, name+".part"))
}

func (s *Store) release(name string) {
	s.mu.Lock()
	delete(s.active, name)
	s.mu.Unlock()
}

// Active reports whether name is being written.
func (s *Store) Active(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[name]
}
