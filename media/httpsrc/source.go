package httpsrc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/tsdemux"
)

// FeedFunc writes the input to an ffmpeg's stdin (transcode.Config.Feed).
type FeedFunc func(ctx context.Context, w io.Writer) error

// SourceConfig configures a Source. Only URL is required.
type SourceConfig struct {
	URL string
	// TranscodeAudio turns AAC in an MPEG-TS into Opus with ffmpeg (stdin only).
	TranscodeAudio bool
	// FFmpegPath for TranscodeAudio (default "ffmpeg" from PATH).
	FFmpegPath string
	// StallTimeout ends a run without media for this long (default 10 s).
	StallTimeout time.Duration
	// Fallback, when set, makes the source for a body that is neither
	// MPEG-TS nor fragmented MP4 with H.264 or H.265 (another container or
	// codec, a non-fragmented MP4): typically a transcode whose
	// Feed is the given function, which replays what was already read and
	// copies the rest of the same response. Nil: such bodies fail with
	// media.ErrUnsupportedCodec.
	Fallback func(feed FeedFunc) (media.Source, error)
	// Playlist, when set, makes the source for an HLS playlist (a body
	// starting with #EXTM3U): its segments are separate requests relative
	// to the URL, so ffmpeg must open the URL itself (transcode reads it
	// from a private file, never from its command line). Nil: playlists
	// fail with media.ErrUnsupportedCodec.
	Playlist func() (media.Source, error)
}

// Source is an http(s) media source: the server GETs the URL itself. An
// MPEG-TS or fragmented MP4 body with H.264 or H.265 is demuxed here
// (H.264, H.265 and Opus pass through, AAC becomes Opus through an ffmpeg
// that reads only stdin); anything else is handed to Fallback. It
// implements media.Source.
type Source struct {
	cfg SourceConfig
	f   *Feeder
	log *slog.Logger

	media.WarningSet // warnings of the latest run

	audioPid atomic.Int64 // AAC transcoder of a pass-through run, for tests
	fellBack atomic.Bool  // the latest run used Fallback
}

// NewSource validates cfg. log may be nil.
func NewSource(cfg SourceConfig, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := New(cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 10 * time.Second
	}
	return &Source{cfg: cfg, f: f, log: log.With("module", "http", "source", f.safe)}, nil
}

// Kind implements media.Source.
func (s *Source) Kind() string { return "url" }

// String implements media.Source: the URL without credentials.
func (s *Source) String() string { return s.f.safe }

var _ media.Warner = (*Source)(nil)

// recorder keeps what was read until stop, for a fallback to replay.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
	on  bool
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.on && n > 0 {
		r.buf.Write(p[:n])
		if r.buf.Len() > 8<<20 { // bounded: a fallback after this is not possible
			r.on = false
			r.buf = bytes.Buffer{}
		}
	}
	return n, err
}

// Run implements media.Source.
func (s *Source) Run(ctx context.Context, st media.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	body, err := s.f.open(runCtx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %v", media.ErrSourceUnavailable, err)
	}
	var closeOnce sync.Once
	closeBody := func() { closeOnce.Do(func() { body.Close() }) }
	defer closeBody()

	rec := &recorder{r: bufio.NewReaderSize(body, 64<<10), on: true}
	head := make([]byte, 189)
	n, err := io.ReadFull(rec, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: reading: %s", media.ErrSourceUnavailable, s.f.safe, s.f.scrubErr("body", err))
	}
	isTS := n == 189 && head[0] == 0x47 && head[188] == 0x47
	if bytes.HasPrefix(bytes.TrimLeft(head[:n], "\ufeff \t\r\n"), []byte("#EXTM3U")) {
		closeBody()
		if s.cfg.Playlist == nil {
			return fmt.Errorf("%w: %s: an HLS playlist needs ffmpeg", media.ErrUnsupportedCodec, s.f.safe)
		}
		s.fellBack.Store(true)
		s.SetWarnings([]string{"HLS playlist; transcoding with ffmpeg"})
		src, err := s.cfg.Playlist()
		if err != nil {
			return fmt.Errorf("%w: %s: %v", media.ErrSourceUnavailable, s.f.safe, err)
		}
		return src.Run(ctx, st)
	}
	isMP4 := !isTS && isMP4Head(head[:n])
	if isTS || isMP4 {
		s.fellBack.Store(false)
		body := io.MultiReader(bytes.NewReader(head[:n]), rec)
		onTracks := func(w []string) { rec.on = false; rec.buf = bytes.Buffer{}; s.SetWarnings(w) }
		onPid := func(pid int) { s.audioPid.Store(int64(pid)) }
		var err error
		container := "MPEG-TS"
		if isMP4 {
			container = "MP4"
			err = playFMP4(runCtx, body, st, fmp4Options{
				TranscodeAudio: s.cfg.TranscodeAudio,
				FFmpegPath:     s.cfg.FFmpegPath,
				StallTimeout:   s.cfg.StallTimeout,
				Close:          closeBody,
				OnTracks:       onTracks,
				OnAudioPid:     onPid,
				Log:            s.log,
			})
		} else {
			err = tsdemux.Play(runCtx, body, st, tsdemux.Options{
				TranscodeAudio: s.cfg.TranscodeAudio,
				FFmpegPath:     s.cfg.FFmpegPath,
				StallTimeout:   s.cfg.StallTimeout,
				Close:          closeBody,
				OnTracks:       onTracks,
				OnAudioPid:     onPid,
				Log:            s.log,
			})
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, media.ErrUnsupportedCodec):
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("stream ended")
			}
			return fmt.Errorf("%w: %s: %s", media.ErrSourceUnavailable, s.f.safe, s.f.scrubErr(container, err))
		case s.cfg.Fallback == nil || !rec.on:
			return fmt.Errorf("%s: %w", s.f.safe, err)
		}
		s.log.Info("not H.264 or H.265 in "+container+": transcoding with ffmpeg", "why", err.Error())
		s.SetWarnings([]string{err.Error() + "; transcoding with ffmpeg"})
	} else {
		if s.cfg.Fallback == nil {
			return fmt.Errorf("%w: %s: not MPEG-TS or fragmented MP4 (install ffmpeg to transcode other containers)", media.ErrUnsupportedCodec, s.f.safe)
		}
		s.SetWarnings([]string{"not MPEG-TS or fragmented MP4; transcoding with ffmpeg"})
	}

	// Fallback: ffmpeg gets what was read so far, then the rest of the
	// same response, on its stdin.
	s.fellBack.Store(true)
	prefix := rec.buf.Bytes()
	rest := rec.r
	rec.on = false
	used := false
	src, err := s.cfg.Fallback(func(fctx context.Context, w io.Writer) error {
		if used {
			return errors.New("response already consumed")
		}
		used = true
		stop := context.AfterFunc(fctx, closeBody)
		defer stop()
		if _, err := w.Write(prefix); err != nil {
			return err
		}
		if _, err := io.Copy(w, rest); err != nil {
			if fctx.Err() != nil {
				return fctx.Err()
			}
			return s.f.scrubErr("reading", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %v", media.ErrSourceUnavailable, s.f.safe, err)
	}
	return src.Run(ctx, st)
}
