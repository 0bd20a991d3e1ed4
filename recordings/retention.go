package recordings

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"
)

// DefaultRetentionInterval is how often RunRetention sweeps by default.
const DefaultRetentionInterval = time.Minute

// Sweep applies retention at now: it deletes the finalized recordings
// whose end is more than MaxAge before now, then the oldest (by start)
// while all recordings on disk, finalized and being written, total more
// than MaxTotalBytes. A file being written is never deleted (it still
// counts towards the total). It returns the names deleted.
func (s *Store) Sweep(now time.Time) (deleted []string, err error) {
	if s.cfg.MaxAge <= 0 && s.cfg.MaxTotalBytes <= 0 {
		return nil, nil
	}
	all, err := s.scan()
	if err != nil {
		return nil, err
	}
	var total int64
	var candidates []Info
	for _, in := range all {
		total += in.Bytes
		if in.Complete && !s.Active(in.Name) {
			candidates = append(candidates, in)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Start.Before(candidates[j].Start) })
	var errs []error
	remove := func(in Info, reason string) {
		if err := s.remove(in.Name); err != nil {
			if !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
			return
		}
		total -= in.Bytes
		deleted = append(deleted, in.Name)
		s.log.Info("recording deleted by retention", "path", in.Path, "name", in.Name, "bytes", in.Bytes, "reason", reason)
	}
	kept := candidates[:0:0]
	for _, in := range candidates {
		if s.cfg.MaxAge > 0 && now.Sub(in.End) > s.cfg.MaxAge {
			remove(in, "maxAge")
			continue
		}
		kept = append(kept, in)
	}
	for _, in := range kept {
		if s.cfg.MaxTotalBytes <= 0 || total <= s.cfg.MaxTotalBytes {
			break
		}
		remove(in, "maxTotalBytes")
	}
	return deleted, errors.Join(errs...)
}

// RunRetention sweeps now and then every interval (DefaultRetentionInterval
// when every <= 0) until ctx ends.
func (s *Store) RunRetention(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultRetentionInterval
	}
	sweep := func() {
		if _, err := s.Sweep(time.Now()); err != nil {
			s.log.Warn("recordings retention", "err", err)
		}
	}
	sweep()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sweep()
		}
	}
}

// Delete removes path's finalized recording name. ErrNotFound: the name is
// not a recording of path, or no such file; ErrActive: it is being
// written.
func (s *Store) Delete(path, name string) error {
	p, _, ok := parseRecording(name)
	if !ok || p != path {
		return ErrNotFound
	}
	if s.Active(name) {
		return ErrActive
	}
	if err := s.remove(name); err != nil {
		return err
	}
	s.log.Info("recording deleted", "path", path, "name", name)
	return nil
}

// remove deletes the regular file name in the directory (never through a
// symlink).
func (s *Store) remove(name string) error {
	root, err := os.OpenRoot(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("recordings: %w", err)
	}
	defer root.Close()
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("recordings: %w", err)
	}
	if err := root.Remove(name); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotFound
		}
		return fmt.Errorf("recordings: deleting %s: %w", name, err)
	}
	return nil
}

// Writable checks that recordings can be written: it creates, writes and
// removes a probe file in the directory (for the `recordings` check).
func (s *Store) Writable() error {
	f, err := os.CreateTemp(s.cfg.Dir, ".icey-write-probe-*")
	if err != nil {
		return fmt.Errorf("recordings: directory not writable: %w", err)
	}
	name := f.Name()
	_, werr := f.Write([]byte("probe"))
	cerr := f.Close()
	rerr := os.Remove(name)
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("recordings: directory not writable: %w", err)
	}
	if rerr != nil {
		return fmt.Errorf("recordings: removing the write probe: %w", rerr)
	}
	return nil
}
