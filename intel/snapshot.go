package intel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // DecodeConfig of JPEG snapshots
	_ "image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
	"github.com/icey/icey-server/media/tsfeed"
	"github.com/icey/icey-server/recordings"
)

// SnapshotTimeout bounds one snapshot's ffmpeg child.
const SnapshotTimeout = 5 * time.Second

// maxSnapshotBytes bounds the image read from ffmpeg.
const maxSnapshotBytes = 64 << 20

// URL prefixes under which the artifacts are served (see
// recordings.Artifacts).
const (
	SnapshotsURLPrefix = recordings.SnapshotsPrefix
	ClipsURLPrefix     = recordings.ClipsPrefix
)

// ErrNoFrame is returned by Snapshot when the units hold no decodable
// video frame.
var ErrNoFrame = errors.New("intel: no video frame to snapshot")

// ErrRateLimited is returned by Snapshots.Take within MinInterval of the
// path's previous snapshot.
var ErrRateLimited = errors.New("intel: snapshot skipped (minimum interval)")

// Snapshot decodes the video frame whose PTS is nearest at and writes it
// as an image to path (PNG, or JPEG when path ends in .jpg or .jpeg): a
// temporary file in path's directory renamed into place, so path is
// complete or absent. units are the path's units from a keyframe on
// (st.Ring().Units(at)); they are fed to an ffmpeg child (ffmpeg is its
// binary) as MPEG-TS on its stdin, H.264 or H.265; audio is ignored. The
// child is bounded by SnapshotTimeout and ctx. It returns the image's
// size.
func Snapshot(ctx context.Context, ffmpeg string, units []*media.Unit, at time.Duration, path string) (width, height int, err error) {
	// The frame nearest at, and the units needed to decode it: up to that
	// one, plus some after it for reordered (B-frame) streams.
	best, codec := -1, ""
	for i, u := range units {
		if u.Kind != media.KindVideo {
			continue
		}
		if codec == "" {
			if !u.Keyframe {
				continue // nothing decodes before the first keyframe
			}
			codec = u.Codec
		}
		if u.Codec != codec {
			break
		}
		if best < 0 || snapAbs(u.PTS-at) < snapAbs(units[best].PTS-at) {
			best = i
		}
	}
	if best < 0 {
		return 0, 0, ErrNoFrame
	}
	target := units[best].PTS
	feed := units
	extra := 0
	for i := best + 1; i < len(units); i++ {
		if units[i].Kind == media.KindVideo {
			if extra++; extra > 16 || units[i].Keyframe {
				feed = units[:i]
				break
			}
		}
	}

	jpeg := strings.HasSuffix(path, ".jpg") || strings.HasSuffix(path, ".jpeg")
	codecArgs := []string{"-c:v", "png", "-pix_fmt", "rgb24"}
	if jpeg {
		codecArgs = []string{"-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"}
	}
	// With -copyts the select filter sees the fed timestamps (tsfeed.Ticks).
	ts := strconv.FormatFloat(float64(tsfeed.Ticks(target))/90000-0.0005, 'f', 6, 64)
	args := []string{"-hide_banner", "-nostats", "-loglevel", "error",
		"-copyts", "-f", "mpegts", "-i", "pipe:0",
		"-map", "0:v:0", "-an", "-sn", "-dn",
		"-vf", "select=gte(t\\," + ts + ")", "-fps_mode", "passthrough", "-frames:v", "1"}
	args = append(args, codecArgs...)
	args = append(args, "-f", "image2pipe", "pipe:1")

	ctx, cancel := context.WithTimeout(ctx, SnapshotTimeout)
	defer cancel()
	stderr := transcode.NewStderr(6, nil, nil)
	cmd := transcode.Command(ctx, ffmpeg, args)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("intel: snapshot: start ffmpeg: %w", err)
	}
	fed := make(chan error, 1)
	go func() {
		fed <- feedTS(stdin, codec, feed)
		_ = stdin.Close()
	}()
	var img bytes.Buffer
	_, rerr := io.Copy(&img, io.LimitReader(stdout, maxSnapshotBytes))
	_, _ = io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	<-fed // a write error is the child's exit (after its one frame): ignored
	stderr.Flush()
	if ctx.Err() != nil && img.Len() == 0 {
		return 0, 0, fmt.Errorf("intel: snapshot: %w%s", ctx.Err(), stderr.Summary())
	}
	if rerr != nil || werr != nil || img.Len() == 0 {
		why := "no frame decoded"
		if werr != nil {
			why = werr.Error()
		} else if rerr != nil {
			why = rerr.Error()
		}
		return 0, 0, fmt.Errorf("intel: snapshot: ffmpeg: %s%s", why, stderr.Summary())
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(img.Bytes()))
	if err != nil {
		return 0, 0, fmt.Errorf("intel: snapshot: ffmpeg's image: %w", err)
	}
	if err := writeAtomic(path, img.Bytes()); err != nil {
		return 0, 0, err
	}
	return cfg.Width, cfg.Height, nil
}

// feedTS writes the video units as MPEG-TS.
func feedTS(w io.Writer, codec string, units []*media.Unit) error {
	tw, err := tsfeed.New(w, codec, false)
	if err != nil {
		return err
	}
	for _, u := range units {
		if u.Kind != media.KindVideo {
			continue
		}
		if err := tw.Write(u); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// writeAtomic writes b to a temporary file beside path and renames it.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return fmt.Errorf("intel: snapshot: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("intel: snapshot: %w", err)
	}
	return nil
}

func snapAbs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// SnapshotInfo describes a snapshot written by Snapshots.Take.
type SnapshotInfo struct {
	// File is the image's path on disk; Name its file name
	// (<path>-<UTC time>.png); URL where it is served
	// (SnapshotsURLPrefix + <path>/<name>).
	File, Name, URL string
	// PTS is the media time asked for.
	PTS           time.Duration
	Width, Height int
	Size          int64
}

// Snapshots takes rate-limited snapshots into one directory: at most one
// per path per MinInterval (wall clock). Safe for concurrent use.
type Snapshots struct {
	dir         string
	minInterval time.Duration
	ffmpeg      string
	log         *slog.Logger

	mu     sync.Mutex
	last   map[string]time.Time // path -> time of its latest snapshot (taken or under way)
	closed bool
	taken  atomic.Uint64
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// NewSnapshots returns a Snapshots writing into dir (created when
// missing) with ffmpeg (a binary path, see transcode.FFmpegPath). A
// minInterval <= 0 means no limit. log may be nil.
func NewSnapshots(dir string, minInterval time.Duration, ffmpeg string, log *slog.Logger) (*Snapshots, error) {
	if dir == "" {
		return nil, errors.New("intel: snapshots: no directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("intel: snapshots: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Snapshots{dir: dir, minInterval: max(minInterval, 0), ffmpeg: ffmpeg,
		log: log.With("module", "intel"), last: map[string]time.Time{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Go takes pathName's snapshot of the frame nearest at in the background
// (units from st's ring): unless rate limited or closed (ok false), it
// returns at once the file's name and URL, where the image appears once
// written (a failure is logged). Close waits for it.
func (s *Snapshots) Go(pathName string, st *media.Stream, at time.Duration, now time.Time) (name, url string, ok bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", "", false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	r, ok := s.reserve(pathName, now)
	if !ok {
		s.wg.Done()
		return "", "", false
	}
	name = SnapshotName(pathName, now)
	units := st.Ring().Units(at)
	go func() {
		defer s.wg.Done()
		_, _ = s.take(s.ctx, r, units, at) // a failure is logged
	}()
	return name, SnapshotsURLPrefix + pathName + "/" + name, true
}

// Close refuses later Go calls and waits for the snapshots under way
// (each bounded by SnapshotTimeout).
func (s *Snapshots) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	s.cancel()
}

// Dir is the snapshots directory.
func (s *Snapshots) Dir() string { return s.dir }

// Taken counts the snapshots written.
func (s *Snapshots) Taken() uint64 { return s.taken.Load() }

// SnapshotName is the file name of pathName's snapshot taken at t.
func SnapshotName(pathName string, t time.Time) string {
	return strings.TrimSuffix(recordings.FileName(pathName, t), recordings.Ext) + ".png"
}

// Due reports whether a snapshot of pathName at now would be taken (it
// reserves nothing: a caller can skip fetching units).
func (s *Snapshots) Due(pathName string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, ok := s.last[pathName]
	return !ok || now.Sub(last) >= s.minInterval || now.Before(last)
}

// Take writes pathName's frame nearest at (see Snapshot) as
// <dir>/<pathName>-<UTC now>.png, unless the path's previous snapshot was
// taken less than MinInterval before now (ErrRateLimited). A failed
// snapshot does not count against the interval. pathName must be a valid
// path name ([A-Za-z0-9._-]).
func (s *Snapshots) Take(ctx context.Context, pathName string, units []*media.Unit, at time.Duration, now time.Time) (SnapshotInfo, error) {
	r, ok := s.reserve(pathName, now)
	if !ok {
		return SnapshotInfo{}, ErrRateLimited
	}
	return s.take(ctx, r, units, at)
}

// reservation is a snapshot counted against its path's interval.
type reservation struct {
	path      string
	now, prev time.Time
	had       bool
}

// reserve counts a snapshot of path at now, unless within the interval.
func (s *Snapshots) reserve(pathName string, now time.Time) (reservation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, had := s.last[pathName]
	if had && now.Sub(prev) < s.minInterval && !now.Before(prev) {
		return reservation{}, false
	}
	s.last[pathName] = now
	return reservation{path: pathName, now: now, prev: prev, had: had}, true
}

func (s *Snapshots) take(ctx context.Context, r reservation, units []*media.Unit, at time.Duration) (SnapshotInfo, error) {
	pathName, now, prev, had := r.path, r.now, r.prev, r.had
	name := SnapshotName(pathName, now)
	file := filepath.Join(s.dir, name)
	w, h, err := Snapshot(ctx, s.ffmpeg, units, at, file)
	if err != nil {
		s.mu.Lock()
		if s.last[pathName].Equal(now) {
			if had {
				s.last[pathName] = prev
			} else {
				delete(s.last, pathName)
			}
		}
		s.mu.Unlock()
		s.log.Warn("snapshot failed", "path", pathName, "err", err)
		return SnapshotInfo{}, err
	}
	info := SnapshotInfo{File: file, Name: name, URL: SnapshotsURLPrefix + pathName + "/" + name,
		PTS: at, Width: w, Height: h}
	if fi, err := os.Stat(file); err == nil {
		info.Size = fi.Size()
	}
	s.taken.Add(1)
	s.log.Debug("snapshot", "path", pathName, "file", name, "pts", at)
	return info, nil
}
