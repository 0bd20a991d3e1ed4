package recordings

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/icey/icey-server/media"
)

// ClipFragmentDuration is how much media each fragment of a clip holds.
const ClipFragmentDuration = time.Second

// Clip writes one short recording (an event clip) with the Recorder's own
// muxer: fragmented MP4, H.264 and Opus remuxed from the stream's units
// (never re-encoded), starting at the first video keyframe written (or at
// the first Opus frame for an audio-only stream), written to <name>.part
// and renamed to <name> by Close. The caller feeds it the units it wants
// in publication order (e.g. a stream's Ring.Units for the pre-roll, then
// live units from a subscriber). Not safe for concurrent use.
type Clip struct {
	store *Store
	name  string
	rec   *Recorder
	w     *writer
	part  *os.File // the pre-created .part, until the muxer opens it

	events []Event
	err    error // the first write error (the clip ended there)
	done   bool
}

// ClipResult is what Clip.Close produced.
type ClipResult struct {
	// Name is the finalized file's name (empty when nothing recordable
	// was written: the .part was discarded).
	Name string
	// Bytes and Duration are the file's size and media duration.
	Bytes    int64
	Duration time.Duration
	// More lists further files, when the codec parameters changed within
	// the clip (the muxer starts a new file then, as a Recorder does).
	More []Event
}

// CreateClip creates path's clip named FileName(path, start) (trying the
// next milliseconds when that name is taken) in the store: the .part file
// exists when it returns, so Name can be announced at once. st is the
// clipped stream (its tracks tell the Opus channel count). log may be nil.
func (s *Store) CreateClip(path string, start time.Time, st *media.Stream, log *slog.Logger) (*Clip, error) {
	var (
		name string
		f    *os.File
		err  error
	)
	for i := range 20 {
		name, f, err = s.Create(path, start.Add(time.Duration(i)*time.Millisecond))
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	c := &Clip{store: s, name: name, part: f}
	c.rec = NewRecorder(RecorderConfig{
		Path:             path,
		Stream:           st,
		Store:            s,
		SegmentDuration:  1<<63 - 1,
		FragmentDuration: ClipFragmentDuration,
		OnEvent:          func(e Event) { c.events = append(c.events, e) },
	}, log)
	c.rec.log = c.rec.log.With("clip", name)
	c.rec.create = func(path string, t time.Time) (string, recFile, error) {
		if c.part != nil {
			f := c.part
			c.part = nil
			return c.name, f, nil
		}
		n, f, err := s.Create(path, t)
		if err != nil {
			return "", nil, err
		}
		return n, f, nil
	}
	c.w = &writer{r: c.rec}
	return c, nil
}

// Name is the clip's final file name.
func (c *Clip) Name() string { return c.name }

// Write muxes one unit: video units before the first keyframe carrying
// SPS and PPS are skipped, as is audio before it, video other than H.264
// and audio other than Opus (a clip of such a stream is discarded). After a write error the clip is finalized up to its last
// complete fragment and further writes are ignored; the error is
// returned once, and again by Close.
func (c *Clip) Write(u *media.Unit) (err error) {
	if c.done || c.err != nil {
		return nil
	}
	if u.Kind == media.KindVideo && u.Codec != media.CodecH264 && u.Codec != "" {
		return nil // the muxer writes H.264 only (as the Recorder)
	}
	defer func() {
		// Media is untrusted input: a muxer bug must not take the server down.
		if p := recover(); p != nil {
			err = c.w.fail(fmt.Errorf("recordings: clip: internal error: %v", p))
		}
		if err != nil {
			c.err = err
		}
	}()
	return c.w.unit(u)
}

// Close flushes and finalizes the clip (renaming the .part) or discards
// it when it holds no sample, and reports what was written.
func (c *Clip) Close() (ClipResult, error) {
	if !c.done {
		c.done = true
		if err := c.w.closeFile(); err != nil && c.err == nil {
			c.err = err
		}
		if c.part != nil { // never opened: nothing recordable was written
			_ = c.part.Close()
			c.part = nil
			c.store.Discard(c.name)
		}
	}
	var res ClipResult
	for _, e := range c.events {
		if e.Kind != EventFinalized {
			continue
		}
		if res.Name == "" {
			res.Name, res.Bytes, res.Duration = e.Name, e.Bytes, e.Duration
		} else {
			res.More = append(res.More, e)
		}
	}
	var rep reportedError
	if errors.As(c.err, &rep) {
		return res, rep.error
	}
	return res, c.err
}
