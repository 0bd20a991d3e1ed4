// Package tsfeed writes a stream's units as MPEG-TS, the form in which
// the server feeds them to an ffmpeg child (renditions, analysis,
// snapshots): H.264 or H.265 video with decoding times recovered from the
// bitstream (units carry presentation times; B-frames need both) and,
// optionally, Opus audio, on one timeline shifted by Base so that no
// timestamp is negative.
package tsfeed

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/icey/icey-server/media"
)

// Base is added to every timestamp written (90 kHz ticks): the decoding
// times of a stream's first B-frames precede its first presentation time,
// and MPEG-TS has no negative timestamps. Readers of the child's output
// take it off again (with -copyts, ffmpeg keeps input timestamps).
const Base = 10 * 90000

// ErrCodecChanged is returned by Write when a video unit's codec is not
// the one the writer was made for (the source changed codec).
var ErrCodecChanged = errors.New("tsfeed: the video codec changed")

// Writer writes units to w as MPEG-TS. Not safe for concurrent use.
type Writer struct {
	bw     *bufio.Writer
	tw     *mpegts.Writer
	video  *mpegts.Track
	audio  *mpegts.Track
	codec  string
	dts264 *h264.DTSExtractor
	dts265 *h265.DTSExtractor
	// LastVideo is when the latest video unit was written (zero before).
	LastVideo time.Time
}

// New returns a Writer for video in codec (media.CodecH264 or
// media.CodecH265; "" for none: video units are then ignored) and, when
// opus is set, an Opus audio track.
func New(w io.Writer, codec string, opus bool) (*Writer, error) {
	f := &Writer{bw: bufio.NewWriterSize(w, 64<<10), codec: codec}
	var tracks []*mpegts.Track
	switch codec {
	case media.CodecH264:
		f.video = &mpegts.Track{Codec: &tscodecs.H264{}}
	case media.CodecH265:
		f.video = &mpegts.Track{Codec: &tscodecs.H265{}}
	case "":
	default:
		return nil, fmt.Errorf("tsfeed: video %s cannot be fed", codec)
	}
	if f.video != nil {
		tracks = append(tracks, f.video)
	}
	if opus {
		f.audio = &mpegts.Track{Codec: &tscodecs.Opus{ChannelCount: 2}}
		tracks = append(tracks, f.audio)
	}
	if len(tracks) == 0 {
		return nil, errors.New("tsfeed: nothing to feed (no video codec, no audio)")
	}
	f.tw = &mpegts.Writer{W: f.bw, Tracks: tracks}
	if err := f.tw.Initialize(); err != nil {
		return nil, err
	}
	return f, nil
}

// Ticks converts a unit's PTS to the written 90 kHz timestamp.
func Ticks(pts time.Duration) int64 { return Base + int64(pts)*90000/int64(time.Second) }

// Time converts a timestamp read back from the child (90 kHz, Base
// included) to the units' timeline.
func Time(ticks int64) time.Duration {
	t := ticks - Base
	return time.Duration(t/90000)*time.Second + time.Duration(t%90000)*time.Second/90000
}

// Write writes one unit: video of the writer's codec, or Opus audio when
// the writer has an audio track (other audio is ignored). A video unit
// whose decoding time cannot be placed (after a dropped unit) is skipped
// until the next keyframe; only write errors and ErrCodecChanged are
// returned. Call Flush after a batch.
func (f *Writer) Write(u *media.Unit) error {
	if u.Kind == media.KindAudio {
		if f.audio == nil || u.Codec != media.CodecOpus || len(u.Payload) != 1 {
			return nil
		}
		return f.check(f.tw.WriteOpus(f.audio, Ticks(u.PTS), [][]byte{u.Payload[0]}))
	}
	if f.video == nil {
		return nil
	}
	if u.Codec != f.codec {
		return fmt.Errorf("%w from %s to %s", ErrCodecChanged, f.codec, u.Codec)
	}
	pts := Ticks(u.PTS)
	if u.Keyframe {
		// A fresh extractor at each keyframe: a dropped unit cannot poison
		// the ones after it.
		f.dts264, f.dts265 = nil, nil
	}
	var (
		dts int64
		err error
	)
	switch f.codec {
	case media.CodecH264:
		if f.dts264 == nil {
			f.dts264 = &h264.DTSExtractor{}
			f.dts264.Initialize()
		}
		if dts, err = f.dts264.Extract(u.Payload, pts); err == nil {
			err = f.check(f.tw.WriteH264(f.video, pts, dts, u.Payload))
		}
	case media.CodecH265:
		if f.dts265 == nil {
			f.dts265 = &h265.DTSExtractor{}
			f.dts265.Initialize()
		}
		if dts, err = f.dts265.Extract(u.Payload, pts); err == nil {
			err = f.check(f.tw.WriteH265(f.video, pts, dts, u.Payload))
		}
	}
	var we writeError
	if errors.As(err, &we) {
		return we.error
	}
	if err != nil {
		f.dts264, f.dts265 = nil, nil // skip to the next keyframe
		return nil
	}
	f.LastVideo = time.Now()
	return nil
}

// Flush writes what is buffered.
func (f *Writer) Flush() error { return f.bw.Flush() }

type writeError struct{ error }

// check marks an error of the underlying writer (a broken pipe to the
// child) as such, to tell it from a bitstream problem.
func (f *Writer) check(err error) error {
	var pe *os.PathError
	if err != nil && (errors.As(err, &pe) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.ErrShortWrite)) {
		return writeError{err}
	}
	return err
}
