package intel

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/recordings"
)

// ClipIdleTimeout ends an open clip whose stream delivered nothing for
// this long (the source stalled before the clip's end).
const ClipIdleTimeout = 5 * time.Second

// ClipInfo describes a finalized clip.
type ClipInfo struct {
	// Path is the clip's file on disk; Name its file name
	// (<path>-<UTC time>.mp4); URL where it is served (ClipsURLPrefix +
	// <path>/<name>).
	Path, Name, URL string
	// Start and End are the media times (stream PTS) of the clip's first
	// and last units.
	Start, End time.Duration
	// Size is the file's size in bytes.
	Size int64
}

// Clipper cuts a path's event clips: MP4 remuxed from the stream's
// compressed units (recordings.Clip), from the last keyframe at or before
// the event − PreRoll (from the stream's ring) to the event + PostRoll
// (from a subscriber), extended while open by later events. Safe for
// concurrent use.
type Clipper struct {
	cfg    ClipConfig
	st     *media.Stream
	path   string
	store  *recordings.Store
	onClip func(ClipInfo)
	log    *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	open   *openClip // the clip that later events extend (nil: none)
	closed bool
	clips  uint64
}

type openClip struct {
	name      string
	end       time.Duration // media time the clip runs to
	finishing bool          // the writer passed end: no more extensions
}

// NewClipper returns pathName's clipper writing into cfg.Dir (created when
// missing). onClip (may be nil) is called from the clip's goroutine with
// each finalized clip. Negative PreRoll or PostRoll count as zero. log
// may be nil.
func NewClipper(cfg ClipConfig, st *media.Stream, pathName string, onClip func(ClipInfo), log *slog.Logger) (*Clipper, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.PreRoll, cfg.PostRoll = max(cfg.PreRoll, 0), max(cfg.PostRoll, 0)
	store, err := recordings.OpenStore(recordings.StoreConfig{Dir: cfg.Dir}, log)
	if err != nil {
		return nil, err
	}
	c := &Clipper{cfg: cfg, st: st, path: pathName, store: store, onClip: onClip,
		log: log.With("module", "intel", "path", pathName)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Clips counts the clips started.
func (c *Clipper) Clips() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clips
}

// Trigger reports an event at media time at (observed at wall time now,
// which names a new clip). While a clip is open the event extends it to
// at + PostRoll; otherwise a new clip starts. It returns the clip's file
// name and URL (the file appears there once finalized), or empty strings
// when no clip could be started (closed, or the directory failed).
func (c *Clipper) Trigger(at time.Duration, now time.Time) (name, url string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", ""
	}
	if o := c.open; o != nil && !o.finishing {
		o.end = max(o.end, at+c.cfg.PostRoll)
		return o.name, ClipsURLPrefix + c.path + "/" + o.name
	}
	clip, err := c.store.CreateClip(c.path, now, c.st, c.log)
	if err != nil {
		c.log.Warn("clip not started", "err", err)
		return "", ""
	}
	o := &openClip{name: clip.Name(), end: at + c.cfg.PostRoll}
	c.open = o
	c.clips++
	c.wg.Add(1)
	go c.run(clip, o, at-c.cfg.PreRoll)
	return o.name, ClipsURLPrefix + c.path + "/" + o.name
}

// Close finalizes the open clip (shortened to what was written) and waits
// for every clip's goroutine. Later Triggers do nothing.
func (c *Clipper) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// end returns the clip's end, or marks it finishing when pts is past it.
func (c *Clipper) past(o *openClip, pts time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pts > o.end {
		o.finishing = true
		if c.open == o {
			c.open = nil
		}
		return true
	}
	return false
}

func (c *Clipper) finish(o *openClip) {
	c.mu.Lock()
	o.finishing = true
	if c.open == o {
		c.open = nil
	}
	c.mu.Unlock()
}

// seqOf is a unit's first RTP sequence number (ok false without packets).
func seqOf(u *media.Unit) (uint16, bool) {
	if len(u.Packets) == 0 {
		return 0, false
	}
	return u.Packets[0].RTP.SequenceNumber, true
}

// run writes one clip: the ring's units from the keyframe at or before
// from, then live units until one passes the clip's end.
func (c *Clipper) run(clip *recordings.Clip, o *openClip, from time.Duration) {
	defer c.wg.Done()
	defer c.finish(o)
	var (
		first, last time.Duration
		wrote       bool
		stop        bool
	)
	write := func(u *media.Unit) {
		if stop {
			return
		}
		if c.past(o, u.PTS) {
			stop = true
			return
		}
		if !wrote && !(u.Kind == media.KindVideo && u.Keyframe) && c.st.Tracks().Video != nil {
			return // the clip starts at a keyframe
		}
		if err := clip.Write(u); err != nil {
			c.log.Warn("clip write failed", "clip", o.name, "err", err)
			stop = true
			return
		}
		if !wrote {
			first, wrote = u.PTS, true
		}
		last = max(last, u.PTS)
	}

	// Subscribe before reading the ring, so that nothing published in
	// between is missed; what both give is written once (by sequence
	// number per kind).
	sub, err := c.st.Subscribe("clip:"+o.name, media.SubscribeOptions{QueuePackets: recordings.RecorderQueuePackets})
	var lastSeq [2]uint16
	var haveSeq [2]bool
	for _, u := range c.st.Ring().Units(from) {
		write(u)
		if s, ok := seqOf(u); ok {
			lastSeq[u.Kind], haveSeq[u.Kind] = s, true
		}
	}
	if err == nil {
		buf := make([]*media.Unit, 64)
	read:
		for !stop {
			ctx, cancel := context.WithTimeout(c.ctx, ClipIdleTimeout)
			n, rerr := sub.Read(ctx, buf)
			cancel()
			if rerr != nil {
				if !errors.Is(rerr, context.DeadlineExceeded) && c.ctx.Err() == nil && !errors.Is(rerr, media.ErrClosed) {
					c.log.Warn("clip: reading the stream", "clip", o.name, "err", rerr)
				}
				break
			}
			for i, u := range buf[:n] {
				buf[i] = nil
				if u.FromCache {
					continue // the ring gave it
				}
				if s, ok := seqOf(u); ok && haveSeq[u.Kind] && int16(s-lastSeq[u.Kind]) <= 0 {
					continue // the ring gave it
				}
				write(u)
				if stop {
					clear(buf)
					break read
				}
			}
		}
		sub.Close()
	} else if !errors.Is(err, media.ErrClosed) {
		c.log.Warn("clip: subscribing", "clip", o.name, "err", err)
	}
	c.finish(o)

	res, err := clip.Close()
	if err != nil {
		c.log.Warn("clip failed", "clip", o.name, "err", err)
	}
	if res.Name == "" {
		if err == nil {
			c.log.Info("clip discarded: nothing recordable", "clip", o.name)
		}
		return
	}
	info := ClipInfo{Path: filepath.Join(c.store.Dir(), res.Name), Name: res.Name,
		URL: ClipsURLPrefix + c.path + "/" + res.Name, Start: first, End: last, Size: res.Bytes}
	c.log.Info("clip finalized", "clip", res.Name, "start", first, "end", last, "bytes", res.Bytes)
	if c.onClip != nil {
		c.onClip(info)
	}
}
