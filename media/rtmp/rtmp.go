// Package rtmp is the RTMP/RTMPS pull source: the server plays the stream
// itself with gortmplib (so the URL, its user:pass@ and any stream key or
// token stay in the server's process), passes H.264 through without
// ffmpeg, keeps Opus and G.711 audio as is, and turns AAC into Opus with
// an ffmpeg child fed on stdin (transcode.AudioPipe) when TranscodeAudio
// is set. Reconnection is the supervisor's job: Run returns on any failure.
package rtmp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
)

// Defaults of Config.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultReadTimeout = 10 * time.Second
)

// Config configures a Source. Only URL is required.
type Config struct {
	// URL is rtmp:// or rtmps://, optionally with user:pass@ (Adobe
	// authentication), a query (tokens) and #streamKey. Like ffmpeg, the
	// first path element is the application and the rest the stream name.
	URL string
	// DialTimeout bounds the connection and handshake (default 5 s).
	DialTimeout time.Duration
	// ReadTimeout bounds each read: a stalled server fails the run (default 10 s).
	ReadTimeout time.Duration
	// TLSConfig for rtmps:// (default: system roots).
	TLSConfig *tls.Config
	// TranscodeAudio turns AAC audio into Opus with ffmpeg (stdin only)
	// instead of dropping it.
	TranscodeAudio bool
	// FFmpegPath for TranscodeAudio (default "ffmpeg" from PATH).
	FFmpegPath string
}

// Source plays one RTMP URL. It implements media.Source.
type Source struct {
	cfg  Config
	u    *url.URL
	safe string
	pass string
	log  *slog.Logger

	media.WarningSet // warnings of the latest run

	audioPid atomic.Int64 // ffmpeg of the AAC transcode, for tests
}

// New validates cfg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil {
		return nil, fmt.Errorf("rtmp: invalid URL %q", media.RedactURL(cfg.URL))
	}
	if u.Scheme != "rtmp" && u.Scheme != "rtmps" {
		return nil, fmt.Errorf("rtmp: unsupported scheme in %q (want rtmp:// or rtmps://)", media.RedactURL(cfg.URL))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("rtmp: no host in %s", media.RedactURL(cfg.URL))
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	s := &Source{cfg: cfg, u: splitApp(u), safe: safeURL(u)}
	if u.User != nil {
		s.pass, _ = u.User.Password()
	}
	s.log = log.With("module", "rtmp", "source", s.safe)
	return s, nil
}

// IsRTMP reports whether src is an rtmp:// or rtmps:// URL.
func IsRTMP(src string) bool {
	low := strings.ToLower(strings.TrimSpace(src))
	return strings.HasPrefix(low, "rtmp://") || strings.HasPrefix(low, "rtmps://")
}

// safeURL drops the userinfo, the query and the stream key: all can be
// secrets.
func safeURL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment, c.RawFragment = nil, "", "", ""
	return c.String()
}

// splitApp maps ffmpeg's convention (rtmp://host/app/stream?query) onto
// gortmplib's (rtmp://host/app#stream): the first path element is the
// application, the rest (with the query) the stream name.
func splitApp(u *url.URL) *url.URL {
	c := *u
	if c.Fragment != "" {
		return &c
	}
	path := strings.TrimPrefix(c.Path, "/")
	app, stream, ok := strings.Cut(path, "/")
	if !ok || stream == "" {
		return &c
	}
	if c.RawQuery != "" {
		stream += "?" + c.RawQuery
	}
	c.Path, c.RawPath, c.RawQuery, c.Fragment, c.RawFragment = "/"+app, "", "", stream, ""
	return &c
}

// Kind implements media.Source.
func (s *Source) Kind() string { return "url" }

// String implements media.Source: the URL without credentials, query or stream key.
func (s *Source) String() string { return s.safe }

var _ media.Warner = (*Source)(nil)

// Run implements media.Source.
func (s *Source) Run(ctx context.Context, st media.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dialer := &net.Dialer{}
	c := &gortmplib.Client{
		URL:       s.u,
		TLSConfig: s.cfg.TLSConfig,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
	}
	ictx, icancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	err := c.Initialize(ictx)
	icancel()
	if err != nil {
		return s.fail(ctx, "connect", err)
	}
	stop := context.AfterFunc(ctx, c.Close)
	defer func() {
		stop()
		c.Close()
	}()

	_ = c.NetConn().SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
	r := &gortmplib.Reader{Conn: c}
	if err := r.Initialize(); err != nil {
		return s.fail(ctx, "reading tracks", err)
	}

	var video, audio *gortmplib.Track
	var vcodec *codecs.H264
	var audioParams media.AudioParams
	var aac *codecs.MPEG4Audio
	var warnings, found []string
	for _, t := range r.Tracks() {
		found = append(found, codecName(t.Codec))
		switch cd := t.Codec.(type) {
		case *codecs.H264:
			if video == nil {
				video, vcodec = t, cd
			}
		case *codecs.Opus:
			if audio == nil || aac != nil {
				audio, aac = t, nil
				audioParams = media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
			}
		case *codecs.G711:
			if (audio == nil || aac != nil) && cd.ChannelCount == 1 {
				audio, aac = t, nil
				audioParams = media.AudioParams{Codec: media.CodecPCMA, ClockRate: 8000, Channels: 1}
				if cd.MULaw {
					audioParams.Codec = media.CodecPCMU
				}
			}
		case *codecs.MPEG4Audio:
			if audio == nil && s.cfg.TranscodeAudio && cd.Config != nil {
				audio, aac = t, cd
				audioParams = media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
			}
		}
	}
	if video == nil {
		if len(found) == 0 {
			found = append(found, "no tracks")
		}
		return fmt.Errorf("%w: rtmp %s: no H.264 video (found: %s)", media.ErrUnsupportedCodec, s.safe, strings.Join(found, ", "))
	}
	for _, t := range r.Tracks() {
		if t == video || t == audio || t.Codec.IsVideo() {
			continue
		}
		warnings = append(warnings, fmt.Sprintf("audio %s dropped: only Opus, PCMU and PCMA are passed through (AAC is transcoded when ffmpeg is installed)", codecName(t.Codec)))
	}
	if aac != nil {
		warnings = append(warnings, "audio AAC is transcoded to Opus with ffmpeg")
	}
	s.SetWarnings(warnings)
	for _, w := range warnings {
		s.log.Warn(w)
	}

	tracks := media.Tracks{Video: &media.VideoParams{SPS: vcodec.SPS, PPS: vcodec.PPS}}
	if audio != nil {
		tracks.Audio = &audioParams
	}
	var pipe *transcode.AudioPipe
	var pipeDone <-chan struct{}
	if aac != nil {
		pipe, err = transcode.StartAudio(ctx, transcode.AudioConfig{
			AAC:        *aac.Config,
			FFmpegPath: s.cfg.FFmpegPath,
			OnOpus:     func(pts time.Duration, frame []byte) { st.WriteAudio(pts, frame) },
		}, s.log)
		if err != nil {
			return fmt.Errorf("%w: rtmp %s: AAC to Opus transcode: %v", media.ErrSourceUnavailable, s.safe, err)
		}
		s.audioPid.Store(int64(pipe.Pid()))
		pipeDone = pipe.Done()
		defer func() {
			pipe.Close()
			s.audioPid.Store(0)
		}()
	}
	st.SetTracks(tracks)

	gotIDR := false
	r.OnDataH264(video, func(pts, _ time.Duration, au [][]byte) {
		if !gotIDR {
			if !h264.IsRandomAccess(au) {
				return
			}
			gotIDR = true
		}
		st.WriteH264(pts, au)
	})
	if audio != nil {
		switch audio.Codec.(type) {
		case *codecs.MPEG4Audio:
			r.OnDataMPEG4Audio(audio, func(pts time.Duration, au []byte) { pipe.WriteAAC(pts, [][]byte{au}) })
		case *codecs.Opus:
			r.OnDataOpus(audio, func(pts time.Duration, pkt []byte) { st.WriteAudio(pts, pkt) })
		case *codecs.G711:
			r.OnDataG711(audio, func(pts time.Duration, samples []byte) { writeG711(st, pts, samples) })
		}
	}
	for _, t := range r.Tracks() {
		if t != video && t != audio {
			discard(r, t) // gortmplib needs a callback for every track
		}
	}
	s.log.Info("playing", "audio", audioName(tracks))

	readErr := make(chan error, 1)
	go func() {
		for {
			_ = c.NetConn().SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
			if err := r.Read(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	select {
	case err := <-readErr:
		return s.fail(ctx, "reading", err)
	case <-pipeDone:
		c.Close()
		<-readErr
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: rtmp %s: audio transcode: %s", media.ErrSourceUnavailable, s.safe, s.scrub(pipe.Err().Error()))
	}
}

// discard registers a no-op callback for a track that is not played.
func discard(r *gortmplib.Reader, t *gortmplib.Track) {
	switch t.Codec.(type) {
	case *codecs.AV1:
		r.OnDataAV1(t, func(time.Duration, [][]byte) {})
	case *codecs.VP9:
		r.OnDataVP9(t, func(time.Duration, []byte) {})
	case *codecs.H265:
		r.OnDataH265(t, func(time.Duration, time.Duration, [][]byte) {})
	case *codecs.H264:
		r.OnDataH264(t, func(time.Duration, time.Duration, [][]byte) {})
	case *codecs.Opus:
		r.OnDataOpus(t, func(time.Duration, []byte) {})
	case *codecs.FLAC:
		r.OnDataFLAC(t, func(time.Duration, []byte) {})
	case *codecs.MPEG4Audio:
		r.OnDataMPEG4Audio(t, func(time.Duration, []byte) {})
	case *codecs.MPEG1Audio:
		r.OnDataMPEG1Audio(t, func(time.Duration, []byte) {})
	case *codecs.AC3:
		r.OnDataAC3(t, func(time.Duration, []byte) {})
	case *codecs.G711:
		r.OnDataG711(t, func(time.Duration, []byte) {})
	case *codecs.LPCM:
		r.OnDataLPCM(t, func(time.Duration, []byte) {})
	}
}

// writeG711 splits G.711 samples into 20 ms frames (160 bytes at 8 kHz).
func writeG711(st media.Writer, pts time.Duration, samples []byte) {
	const frame = 160
	for len(samples) > 0 {
		n := min(frame, len(samples))
		st.WriteAudio(pts, samples[:n])
		samples = samples[n:]
		pts += time.Duration(n) * time.Second / 8000
	}
}

func codecName(c codecs.Codec) string {
	t := fmt.Sprintf("%T", c)
	return strings.TrimPrefix(t, "*codecs.")
}

func audioName(t media.Tracks) string {
	if t.Audio == nil {
		return "none"
	}
	return t.Audio.Codec
}

// fail classifies an error: ctx.Err() when cancelled, else a scrubbed
// error wrapping media.ErrSourceUnavailable (the original is not wrapped:
// its text could hold credentials).
func (s *Source) fail(ctx context.Context, step string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: rtmp %s: %s: timeout", media.ErrSourceUnavailable, s.safe, step)
	}
	return fmt.Errorf("%w: rtmp %s: %s: %s", media.ErrSourceUnavailable, s.safe, step, s.scrub(err.Error()))
}

func (s *Source) scrub(text string) string {
	text = media.RedactURL(text)
	for _, secret := range []string{s.pass, s.u.Fragment, s.u.RawQuery} {
		if secret != "" {
			text = strings.ReplaceAll(text, secret, "***")
		}
	}
	return text
}
