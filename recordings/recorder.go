package recordings

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/icey/icey-server/media"
)

// Event kinds emitted by a Recorder (the same strings as internal/events).
const (
	EventStarted   = "recording.started"
	EventFinalized = "recording.finalized"
	EventFailed    = "recording.failed"
)

// Defaults of RecorderConfig.
const (
	DefaultSegmentDuration  = time.Hour
	DefaultFragmentDuration = time.Second
	DefaultRetryInterval    = 5 * time.Second
	// RecorderQueuePackets bounds the recorder's subscriber queue: about
	// 20 s of a 8 Mb/s stream, so that a slow disk does not lose data.
	RecorderQueuePackets = 16384
)

// slack is how much earlier than due a file rotates or a fragment ends:
// frame times rounded to clock ticks or nanoseconds (30 frames of 1/30 s
// are 999999990 ns) must not push a rotation to the next keyframe.
const slack = 5 * time.Millisecond

// Timescales of the recorded tracks.
const (
	videoTimescale = 90000
	opusTimescale  = 48000
)

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	// Path is the recorded path's name (the files' name prefix).
	Path string
	// Stream is the path's stream.
	Stream *media.Stream
	// Store receives the files.
	Store *Store
	// SegmentDuration rotates files at the first keyframe after this long
	// (default 1 h).
	SegmentDuration time.Duration
	// FragmentDuration is how much media each moof+mdat fragment holds,
	// which is what a kill -9 may lose (default 1 s).
	FragmentDuration time.Duration
	// RetryInterval is the pause before recording again after a write
	// error (default 5 s).
	RetryInterval time.Duration
	// OnEvent, when set, receives the recorder's events. It is called from
	// the recorder's goroutine: it must not block, nor call Stop or Close.
	OnEvent func(Event)
}

// Event is a recorder's lifecycle event.
type Event struct {
	// Kind is EventStarted, EventFinalized or EventFailed.
	Kind string
	// Path is the recorded path; Name the file's final name (empty for a
	// failure to create a file).
	Path, Name string
	// Err is the failure (EventFailed).
	Err error
	// Bytes and Duration are the finalized file's size and media duration
	// (EventFinalized).
	Bytes    int64
	Duration time.Duration
}

// RecorderStats is a snapshot of a Recorder.
type RecorderStats struct {
	// Recording is true while a file is open (after a failure, from its
	// first fragment on).
	Recording bool
	// Name is the file being written (empty when not recording).
	Name string
	// Bytes counts the bytes written by this recorder, all files together.
	Bytes int64
	// Files counts the files started (after a failure, those that got a
	// fragment).
	Files int
	// Failures counts recording.failed events (repeated failures while
	// retrying count once, until a file records again).
	Failures int
}

// recFile is what the recorder writes to (an *os.File; tests wrap it).
type recFile interface {
	io.Writer
	Truncate(size int64) error
	Sync() error
	Close() error
}

// Recorder records a stream into the Store as fragmented MP4 (H.264 and
// Opus, remuxed): an init segment, then a moof+mdat fragment about every
// FragmentDuration, written to the file as it is produced, so that a .part
// file cut by a crash is valid up to its last complete fragment. Files
// start at a video keyframe and rotate at SegmentDuration and when the
// codec parameters change. A Recorder only reads its own subscriber queue:
// it never blocks the stream nor affects other subscribers.
type Recorder struct {
	cfg RecorderConfig
	log *slog.Logger
	// create opens a new file (Store.Create; tests wrap the file).
	create func(path string, start time.Time) (string, recFile, error)

	op     sync.Mutex // serializes Start, Stop, Close
	cancel context.CancelFunc
	done   chan struct{}
	closed bool

	mu      sync.Mutex
	stats   RecorderStats
	failing bool // a failure was reported and nothing recorded since

	// unfinalized are files closed with all their fragments that could not
	// be renamed (a read-only directory): they are finalized when a new
	// file records again. Only the run goroutine touches it (sessions run
	// one after the other); those left at Close stay .part files, which
	// the next start recovers.
	unfinalized []closedFile
}

// closedFile is a closed file waiting for its rename.
type closedFile struct {
	name     string
	bytes    int64
	duration time.Duration
}

// NewRecorder returns a stopped recorder. log may be nil.
func NewRecorder(cfg RecorderConfig, log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.SegmentDuration <= 0 {
		cfg.SegmentDuration = DefaultSegmentDuration
	}
	if cfg.FragmentDuration <= 0 {
		cfg.FragmentDuration = DefaultFragmentDuration
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	r := &Recorder{cfg: cfg, log: log.With("module", "recordings", "path", cfg.Path)}
	r.create = func(path string, start time.Time) (string, recFile, error) {
		name, f, err := cfg.Store.Create(path, start)
		if err != nil {
			return "", nil, err
		}
		return name, f, nil
	}
	return r
}

// Start begins recording: the next file starts at the stream's next (or
// cached) video keyframe, or at once for an audio-only stream. It returns
// at once and does nothing if the recorder runs already or was closed.
func (r *Recorder) Start() {
	r.op.Lock()
	defer r.op.Unlock()
	if r.closed || r.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go r.run(ctx, r.done)
}

// Stop finalizes the current file (or discards it when it holds no
// sample) and unsubscribes; it returns when that is done. Idempotent;
// Start after Stop records into a new file.
func (r *Recorder) Stop() {
	r.op.Lock()
	defer r.op.Unlock()
	r.stopLocked()
}

func (r *Recorder) stopLocked() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel, r.done = nil, nil
}

// Close stops the recorder for good and waits for its goroutine.
func (r *Recorder) Close() {
	r.op.Lock()
	defer r.op.Unlock()
	r.stopLocked()
	r.closed = true
}

// Stats returns a snapshot.
func (r *Recorder) Stats() RecorderStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

func (r *Recorder) emit(e Event) {
	e.Path = r.cfg.Path
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(e)
	}
}

// fail reports a failure: once per outage (until a file records again).
func (r *Recorder) fail(name string, err error) {
	r.mu.Lock()
	report := !r.failing
	r.failing = true
	if report {
		r.stats.Failures++
	}
	r.mu.Unlock()
	if !report {
		r.log.Debug("recording still failing", "err", err)
		return
	}
	r.log.Warn("recording failed; retrying", "file", name, "err", err, "retry", r.cfg.RetryInterval)
	r.emit(Event{Kind: EventFailed, Name: name, Err: err})
}

// run records until ctx is done, retrying after failures.
func (r *Recorder) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		err := r.session(ctx)
		if ctx.Err() != nil || err == nil || errors.Is(err, media.ErrClosed) {
			return
		}
		t := time.NewTimer(r.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// errStreamClosed ends a session without a retry.
var errStreamClosed = fmt.Errorf("recordings: stream closed: %w", media.ErrClosed)

// reportedError is a failure already reported by the writer.
type reportedError struct{ error }

func (e reportedError) Unwrap() error { return e.error }

// session subscribes and records until ctx is done (nil), the stream
// closes (errStreamClosed) or a write fails (the error, reported; the file
// written so far is finalized).
func (r *Recorder) session(ctx context.Context) (err error) {
	st := r.cfg.Stream
	if _, err := st.WaitTracks(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return errStreamClosed
	}
	sub, err := st.Subscribe("recorder:"+r.cfg.Path, media.SubscribeOptions{QueuePackets: RecorderQueuePackets})
	if err != nil {
		if errors.Is(err, media.ErrClosed) {
			return errStreamClosed
		}
		r.fail("", err)
		return err
	}
	defer sub.Close()
	w := &writer{r: r}
	defer func() {
		// Media is untrusted input: a bug on odd input must not take the
		// server down. The file is finalized up to its last fragment.
		if p := recover(); p != nil {
			r.log.Error("recorder panic", "panic", p, "stack", string(debug.Stack()))
			err = w.fail(fmt.Errorf("recordings: internal error: %v", p))
		}
	}()
	buf := make([]*media.Unit, 64)
	for {
		if ctx.Err() != nil {
			return w.fail(w.closeFile())
		}
		rctx, cancel := ctx, context.CancelFunc(nil)
		if w.pending() {
			// Flush the fragment when the stream pauses.
			rctx, cancel = context.WithTimeout(ctx, r.cfg.FragmentDuration)
		}
		n, rerr := sub.Read(rctx, buf)
		if cancel != nil {
			cancel()
		}
		if rerr != nil {
			switch {
			case ctx.Err() != nil:
				return w.fail(w.closeFile())
			case errors.Is(rerr, context.DeadlineExceeded):
				if err := w.fail(w.flush()); err != nil {
					return err
				}
				continue
			default: // the stream closed
				if err := w.fail(w.closeFile()); err != nil {
					return err
				}
				return errStreamClosed
			}
		}
		for i, u := range buf[:n] {
			buf[i] = nil
			if err := w.fail(w.unit(u)); err != nil {
				clear(buf)
				return err
			}
		}
	}
}

// sample is one pending sample of a fragment.
type sample struct {
	t       int64 // decode time in the track's timescale, from the file start
	payload []byte
	sync    bool
}

// track is one track of the open file.
type track struct {
	id      int
	video   bool
	scale   int64
	pending []sample
	lastDur uint32 // duration of the previous sample (for a fragment's last)
	end     int64  // end of the last written sample (for Duration)
}

// file is the open file of a session.
type file struct {
	f        recFile
	name     string
	start    time.Duration // stream PTS at the file's time zero
	sps, pps []byte        // nil: no video track
	opusCh   int           // channels of the Opus track; 0: none
	video    *track
	audio    *track
	written  int64 // bytes of complete boxes in the file
	samples  int   // samples in complete fragments
	seq      uint32
	fragAt   time.Duration // PTS of the first pending sample
	haveFrag bool
	// announced: recording.started was emitted (at open, or with the
	// first fragment after a failure).
	announced bool
}

// writer is a session's muxer.
type writer struct {
	r   *Recorder
	cur *file // nil between files
	buf seekablebuffer.Buffer

	// preroll: the audio of the cached GOP's time span, from the stream's
	// ring (the subscriber's GOP burst is video only), merged in PTS order.
	preroll   []*media.Unit
	burst     bool
	lastAudio time.Duration
	haveAudio bool
}

func (w *writer) pending() bool { return w.cur != nil && w.cur.haveFrag }

// fail ends the open file after err (finalizing what it holds up to its
// last complete fragment) and reports err, unless already reported.
func (w *writer) fail(err error) error {
	if err == nil {
		return nil
	}
	var rep reportedError
	if errors.As(err, &rep) {
		return err
	}
	if w.cur != nil {
		return w.end(err)
	}
	w.r.fail("", err)
	return reportedError{err}
}

// unit handles one unit from the subscriber.
func (w *writer) unit(u *media.Unit) error {
	if u.Kind == media.KindVideo {
		if u.FromCache && u.Keyframe && !w.burst && w.cur == nil {
			w.loadPreroll(u.PTS)
		}
		upTo := u.PTS
		if !u.FromCache {
			upTo = -1 // the burst ended: the rest of the preroll is older
		}
		if err := w.drainPreroll(upTo); err != nil {
			return err
		}
		return w.videoUnit(u)
	}
	if err := w.drainPreroll(-1); err != nil {
		return err
	}
	return w.audioUnit(u)
}

// loadPreroll takes the audio of the cached GOP from the stream's ring.
func (w *writer) loadPreroll(from time.Duration) {
	w.burst = true
	for _, a := range w.r.cfg.Stream.Units(from) {
		if a.Kind == media.KindAudio && a.PTS >= from {
			w.preroll = append(w.preroll, a)
		}
	}
}

// drainPreroll writes the preroll audio up to PTS upTo (all of it for -1).
func (w *writer) drainPreroll(upTo time.Duration) error {
	if !w.burst {
		return nil
	}
	for len(w.preroll) > 0 && (upTo < 0 || w.preroll[0].PTS <= upTo) {
		a := w.preroll[0]
		w.preroll[0] = nil
		w.preroll = w.preroll[1:]
		if err := w.audioUnit(a); err != nil {
			return err
		}
	}
	if upTo < 0 {
		w.preroll, w.burst = nil, false
	}
	return nil
}

// paramSets returns the SPS and PPS in front of an IDR.
func paramSets(au [][]byte) (sps, pps []byte) {
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		}
	}
	return sps, pps
}

// audioOpus returns the channels of the stream's Opus track (0: none).
func (w *writer) audioOpus() int {
	a := w.r.cfg.Stream.Tracks().Audio
	if a == nil || a.Codec != media.CodecOpus {
		return 0
	}
	if a.Channels == 0 {
		return 2
	}
	return int(a.Channels)
}

func (w *writer) videoUnit(u *media.Unit) error {
	if u.Keyframe {
		sps, pps := paramSets(u.Payload)
		if sps == nil || pps == nil {
			return nil // a file cannot start (nor describe the codec) without them
		}
		if c := w.cur; c != nil {
			if c.video == nil || u.PTS-c.start >= w.r.cfg.SegmentDuration-slack ||
				!bytes.Equal(sps, c.sps) || !bytes.Equal(pps, c.pps) || w.audioOpus() != c.opusCh {
				if err := w.closeFile(); err != nil {
					return err
				}
			}
		}
		if w.cur == nil {
			if err := w.open(u.PTS, sps, pps, w.audioOpus()); err != nil {
				return err
			}
		}
	}
	c := w.cur
	if c == nil || c.video == nil || u.PTS < c.start {
		return nil // waiting for a keyframe
	}
	if err := w.maybeFlush(u.PTS); err != nil {
		return err
	}
	avcc, err := h264.AVCC(u.Payload).Marshal()
	if err != nil {
		return nil // an empty or oversized unit: skip it
	}
	w.add(c.video, u.PTS, avcc, u.Keyframe)
	return nil
}

func (w *writer) audioUnit(u *media.Unit) error {
	if u.Codec != media.CodecOpus || len(u.Payload) != 1 {
		return nil // MP4 carries only Opus here (G.711 is not recorded)
	}
	if w.haveAudio && u.PTS <= w.lastAudio {
		return nil // already written from the preroll
	}
	if w.cur == nil {
		if w.r.cfg.Stream.Tracks().Video != nil {
			return nil // audio before the first keyframe
		}
		if err := w.open(u.PTS, nil, nil, w.audioOpus()); err != nil {
			return err
		}
	} else if w.cur.video == nil && u.PTS-w.cur.start >= w.r.cfg.SegmentDuration-slack {
		if err := w.closeFile(); err != nil {
			return err
		}
		if err := w.open(u.PTS, nil, nil, w.audioOpus()); err != nil {
			return err
		}
	}
	c := w.cur
	if c == nil || c.audio == nil || u.PTS < c.start {
		return nil
	}
	w.haveAudio, w.lastAudio = true, u.PTS
	if err := w.maybeFlush(u.PTS); err != nil {
		return err
	}
	w.add(c.audio, u.PTS, u.Payload[0], false)
	return nil
}

// ticks converts a stream PTS to time since the file start in scale units.
func ticks(d time.Duration, scale int64) int64 {
	return int64(d/time.Second)*scale + int64(d%time.Second)*scale/int64(time.Second)
}

func (w *writer) add(t *track, pts time.Duration, payload []byte, sync bool) {
	c := w.cur
	if !c.haveFrag {
		c.haveFrag, c.fragAt = true, pts
	}
	t.pending = append(t.pending, sample{t: ticks(pts-c.start, t.scale), payload: payload, sync: sync})
}

// maybeFlush writes the pending fragment once it spans FragmentDuration.
func (w *writer) maybeFlush(pts time.Duration) error {
	if c := w.cur; c.haveFrag && pts-c.fragAt >= w.r.cfg.FragmentDuration-slack {
		return w.flush()
	}
	return nil
}

// open creates a file starting at PTS start and writes its init segment.
func (w *writer) open(start time.Duration, sps, pps []byte, opusCh int) error {
	if sps == nil && opusCh == 0 {
		return nil // nothing recordable
	}
	r := w.r
	now := time.Now()
	var (
		name string
		f    recFile
		err  error
	)
	for i := range 5 {
		// Two files of a path started within one millisecond (a quick
		// Stop and Start): take the next free millisecond.
		name, f, err = r.create(r.cfg.Path, now.Add(time.Duration(i)*time.Millisecond))
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return err
	}
	c := &file{f: f, name: name, start: start, opusCh: opusCh}
	w.cur = c
	var init fmp4.Init
	id := 1
	if sps != nil {
		c.sps, c.pps = bytes.Clone(sps), bytes.Clone(pps)
		c.video = &track{id: id, video: true, scale: videoTimescale, lastDur: videoTimescale / 30}
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: id, TimeScale: videoTimescale,
			Codec: &codecs.H264{SPS: c.sps, PPS: c.pps}})
		id++
	}
	if opusCh > 0 {
		c.audio = &track{id: id, scale: opusTimescale, lastDur: opusTimescale / 50}
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: id, TimeScale: opusTimescale,
			Codec: &codecs.Opus{ChannelCount: opusCh}})
	}
	w.buf.Reset()
	if err := init.Marshal(&w.buf); err != nil {
		return fmt.Errorf("recordings: init segment: %w", err)
	}
	if err := w.write(); err != nil {
		return err
	}
	// After a failure the file is announced (recording.started, the
	// status) with its first fragment only: on a full disk each retry
	// writes an init segment, then fails and discards the file, and must
	// not announce a recording that is not.
	r.mu.Lock()
	retrying := r.failing
	r.mu.Unlock()
	if !retrying {
		w.announce()
	}
	return nil
}

// announce reports the open file as recording.
func (w *writer) announce() {
	r, c := w.r, w.cur
	c.announced = true
	r.mu.Lock()
	r.stats.Recording, r.stats.Name = true, c.name
	r.stats.Files++
	r.failing = false // recording works (again)
	r.mu.Unlock()
	r.log.Info("recording started", "file", c.name)
	r.emit(Event{Kind: EventStarted, Name: c.name})
	r.finalizeLeftovers()
}

// finalizeLeftovers renames the files a failure left unfinalized, now that
// the directory takes new files again.
func (r *Recorder) finalizeLeftovers() {
	keep := r.unfinalized[:0]
	for _, f := range r.unfinalized {
		err := r.cfg.Store.Finalize(f.name)
		switch {
		case err == nil:
			r.log.Info("recording finalized", "file", f.name, "bytes", f.bytes, "duration", f.duration, "late", true)
			r.emit(Event{Kind: EventFinalized, Name: f.name, Bytes: f.bytes, Duration: f.duration})
		case errors.Is(err, fs.ErrNotExist):
			r.log.Warn("unfinalized recording is gone", "file", f.name)
		default:
			keep = append(keep, f)
		}
	}
	clear(r.unfinalized[len(keep):])
	r.unfinalized = keep
}

// write appends w.buf to the file: complete boxes only, in one write.
func (w *writer) write() error {
	c := w.cur
	n, err := c.f.Write(w.buf.Bytes())
	if err == nil && n < w.buf.Len() {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("recordings: writing %s: %w", c.name, err)
	}
	c.written += int64(n)
	w.r.mu.Lock()
	w.r.stats.Bytes += int64(n)
	w.r.mu.Unlock()
	return nil
}

// flush writes the pending samples as one moof+mdat fragment. Sample
// durations come from PTS differences; a fragment's last sample gets the
// previous one's (the next fragment's tfdt carries the exact time).
func (w *writer) flush() error {
	c := w.cur
	if c == nil || !c.haveFrag {
		return nil
	}
	c.haveFrag = false
	c.seq++
	part := fmp4.Part{SequenceNumber: c.seq}
	count := 0
	// The tracks' ends move only once the fragment is on disk: a fragment
	// lost to a write error (a full disk) must not count in the finalized
	// file's duration.
	var (
		ends  [2]int64
		moved [2]bool
	)
	for k, t := range []*track{c.video, c.audio} {
		if t == nil || len(t.pending) == 0 {
			continue
		}
		pt := &fmp4.PartTrack{ID: t.id, BaseTime: uint64(max(t.pending[0].t, 0))}
		for i, s := range t.pending {
			dur := t.lastDur
			if i+1 < len(t.pending) {
				dur = 1 // non-increasing PTS: keep decode order
				if d := t.pending[i+1].t - s.t; d > 0 {
					dur = uint32(min(d, 1<<31))
				}
				t.lastDur = dur
			}
			pt.Samples = append(pt.Samples, &fmp4.Sample{Duration: dur, IsNonSyncSample: t.video && !s.sync, Payload: s.payload})
			ends[k], moved[k] = s.t+int64(dur), true
		}
		count += len(t.pending)
		clear(t.pending)
		t.pending = t.pending[:0]
		part.Tracks = append(part.Tracks, pt)
	}
	if count == 0 {
		return nil
	}
	w.buf.Reset()
	if err := part.Marshal(&w.buf); err != nil {
		return fmt.Errorf("recordings: fragment: %w", err)
	}
	if err := w.write(); err != nil {
		return err
	}
	for k, t := range []*track{c.video, c.audio} {
		if moved[k] {
			t.end = ends[k]
		}
	}
	c.samples += count
	if !c.announced {
		w.announce()
	}
	return nil
}

// duration is the media duration of the complete fragments.
func (c *file) duration() time.Duration {
	var d time.Duration
	for _, t := range []*track{c.video, c.audio} {
		if t != nil {
			d = max(d, time.Duration(t.end)*time.Second/time.Duration(t.scale))
		}
	}
	return d
}

// closeFile flushes, closes and finalizes the open file (discarding it
// when it holds no sample).
func (w *writer) closeFile() error {
	if w.cur == nil {
		return nil
	}
	if err := w.flush(); err != nil {
		return w.end(err)
	}
	return w.end(nil)
}

// end closes the open file and finalizes what it holds up to its last
// complete fragment, or discards it when that is no sample. cause is why
// it ends early (nil: a normal end); it is reported after the finalized
// event and returned as a reportedError.
func (w *writer) end(cause error) error {
	r, c := w.r, w.cur
	w.cur = nil
	r.mu.Lock()
	r.stats.Recording, r.stats.Name = false, ""
	r.mu.Unlock()
	var err error
	if cause != nil {
		// Drop a torn fragment (truncating also works on a full disk).
		_ = c.f.Truncate(c.written)
	} else {
		err = c.f.Sync()
	}
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	if cause == nil && err != nil {
		cause = fmt.Errorf("recordings: closing %s: %w", c.name, err)
	}
	if c.samples == 0 {
		r.cfg.Store.Discard(c.name)
		r.log.Debug("recording discarded: no sample", "file", c.name)
	} else if ferr := r.cfg.Store.Finalize(c.name); ferr != nil {
		r.unfinalized = append(r.unfinalized, closedFile{c.name, c.written, c.duration()})
		if cause == nil {
			cause = ferr
		}
	} else {
		dur := c.duration()
		r.log.Info("recording finalized", "file", c.name, "bytes", c.written, "duration", dur)
		r.emit(Event{Kind: EventFinalized, Name: c.name, Bytes: c.written, Duration: dur})
	}
	if cause == nil {
		return nil
	}
	r.fail(c.name, cause)
	return reportedError{cause}
}
