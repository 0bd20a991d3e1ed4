// Package tsdemux plays a live MPEG-TS byte stream (SRT, HTTP) that the
// server pulled itself into a media.Stream without re-encoding: H.264 (B-
// frames too, written with their presentation times), H.265 and Opus pass
// through; AAC becomes Opus through an ffmpeg child fed on stdin
// (transcode.AudioPipe) when Options.TranscodeAudio is set, else it is
// dropped with a warning. A stream without H.264 or H.265 video fails with
// media.ErrUnsupportedCodec, so that the caller can fall back to a full
// transcode.
package tsdemux

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
)

// Options of Play.
type Options struct {
	// TranscodeAudio turns AAC into Opus with ffmpeg (stdin only).
	TranscodeAudio bool
	// FFmpegPath for TranscodeAudio (default "ffmpeg" from PATH).
	FFmpegPath string
	// StallTimeout ends Play when no media arrived for this long (default
	// 10 s); Close is then called to unblock the reader.
	StallTimeout time.Duration
	// Close unblocks a Read in progress (closes the connection); called on
	// a stall and when ctx is done.
	Close func()
	// OnTracks is called once the tracks are known, with the warnings
	// (dropped or transcoded audio).
	OnTracks func(warnings []string)
	// OnAudioPid is called with the AAC transcoder's pid (0 when it stopped).
	OnAudioPid func(pid int)
	Log        *slog.Logger
}

// Play reads r until it fails, ctx is done (ctx.Err()), or no media came
// for StallTimeout. Errors are plain (not wrapped in ErrSourceUnavailable)
// except media.ErrUnsupportedCodec, which is returned before anything is
// written to st.
func Play(ctx context.Context, r io.Reader, st media.Writer, o Options) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 10 * time.Second
	}
	if o.Close == nil {
		o.Close = func() {}
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(runCtx, o.Close)
	defer stop()

	stall := media.WatchStall(runCtx, cancel, o.StallTimeout)
	fail := func(err error) error { return media.RunErr(ctx, runCtx, err) }

	tr := &mpegts.Reader{R: r}
	if err := tr.Initialize(); err != nil {
		return fail(fmt.Errorf("reading MPEG-TS: %w", err))
	}
	var video, audio *mpegts.Track
	isH265 := false // video is H.265 (H.264 preferred)
	var aac *tscodecs.MPEG4Audio
	var found []string
	for _, t := range tr.Tracks() {
		name := strings.TrimPrefix(fmt.Sprintf("%T", t.Codec), "*codecs.")
		found = append(found, name)
		switch c := t.Codec.(type) {
		case *tscodecs.H264:
			if video == nil || isH265 {
				video, isH265 = t, false
			}
		case *tscodecs.H265:
			if video == nil {
				video, isH265 = t, true
			}
		case *tscodecs.Opus:
			if audio == nil || aac != nil {
				audio, aac = t, nil
			}
		case *tscodecs.MPEG4Audio:
			if audio == nil && o.TranscodeAudio {
				audio, aac = t, c
			}
		}
	}
	if video == nil {
		return fmt.Errorf("%w: no H.264 or H.265 video (found: %s)", media.ErrUnsupportedCodec, strings.Join(found, ", "))
	}
	var dropped []string
	for _, t := range tr.Tracks() {
		if t == video || t == audio || t.Codec.IsVideo() {
			continue
		}
		dropped = append(dropped, strings.TrimPrefix(fmt.Sprintf("%T", t.Codec), "*codecs."))
	}
	media.ReportWarnings(o.Log, o.OnTracks, media.DemuxAudioWarnings(dropped, aac != nil))

	tracks := media.Tracks{Video: &media.VideoParams{Codec: media.CodecH264}}
	if isH265 {
		tracks.Video.Codec = media.CodecH265 // parameter sets come in-band
	}
	if audio != nil {
		tracks.Audio = &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	}
	// One decoder for all tracks: they share the 90 kHz clock.
	var td mpegts.TimeDecoder
	toDur := func(ts int64) time.Duration {
		v := td.Decode(ts)
		return time.Duration(v/90000)*time.Second + time.Duration(v%90000)*time.Second/90000
	}

	var pipe *transcode.AudioPipe
	if aac != nil {
		var stop func()
		var err error
		pipe, stop, err = transcode.StartAudioForRun(runCtx, transcode.AudioConfig{
			AAC:        aac.Config,
			FFmpegPath: o.FFmpegPath,
			OnOpus:     func(pts time.Duration, frame []byte) { st.WriteAudio(pts, frame) },
		}, func(err error) { cancel(fmt.Errorf("audio transcode: %v", err)) }, o.OnAudioPid, o.Log)
		if err != nil {
			return fmt.Errorf("AAC to Opus transcode: %w", err)
		}
		defer stop()
	}
	st.SetTracks(tracks)

	tr.OnDecodeError(func(error) {})
	// Access units come in decoding order; pts is the presentation time.
	gotIDR := false
	if isH265 {
		tr.OnDataH265(video, func(pts, _ int64, au [][]byte) error {
			stall.Touch()
			t := toDur(pts)
			if !gotIDR {
				if !h265.IsRandomAccess(au) {
					return nil
				}
				gotIDR = true
			}
			st.WriteH265(t, au)
			return nil
		})
	} else {
		tr.OnDataH264(video, func(pts, _ int64, au [][]byte) error {
			stall.Touch()
			t := toDur(pts)
			if !gotIDR {
				if !h264.IsRandomAccess(au) {
					return nil
				}
				gotIDR = true
			}
			st.WriteH264(t, au)
			return nil
		})
	}
	if audio != nil {
		if aac != nil {
			tr.OnDataMPEG4Audio(audio, func(pts int64, aus [][]byte) error {
				stall.Touch()
				pipe.WriteAAC(toDur(pts), aus)
				return nil
			})
		} else {
			tr.OnDataOpus(audio, func(pts int64, packets [][]byte) error {
				stall.Touch()
				t := toDur(pts)
				for _, p := range packets {
					st.WriteAudio(t, p)
					t += time.Duration(opus.PacketDuration2(p)) * time.Second / 48000
				}
				return nil
			})
		}
	}
	for {
		if err := tr.Read(); err != nil {
			return fail(err)
		}
	}
}
