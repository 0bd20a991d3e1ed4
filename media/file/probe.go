package file

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/icey/icey-server/media"
)

// Codec names reported in Info. Video and audio names the hub carries match
// the media.Codec* constants.
const (
	CodecH264 = media.CodecH264
	CodecH265 = media.CodecH265
	CodecOpus = media.CodecOpus
	CodecAAC  = "AAC"
)

// maxSampleSize bounds one sample read into memory, so a corrupt size table
// cannot make the reader allocate gigabytes. Matches the H.264 access unit
// bound of mediacommon.
const maxSampleSize = h264.MaxAccessUnitSize

// Info describes what Probe found in a file.
type Info struct {
	// Container is "mp4", or the name of another recognised container
	// ("matroska", "mpeg-ts", ...), or "unknown".
	Container string
	// Fragmented is true for fragmented MP4 (moof boxes); it plays like a
	// progressive one.
	Fragmented bool
	// VideoCodec is the first video track's codec: "H264", "H265", "VP9",
	// "AV1", "MPEG-4 Visual", ... or its sample entry fourcc; "" if none.
	VideoCodec string
	// AudioCodec is the chosen audio track's codec: "opus", "AAC", "MP3",
	// ... or its sample entry fourcc; "" if none.
	AudioCodec string
	// Width and Height of the H.264 or H.265 video (0 if unknown).
	Width, Height int
	// Duration of the longest selected track.
	Duration time.Duration
}

// Native reports whether the native reader plays the file: an MP4 with
// H.264 (with or without B-frames) or H.265 video, passed to the stream as
// is. Anything else (other containers, other video codecs, no video) is an
// error wrapping media.ErrUnsupportedCodec, for the caller to transcode the
// whole file instead. The warnings say what of the audio does not play as
// it is: AAC is transcoded to Opus with ffmpeg when transcodeAudio is set
// (Config.TranscodeAudio), else dropped like any other audio codec but
// Opus. A nil error with warnings means "playable, audio aside".
func (i Info) Native(transcodeAudio bool) (warnings []string, err error) {
	if i.Container != "mp4" {
		return nil, fmt.Errorf("%w: container %s (only MP4 is read directly)", media.ErrUnsupportedCodec, i.Container)
	}
	switch i.VideoCodec {
	case CodecH264, CodecH265:
	case "":
		return nil, fmt.Errorf("%w: no video track (H.264 or H.265 required)", media.ErrUnsupportedCodec)
	default:
		return nil, fmt.Errorf("%w: video codec %s (only H.264 and H.265 are read directly)", media.ErrUnsupportedCodec, i.VideoCodec)
	}
	switch i.AudioCodec {
	case "", CodecOpus:
	case CodecAAC:
		if transcodeAudio {
			warnings = append(warnings, "audio AAC is transcoded to Opus with ffmpeg")
		} else {
			warnings = append(warnings, "audio AAC is not carried without ffmpeg (only Opus); playing video only")
		}
	default:
		warnings = append(warnings, fmt.Sprintf("audio codec %s is not carried (only Opus, and AAC through ffmpeg); playing video only", i.AudioCodec))
	}
	return warnings, nil
}

// Direct is Native(false): what plays without any ffmpeg.
func (i Info) Direct() (warnings []string, err error) { return i.Native(false) }

// Probe reads the file's headers and reports its codecs. It returns an
// error wrapping media.ErrSourceUnavailable when the file is missing,
// unreadable, truncated or corrupt, and one wrapping media.ErrUnsupportedCodec
// when it is not an MP4 file (Info.Container then names what it is). An MP4
// with codecs the hub cannot carry probes fine: Info.Direct says so, and the
// caller may route it to a transcoder.
func Probe(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("%w: %v", media.ErrSourceUnavailable, err)
	}
	defer f.Close()
	c, err := load(f, path)
	if c == nil {
		return Info{}, err
	}
	return c.info, err
}

// clip is a parsed file with the tracks chosen for playback.
type clip struct {
	info  Info
	video *pmp4.Track
	h264  *codecs.H264 // one of h264, h265 is set
	h265  *codecs.H265
	audio *pmp4.Track // Opus or AAC; nil otherwise
	aac   *codecs.MPEG4Audio
	// videoDur and audioDur are the tracks' durations; period is the
	// longer one.
	videoDur, audioDur, period time.Duration
}

// playPeriod is the length of one pass: the video's, or the longer of
// video and audio when the audio is played.
func (c *clip) playPeriod(withAudio bool) time.Duration {
	if withAudio {
		return max(c.videoDur, c.audioDur)
	}
	return c.videoDur
}

// load parses r and selects tracks. On a recognised container with
// unsupported codecs it returns the clip (for its Info) with an error.
func load(r io.ReadSeeker, name string) (c *clip, err error) {
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", media.ErrSourceUnavailable, name, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", media.ErrSourceUnavailable, name, err)
	}
	var head [16]byte
	n, _ := io.ReadFull(r, head[:])
	if n < 8 {
		return nil, fmt.Errorf("%w: %s: file too short (%d bytes) to be a media file", media.ErrSourceUnavailable, name, size)
	}
	c = &clip{info: Info{Container: sniffContainer(head[:n])}}
	if c.info.Container != "mp4" {
		return c, fmt.Errorf("%w: %s is not an MP4 file (container: %s)", media.ErrUnsupportedCodec, name, c.info.Container)
	}

	lay, err := scanLayout(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: corrupt MP4: %v", media.ErrSourceUnavailable, name, err)
	}
	c.info.Fragmented = lay.fragmented
	c.info.VideoCodec, c.info.AudioCodec = lay.firstCodec("vide"), lay.firstCodec("soun")
	if !lay.moov {
		return nil, fmt.Errorf("%w: %s: corrupt or truncated MP4: no moov box", media.ErrSourceUnavailable, name)
	}

	var tracks []*pmp4.Track
	if lay.fragmented {
		tracks, err = unmarshalFragmented(r, lay)
	} else {
		var p pmp4.Presentation
		err = unmarshalSafe(&p, r)
		tracks = p.Tracks
	}
	if err != nil {
		if len(lay.tracks) > 0 && lay.supportedTracks() == 0 {
			// The parser drops tracks with codecs it does not know, then
			// fails with "no tracks found": name the codec instead.
			return c, fmt.Errorf("%w: %s: video codec %q, audio codec %q", media.ErrUnsupportedCodec, name, c.info.VideoCodec, c.info.AudioCodec)
		}
		return nil, fmt.Errorf("%w: %s: corrupt MP4: %v", media.ErrSourceUnavailable, name, err)
	}

	// Prefer H.264 to H.265 and Opus to AAC; otherwise report the first
	// track's codec.
	var firstVideo, firstAudio string
	for _, t := range tracks {
		if t.Codec == nil || len(t.Samples) == 0 || t.TimeScale == 0 {
			continue
		}
		switch cd := t.Codec.(type) {
		case *codecs.H264:
			if c.h264 == nil {
				c.video, c.h264, c.h265 = t, cd, nil
			}
		case *codecs.H265:
			if c.video == nil {
				c.video, c.h265 = t, cd
			}
		case *codecs.Opus:
			if c.audio == nil || c.aac != nil {
				c.audio, c.aac = t, nil
			}
		case *codecs.MPEG4Audio:
			if c.audio == nil {
				c.audio, c.aac = t, cd
			}
		}
		if t.Codec.IsVideo() && firstVideo == "" {
			firstVideo = codecName(t.Codec)
		} else if !t.Codec.IsVideo() && firstAudio == "" {
			firstAudio = codecName(t.Codec)
		}
	}
	c.info.VideoCodec, c.info.AudioCodec = firstVideo, firstAudio
	if c.info.VideoCodec == "" {
		c.info.VideoCodec = lay.firstCodec("vide")
	}
	if c.info.AudioCodec == "" {
		c.info.AudioCodec = lay.firstCodec("soun")
	}
	switch {
	case c.h264 != nil:
		c.info.VideoCodec = CodecH264
		var sps h264.SPS
		if sps.Unmarshal(c.h264.SPS) == nil {
			c.info.Width, c.info.Height = sps.Width(), sps.Height()
		}
	case c.h265 != nil:
		c.info.VideoCodec = CodecH265
		var sps h265.SPS
		if sps.Unmarshal(c.h265.SPS) == nil {
			c.info.Width, c.info.Height = sps.Width(), sps.Height()
		}
	}
	switch {
	case c.aac != nil:
		c.info.AudioCodec = CodecAAC
	case c.audio != nil:
		c.info.AudioCodec = CodecOpus
	}
	for _, t := range []*pmp4.Track{c.video, c.audio} {
		if t == nil {
			continue
		}
		d := trackDuration(t)
		if t == c.video {
			c.videoDur = d
		} else {
			c.audioDur = d
		}
		c.period = max(c.period, d)
		// The last sample is the one a truncated file loses first.
		last := t.Samples[len(t.Samples)-1]
		if _, err := readSample(last, size); err != nil {
			return nil, fmt.Errorf("%w: %s: truncated or corrupt MP4: %v", media.ErrSourceUnavailable, name, err)
		}
	}
	c.info.Duration = c.period
	if _, err := c.info.Direct(); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	if c.videoDur <= 0 {
		return nil, fmt.Errorf("%w: %s: MP4 with zero duration", media.ErrSourceUnavailable, name)
	}
	return c, nil
}

// unmarshalSafe runs the third-party parser, turning a panic on hostile
// input into an error: a bad file must never take the server down.
func unmarshalSafe(p *pmp4.Presentation, r io.ReadSeeker) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("parser panic: %v", v)
		}
	}()
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return p.Unmarshal(r)
}

// readSample reads one sample's payload after checking its size against
// the file and maxSampleSize.
func readSample(s *pmp4.Sample, fileSize int64) ([]byte, error) {
	if s.PayloadSize == 0 || int64(s.PayloadSize) > fileSize || s.PayloadSize > maxSampleSize {
		return nil, fmt.Errorf("invalid sample size %d", s.PayloadSize)
	}
	if s.GetPayload == nil {
		return nil, errors.New("sample without data")
	}
	b, err := s.GetPayload()
	if err != nil {
		return nil, err
	}
	return b, nil
}

func trackDuration(t *pmp4.Track) time.Duration {
	var ticks int64
	for _, s := range t.Samples {
		ticks += int64(s.Duration)
	}
	return ticksToDuration(ticks, t.TimeScale)
}

// ticksToDuration converts without overflowing for long files.
func ticksToDuration(v int64, timeScale uint32) time.Duration {
	ts := int64(timeScale)
	return time.Duration(v/ts)*time.Second + time.Duration(v%ts)*time.Second/time.Duration(ts)
}

func codecName(c codecs.Codec) string {
	switch c.(type) {
	case *codecs.H264:
		return CodecH264
	case *codecs.H265:
		return CodecH265
	case *codecs.VP9:
		return "VP9"
	case *codecs.AV1:
		return "AV1"
	case *codecs.MPEG4Video:
		return "MPEG-4 Visual"
	case *codecs.MPEG1Video:
		return "MPEG-1/2 Video"
	case *codecs.MJPEG:
		return "MJPEG"
	case *codecs.Opus:
		return CodecOpus
	case *codecs.MPEG4Audio:
		return CodecAAC
	case *codecs.MPEG1Audio:
		return "MP3"
	case *codecs.AC3:
		return "AC-3"
	case *codecs.EAC3:
		return "E-AC-3"
	case *codecs.LPCM:
		return "LPCM"
	default:
		return fmt.Sprintf("%T", c)
	}
}

// fourccName names a sample entry type that pmp4 may not know.
func fourccName(f string) string {
	switch f {
	case "avc1", "avc3":
		return CodecH264
	case "hvc1", "hev1":
		return CodecH265
	case "vp09":
		return "VP9"
	case "vp08":
		return "VP8"
	case "av01":
		return "AV1"
	case "mp4v":
		return "MPEG-4 Visual"
	case "Opus":
		return CodecOpus
	case "mp4a":
		return CodecAAC
	case ".mp3":
		return "MP3"
	case "ac-3":
		return "AC-3"
	case "ec-3":
		return "E-AC-3"
	case "fLaC":
		return "FLAC"
	}
	return f
}

// sniffContainer names the container from the file's first bytes.
func sniffContainer(b []byte) string {
	if len(b) >= 8 {
		switch string(b[4:8]) {
		case "ftyp", "styp", "moov", "mdat", "free", "skip", "wide", "pnot":
			return "mp4"
		}
	}
	switch {
	case len(b) >= 4 && binary.BigEndian.Uint32(b) == 0x1A45DFA3:
		return "matroska"
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "AVI ":
		return "avi"
	case len(b) >= 4 && string(b[:4]) == "RIFF":
		return "riff"
	case len(b) >= 3 && string(b[:3]) == "FLV":
		return "flv"
	case len(b) >= 4 && string(b[:4]) == "OggS":
		return "ogg"
	case len(b) >= 3 && string(b[:3]) == "ID3":
		return "mp3"
	case len(b) >= 1 && b[0] == 0x47:
		return "mpeg-ts"
	case len(b) >= 4 && binary.BigEndian.Uint32(b) == 0x000001BA:
		return "mpeg-ps"
	}
	return "unknown"
}

// layout is what a light walk over the box tree found: enough to name
// codecs the full parser skips and to spot fragmented or truncated files.
type layout struct {
	moov       bool
	fragmented bool
	tracks     []rawTrack
	top        []topBox // top-level boxes in file order
}

type topBox struct {
	typ      string
	off, end int64
}

type rawTrack struct {
	handler string // "vide", "soun", ...
	format  string // first sample entry fourcc
}

func (l layout) firstCodec(handler string) string {
	for _, t := range l.tracks {
		if t.handler == handler && t.format != "" {
			return fourccName(t.format)
		}
	}
	return ""
}

// supportedTracks counts tracks whose sample entry pmp4 understands.
func (l layout) supportedTracks() int {
	n := 0
	for _, t := range l.tracks {
		switch t.format {
		case "avc1", "avc3", "hvc1", "hev1", "vp09", "av01", "mp4v", "mp4a", "Opus", "fLaC", "ac-3", "ec-3", "ipcm", "c608":
			n++
		}
	}
	return n
}

const maxBoxDepth = 12

func scanLayout(r io.ReadSeeker, size int64) (layout, error) {
	var l layout
	err := l.walk(r, 0, size, 0)
	return l, err
}

func (l *layout) walk(r io.ReadSeeker, off, end int64, depth int) error {
	if depth > maxBoxDepth {
		return errors.New("boxes nested too deep")
	}
	for end-off >= 8 {
		var hdr [16]byte
		if err := readAt(r, off, hdr[:8]); err != nil {
			return err
		}
		sz := int64(binary.BigEndian.Uint32(hdr[:4]))
		typ := string(hdr[4:8])
		hl := int64(8)
		switch sz {
		case 1:
			if err := readAt(r, off+8, hdr[8:16]); err != nil {
				return err
			}
			u := binary.BigEndian.Uint64(hdr[8:16])
			if u > uint64(end) {
				return fmt.Errorf("box %q larger than the file: truncated", typ)
			}
			sz, hl = int64(u), 16
		case 0: // extends to the end of the enclosing space
			sz = end - off
		}
		if sz < hl || sz > end-off {
			return fmt.Errorf("box %q at %d claims %d bytes, %d left: truncated", printable(typ), off, sz, end-off)
		}
		body, bodyEnd := off+hl, off+sz
		if depth == 0 {
			l.top = append(l.top, topBox{typ: typ, off: off, end: bodyEnd})
		}
		switch typ {
		case "moov":
			l.moov = true
			if err := l.walk(r, body, bodyEnd, depth+1); err != nil {
				return err
			}
		case "trak":
			l.tracks = append(l.tracks, rawTrack{})
			if err := l.walk(r, body, bodyEnd, depth+1); err != nil {
				return err
			}
		case "mdia", "minf", "stbl":
			if err := l.walk(r, body, bodyEnd, depth+1); err != nil {
				return err
			}
		case "mvex", "moof":
			l.fragmented = true
		case "hdlr":
			// version+flags(4) pre_defined(4) handler_type(4)
			var b [12]byte
			if len(l.tracks) > 0 && bodyEnd-body >= 12 && readAt(r, body, b[:]) == nil {
				l.tracks[len(l.tracks)-1].handler = string(b[8:12])
			}
		case "stsd":
			// version+flags(4) entry_count(4), then the first entry's box header.
			var b [16]byte
			if len(l.tracks) > 0 && bodyEnd-body >= 16 && readAt(r, body, b[:]) == nil {
				l.tracks[len(l.tracks)-1].format = printable(string(b[12:16]))
			}
		}
		off = bodyEnd
	}
	return nil
}

func readAt(r io.ReadSeeker, off int64, b []byte) error {
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		return err
	}
	_, err := io.ReadFull(r, b)
	return err
}

// printable keeps error messages readable when a fourcc is garbage.
func printable(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Sprintf("%x", s)
		}
	}
	return s
}
