package app

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/builtin"
	"github.com/icey/icey-server/media/file"
	"github.com/icey/icey-server/media/httpsrc"
	"github.com/icey/icey-server/media/rtmp"
	"github.com/icey/icey-server/media/rtsp"
	"github.com/icey/icey-server/media/srt"
	"github.com/icey/icey-server/media/transcode"
)

// errSourceConfig is a source problem found at startup that waiting cannot
// fix (a missing file, an unsupported codec without ffmpeg): exit 4.
var errSourceConfig = errors.New("source")

// buildSource picks the source implementation for the configured source.
// The kind decides: builtin and files play directly when the native MP4
// reader can read them (H.264, also with B-frames, or H.265 video passed as
// is; AAC audio becomes Opus through an ffmpeg that reads only the audio on
// stdin, and is dropped with a warning without ffmpeg); other files,
// devices and URLs the server does not pull itself go through one ffmpeg
// transcode per stream.
// No secret reaches ffmpeg's command line or environment: RTSP is pulled by
// gortsplib, RTMP by gortmplib, SRT by gosrt and http(s) by net/http. H.264
// and H.265 pass through (MPEG-TS is demuxed here; RTMP carries H.264
// only, an RTSP M-JPEG camera is transcoded), AAC goes to ffmpeg's stdin and
// comes back as Opus, other codecs and containers of an http(s) response
// are fed to ffmpeg's stdin; any other URL reaches ffmpeg in a 0600 file
// (see media/transcode).
func buildSource(cfg config.Config, log *slog.Logger) (media.Source, []string, error) {
	src := cfg.Media.Source
	switch kind := cfg.SourceKind(); kind {
	case "builtin":
		return builtin.New(log), nil, nil
	case "rtsp":
		rc := rtsp.Config{URL: src, TranscodeAudio: transcode.Available()}
		if transcode.Available() {
			// H.264 and H.265 cameras pass as they are; an M-JPEG camera:
			// gortsplib pulls it, ffmpeg gets the JPEG frames and the audio
			// in Matroska on stdin and makes H.264 + Opus of them.
			rc.VideoTranscode = func(feed rtsp.FeedFunc) (media.Source, error) {
				w, h, fps, bitrate := cfg.Media.VideoTarget()
				return transcode.New(transcode.Config{Input: src, Kind: "rtsp", Feed: feed, FeedFormat: rtsp.FeedFormat,
					Width: w, Height: h, FPS: fps, VideoBitrate: bitrate}, log)
			}
		}
		s, err := rtsp.New(rc, log)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errSourceConfig, err)
		}
		return s, nil, nil
	case "file":
		if _, err := os.Stat(src); err != nil {
			return nil, nil, fmt.Errorf("%w: media file %s: %v", errSourceConfig, src, unwrapPath(err))
		}
		// The native reader plays MP4 with H.264 (B-frames too) or H.265
		// as they are, and AAC audio through an audio-only ffmpeg; only
		// what it cannot read is transcoded whole.
		ff := transcode.Available()
		info, err := file.Probe(src)
		if err == nil {
			_, err = info.Native(ff)
		}
		if err != nil {
			if ff && errors.Is(err, media.ErrUnsupportedCodec) {
				return transcoded(src, "file", cfg, log, fmt.Sprintf("%v; transcoding with ffmpeg", err))
			}
			return nil, nil, fmt.Errorf("%w: %s: %v%s", errSourceConfig, src, err, ffmpegHint())
		}
		s, err := file.New(file.Config{Path: src, Loop: cfg.Media.Loop, TranscodeAudio: ff}, log)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", errSourceConfig, src, err)
		}
		return s, s.Warnings(), nil
	case "device", "url":
		if kind == "url" {
			if s, ok, err := pulledURL(src, cfg, log); ok {
				return s, nil, err
			}
		}
		if !transcode.Available() {
			return nil, nil, fmt.Errorf("%w: %s sources need ffmpeg, which is not installed%s", errSourceConfig, kind, ffmpegHint())
		}
		return transcoded(src, kind, cfg, log, "")
	default:
		return nil, nil, fmt.Errorf("%w: unknown source kind %q", errSourceConfig, kind)
	}
}

// pulledURL is the source for a URL the server pulls itself (ok false for
// other schemes): RTMP (gortmplib) with H.264 passed through, SRT (gosrt)
// and http(s) (net/http) with MPEG-TS demuxed here and H.264 or H.265
// passed through, anything else of an http(s) response fed to ffmpeg's
// stdin from the same response. AAC becomes Opus
// through an ffmpeg that reads only stdin; without ffmpeg it is dropped.
func pulledURL(src string, cfg config.Config, log *slog.Logger) (media.Source, bool, error) {
	src = strings.TrimSpace(src)
	ff := transcode.Available()
	wrap := func(s media.Source, err error) (media.Source, bool, error) {
		if err != nil {
			return nil, true, fmt.Errorf("%w: %v", errSourceConfig, err)
		}
		return s, true, nil
	}
	switch {
	case rtmp.IsRTMP(src):
		return wrap(rtmp.New(rtmp.Config{URL: src, TranscodeAudio: ff}, log))
	case srt.IsSRT(src) && srt.CallerMode(src):
		return wrap(srt.New(srt.Config{URL: src, TranscodeAudio: ff}, log))
	case httpsrc.IsHTTP(src):
		hc := httpsrc.SourceConfig{URL: src, TranscodeAudio: ff}
		if ff {
			w, h, fps, bitrate := cfg.Media.VideoTarget()
			tc := transcode.Config{Input: src, Kind: "url", Width: w, Height: h, FPS: fps, VideoBitrate: bitrate}
			hc.Fallback = func(feed httpsrc.FeedFunc) (media.Source, error) {
				c := tc
				c.Feed = feed
				return transcode.New(c, log)
			}
			// HLS: the segments are requests of their own, so ffmpeg opens
			// the URL, which it reads from a private file.
			hc.Playlist = func() (media.Source, error) { return transcode.New(tc, log) }
		}
		s, err := httpsrc.NewSource(hc, log)
		return wrap(s, err)
	}
	return nil, false, nil
}

func transcoded(src, kind string, cfg config.Config, log *slog.Logger, why string) (media.Source, []string, error) {
	w, h, fps, bitrate := cfg.Media.VideoTarget()
	s, err := transcode.New(transcode.Config{Input: src, Kind: kind, Loop: cfg.Media.Loop && kind == "file",
		Width: w, Height: h, FPS: fps, VideoBitrate: bitrate}, log)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errSourceConfig, err)
	}
	var warns []string
	if why != "" {
		warns = append(warns, why)
	}
	return s, warns, nil
}

func ffmpegHint() string {
	if transcode.Available() {
		return ""
	}
	return " (install ffmpeg to transcode other codecs, containers and devices)"
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// sourceWarnings: why the source was chosen as it was, plus the source's
// own current warnings (e.g. audio dropped).
func (a *app) sourceWarnings() []string {
	out := append([]string(nil), a.srcWarnings...)
	if w, ok := a.src.(media.Warner); ok {
		for _, s := range w.Warnings() {
			if !slices.Contains(out, s) { // a file source's are in both
				out = append(out, s)
			}
		}
	}
	return out
}

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ": ")
}
