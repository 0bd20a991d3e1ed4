package recordings

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Info describes one recording on disk.
type Info struct {
	// Path is the recorded path's name.
	Path string `json:"path"`
	// Name is the final file name (<path>-<UTC start>.mp4), also for a
	// file still being written.
	Name string `json:"name"`
	// Start is the UTC start time from the name; End the file's last
	// modification (a finalized file is never written again).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// DurationSec is End − Start, in seconds.
	DurationSec float64 `json:"durationSec"`
	Bytes       int64   `json:"bytes"`
	// Complete is false for a .part file: one being written, or one left
	// by a crash that RecoverParts has not finalized yet.
	Complete bool `json:"complete"`
	// URL downloads the file: /recordings/<path>/<name>.
	URL string `json:"url"`
}

// Filter selects recordings. Zero fields select everything.
type Filter struct {
	// Path keeps only this path's recordings.
	Path string
	// From and To keep the recordings that overlap [From, To]: those that
	// end at or after From and start at or before To.
	From, To time.Time
}

// listPathNameRE is the set of path names (config's rule): a name outside it
// is not a recording this server wrote.
var listPathNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// parseRecording checks that name is the canonical name of a recording
// (exactly what FileName produces for a valid path name) and splits it.
func parseRecording(name string) (path string, start time.Time, ok bool) {
	path, start, ok = ParseName(name)
	if !ok || !listPathNameRE.MatchString(path) || FileName(path, start) != name {
		return "", time.Time{}, false
	}
	return path, start, true
}

// fileURL is where Handler serves path's recording name.
func fileURL(path, name string) string { return "/recordings/" + path + "/" + name }

// List returns the recordings matching f, newest first: finalized *.mp4
// files and .part files (Complete false). Anything not named like a
// recording, and anything that is not a regular file (symlinks,
// directories), is ignored.
func (s *Store) List(f Filter) ([]Info, error) {
	all, err := s.scan()
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(all))
	for _, in := range all {
		if f.Path != "" && in.Path != f.Path {
			continue
		}
		if !f.From.IsZero() && in.End.Before(f.From) {
			continue
		}
		if !f.To.IsZero() && in.Start.After(f.To) {
			continue
		}
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Start.Equal(b.Start) {
			return a.Start.After(b.Start)
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Complete && !b.Complete
	})
	return out, nil
}

// Stats counts the recordings on disk (finalized and being written) and
// their bytes.
func (s *Store) Stats() (files int, bytes int64) {
	all, err := s.scan()
	if err != nil {
		return 0, 0
	}
	for _, in := range all {
		bytes += in.Bytes
	}
	return len(all), bytes
}

// scan reads the directory without following symlinks (DirEntry.Info is
// an lstat).
func (s *Store) scan() ([]Info, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	out := make([]Info, 0, len(entries))
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		name, complete := e.Name(), true
		if base, ok := strings.CutSuffix(name, ".part"); ok {
			name, complete = base, false
		}
		path, start, ok := parseRecording(name)
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue // gone (finalized, deleted) since ReadDir
		}
		out = append(out, infoOf(path, name, start, fi, complete))
	}
	return out, nil
}

func infoOf(path, name string, start time.Time, fi fs.FileInfo, complete bool) Info {
	end := fi.ModTime().UTC()
	if end.Before(start) {
		end = start
	}
	return Info{
		Path:        path,
		Name:        name,
		Start:       start,
		End:         end,
		DurationSec: math.Round(end.Sub(start).Seconds()*1000) / 1000,
		Bytes:       fi.Size(),
		Complete:    complete,
		URL:         fileURL(path, name),
	}
}

// RecoverParts finalizes the .part files a crash left behind (those not
// being written): each is repaired with StoreConfig.Repair, when set
// (truncated to its last complete fragment; its modification time, the
// recording's end, is kept) and renamed to its final name. A part whose
// repair fails is renamed to <name>.broken and logged, never deleted. Call
// it once at startup, before anything records. It returns the final names
// of the recovered files; the error reports what could not be renamed.
func (s *Store) RecoverParts() (recovered []string, err error) {
	root, err := os.OpenRoot(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	defer root.Close()
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".part")
		if !ok || !e.Type().IsRegular() || s.Active(name) {
			continue
		}
		if _, _, ok := parseRecording(name); !ok {
			continue
		}
		part := e.Name()
		fi, err := root.Lstat(part)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if _, err := root.Lstat(name); err == nil {
			s.log.Warn("interrupted recording not recovered: its final name exists", "file", part)
			continue
		}
		if s.cfg.Repair != nil {
			if rerr := s.cfg.Repair(filepath.Join(s.cfg.Dir, part)); rerr != nil {
				broken := name + ".broken"
				if err := root.Rename(part, broken); err != nil {
					errs = append(errs, fmt.Errorf("recordings: %s: %w", part, err))
					continue
				}
				s.log.Error("interrupted recording could not be repaired; kept", "file", broken, "err", rerr)
				continue
			}
			// Repair wrote the file: its mtime, the recording's end, is
			// restored.
			_ = root.Chtimes(part, time.Time{}, fi.ModTime())
		}
		if err := root.Rename(part, name); err != nil {
			errs = append(errs, fmt.Errorf("recordings: %s: %w", part, err))
			continue
		}
		s.log.Info("recovered interrupted recording", "file", name)
		recovered = append(recovered, name)
	}
	return recovered, errors.Join(errs...)
}
