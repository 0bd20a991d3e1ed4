// Package file is the MP4 file source: it demuxes an MP4 with H.264 (with
// or without B-frames) or H.265 video, and Opus or AAC audio if any, and
// writes its samples into a media.Stream paced in real time, in decoding
// order with their presentation times, looping if asked. The video passes
// as it is; AAC audio becomes Opus through an ffmpeg child that reads only
// the AAC on its stdin (transcode.AudioPipe) when Config.TranscodeAudio is
// set, and is dropped with a warning otherwise.
//
// Fragmented MP4 plays too. Files the reader cannot play (other
// containers, other video codecs) are reported with errors wrapping
// media.ErrUnsupportedCodec so the caller can route them to the ffmpeg
// transcoder instead.
package file

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
)

// maxLag is how far the pacer may fall behind (a stalled process, a
// suspended machine) before it stops catching up: past it, the schedule is
// shifted instead of bursting many seconds of media into the stream.
const maxLag = time.Second

// Config configures a file source.
type Config struct {
	// Path of the MP4 file. Required.
	Path string
	// Loop restarts the file at its end (default false: Run returns nil).
	Loop bool
	// TranscodeAudio turns AAC audio into Opus with ffmpeg
	// (transcode.AudioPipe: the samples are written to ffmpeg's stdin, the
	// video does not pass through ffmpeg). Without it AAC is dropped.
	TranscodeAudio bool
	// FFmpegPath for TranscodeAudio (default "ffmpeg" from PATH).
	FFmpegPath string
}

// Source plays an MP4 file into a media.Stream. It implements media.Source.
type Source struct {
	name string
	loop bool
	log  *slog.Logger
	info Info
	warn []string

	transcodeAudio bool
	ffmpegPath     string

	// open returns a reader for one Run and a release func.
	open func() (io.ReadSeeker, func(), error)

	loops    atomic.Uint64
	audioPid atomic.Int64 // ffmpeg of the current run's AAC transcode (tests)
}

var _ media.Source = (*Source)(nil)

// New checks the file (it must exist and be playable by the native
// reader, see Info.Native) and returns a source for it. The file is opened again by
// each Run, so a file replaced on disk is picked up on the next run.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: file source: empty path", media.ErrSourceUnavailable)
	}
	s := &Source{name: cfg.Path, loop: cfg.Loop, log: logger(log),
		transcodeAudio: cfg.TranscodeAudio, ffmpegPath: cfg.FFmpegPath}
	s.open = func() (io.ReadSeeker, func(), error) {
		f, err := os.Open(cfg.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", media.ErrSourceUnavailable, err)
		}
		return f, func() { f.Close() }, nil
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return s, nil
}

// NewFromReader is New for media already in memory or another seekable
// reader; name is used in logs and errors. When r also implements
// io.ReaderAt and Size (bytes.Reader, strings.Reader), every Run reads
// through its own section reader, so Runs may overlap; otherwise Runs are
// serialized on r. AAC audio is dropped (no ffmpeg).
func NewFromReader(name string, r io.ReadSeeker, loop bool, log *slog.Logger) (*Source, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: %s: nil reader", media.ErrSourceUnavailable, name)
	}
	s := &Source{name: name, loop: loop, log: logger(log)}
	if ra, ok := r.(interface {
		io.ReaderAt
		Size() int64
	}); ok {
		s.open = func() (io.ReadSeeker, func(), error) {
			return io.NewSectionReader(ra, 0, ra.Size()), func() {}, nil
		}
	} else {
		var mu sync.Mutex
		s.open = func() (io.ReadSeeker, func(), error) {
			mu.Lock()
			return r, mu.Unlock, nil
		}
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return s, nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("module", "media/file")
}

// check parses the media once so configuration errors surface at startup.
func (s *Source) check() error {
	r, release, err := s.open()
	if err != nil {
		return fmt.Errorf("file source %s: %w", s.name, err)
	}
	defer release()
	c, err := load(r, s.name)
	if err != nil {
		return err
	}
	s.info = c.info
	s.warn, _ = c.info.Native(s.transcodeAudio)
	for _, w := range s.warn {
		s.log.Warn("file source: "+w, "file", s.name)
	}
	return nil
}

// Kind implements media.Source.
func (s *Source) Kind() string { return "file" }

// String implements media.Source: the file name.
func (s *Source) String() string { return s.name }

// Info is what the file held when the source was created.
func (s *Source) Info() Info { return s.info }

// Warnings lists what does not play as it is (e.g. AAC audio transcoded
// or dropped).
func (s *Source) Warnings() []string { return append([]string(nil), s.warn...) }

var _ media.Warner = (*Source)(nil)

// Loops counts completed passes over the file while looping.
func (s *Source) Loops() uint64 { return s.loops.Load() }

// Run implements media.Source: it declares the tracks, then writes every
// sample when it is due relative to the start of the run, video and audio
// interleaved by decode time. With Loop it calls st.Discontinuity at the end
// of each pass and continues with timestamps offset by the file's duration,
// so they keep increasing. Without Loop it returns nil after the last
// sample. It returns ctx.Err() promptly on cancellation.
func (s *Source) Run(ctx context.Context, st media.Writer) error {
	return s.runWith(ctx, st, true)
}

// runWith plays unpaced (as fast as possible) when paced is false: tests
// use it to push whole files through quickly.
func (s *Source) runWith(ctx context.Context, st media.Writer, paced bool) error {
	r, release, err := s.open()
	if err != nil {
		return fmt.Errorf("file source %s: %w", s.name, err)
	}
	defer release()
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", media.ErrSourceUnavailable, s.name, err)
	}
	c, err := load(r, s.name)
	if err != nil {
		return err
	}
	var tr media.Tracks
	if c.h265 != nil {
		tr.Video = &media.VideoParams{Codec: media.CodecH265, VPS: c.h265.VPS, SPS: c.h265.SPS, PPS: c.h265.PPS}
	} else {
		tr.Video = &media.VideoParams{Codec: media.CodecH264, SPS: c.h264.SPS, PPS: c.h264.PPS}
	}
	if c.aac != nil && !s.transcodeAudio {
		c.audio, c.aac = nil, nil // dropped, see Warnings
	}
	if c.audio != nil {
		tr.Audio = &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var pipe *transcode.AudioPipe
	if c.aac != nil {
		var stop func()
		pipe, stop, err = transcode.StartAudioForRun(runCtx, transcode.AudioConfig{
			AAC:        c.aac.Config,
			FFmpegPath: s.ffmpegPath,
			OnOpus:     func(pts time.Duration, frame []byte) { st.WriteAudio(pts, frame) },
			// A file is read faster than real time when unpaced, and the
			// pacer may catch up after a stall: room for a few seconds.
			Queue: 512,
		}, func(err error) {
			cancel(fmt.Errorf("%w: %s: audio transcode: %v", media.ErrSourceUnavailable, s.name, err))
		}, func(pid int) { s.audioPid.Store(int64(pid)) }, s.log)
		if err != nil {
			return fmt.Errorf("%w: %s: AAC to Opus transcode: %v", media.ErrSourceUnavailable, s.name, err)
		}
		defer stop()
	}
	// fail is why the run stopped: ctx's error, or the audio transcode's.
	fail := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cause := context.Cause(runCtx); cause != nil && runCtx.Err() != nil {
			return cause
		}
		return err
	}

	st.SetTracks(tr)
	period := c.playPeriod(c.audio != nil)
	audioName := c.info.AudioCodec
	if pipe != nil {
		audioName = "AAC -> opus"
	} else if c.audio == nil {
		audioName = "none"
	}
	s.log.Info("file source playing", "file", s.name, "duration", period,
		"video", c.info.VideoCodec, "audio", audioName, "loop", s.loop)

	p := pacer{start: time.Now(), timer: time.NewTimer(time.Hour), unpaced: !paced}
	defer p.timer.Stop()
	for {
		if err := s.playOnce(runCtx, c, size, &p, st, pipe); err != nil {
			return fail(err)
		}
		if !s.loop {
			if pipe != nil {
				// The last Opus frames are still in ffmpeg.
				pipe.CloseInput()
				select {
				case <-pipe.Done():
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(5 * time.Second):
					s.log.Warn("file source: audio transcode did not finish", "file", s.name)
				}
			}
			s.log.Info("file source ended", "file", s.name)
			return nil
		}
		s.loops.Add(1)
		p.offset += period
		st.Discontinuity()
	}
}

// pacer maps media time to wall time for one Run.
type pacer struct {
	start  time.Time
	offset time.Duration // media time of the current pass's zero (loops)
	timer  *time.Timer
	// unpaced skips the waiting (tests).
	unpaced bool
}

// wait blocks until media time t (relative to the pass) is due.
func (p *pacer) wait(ctx context.Context, t time.Duration) error {
	if p.unpaced {
		return ctx.Err()
	}
	due := p.start.Add(p.offset + t)
	d := time.Until(due)
	if d <= 0 {
		if -d > maxLag {
			p.start = p.start.Add(-d)
		}
		return ctx.Err()
	}
	p.timer.Reset(d)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.timer.C:
		return nil
	}
}

// cursor walks one track in decode order.
type cursor struct {
	t     *pmp4.Track
	video bool
	i     int
	dts   int64 // ticks of sample i
	shift int64 // composition offset of the first sample, see playOnce
}

func (c *cursor) done() bool { return c == nil || c.i >= len(c.t.Samples) }

func (c *cursor) dtsDur() time.Duration { return ticksToDuration(c.dts, c.t.TimeScale) }

func (c *cursor) ptsDur() time.Duration {
	return ticksToDuration(c.dts+int64(c.t.Samples[c.i].PTSOffset)-c.shift, c.t.TimeScale)
}

func (c *cursor) advance() {
	c.dts += int64(c.t.Samples[c.i].Duration)
	c.i++
}

func (s *Source) playOnce(ctx context.Context, c *clip, size int64, p *pacer, w media.Writer, pipe *transcode.AudioPipe) error {
	// Edit lists are not applied (pmp4 does not expose them). The common
	// one, written by ffmpeg for B-frames, only cancels the first frame's
	// composition offset: subtracting it keeps video and audio in sync.
	v := &cursor{t: c.video, video: true, shift: int64(c.video.Samples[0].PTSOffset)}
	var a *cursor
	if c.audio != nil {
		a = &cursor{t: c.audio}
	}
	badSamples := 0
	for {
		cur := v
		if v.done() || (!a.done() && a.dtsDur() < v.dtsDur()) {
			cur = a
		}
		if cur.done() {
			return nil
		}
		if err := p.wait(ctx, cur.dtsDur()); err != nil {
			return err
		}
		sample := cur.t.Samples[cur.i]
		pts := p.offset + cur.ptsDur()
		cur.advance()
		buf, err := readSample(sample, size)
		if err != nil {
			return fmt.Errorf("%w: %s: reading sample: %v", media.ErrSourceUnavailable, s.name, err)
		}
		if !cur.video {
			if pipe != nil {
				pipe.WriteAAC(pts, [][]byte{buf})
			} else {
				w.WriteAudio(pts, buf)
			}
			continue
		}
		// H.264 and H.265 samples alike are NALUs with 4-byte lengths.
		var au h264.AVCC
		if err := au.Unmarshal(buf); err != nil {
			// One damaged sample should not stop playback; the hub skips
			// viewers to the next keyframe anyway.
			if badSamples++; badSamples == 1 {
				s.log.Warn("file source: skipping malformed video sample", "file", s.name, "codec", c.info.VideoCodec, "err", err)
			}
			continue
		}
		if c.h265 != nil {
			w.WriteH265(pts, au)
		} else {
			w.WriteH264(pts, au)
		}
	}
}
