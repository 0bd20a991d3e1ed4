package rtsptest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
)

// event is one access unit (video) or one audio frame of the clip, at its
// offset from the clip start.
type event struct {
	at    time.Duration // when to send it (decoding order for video)
	pts   time.Duration // its RTP timestamp offset (presentation time)
	video bool
	data  [][]byte // video: NALUs of the AU (no parameter sets) or one JPEG; audio: one frame
}

// clip is a generated media clip held in memory, ready to loop.
type clip struct {
	vps       []byte // H.265 only
	sps, pps  []byte
	aacConfig *mpeg4audio.AudioSpecificConfig
	events    []event // sorted by at
	duration  time.Duration
	videoAUs  int
}

type clipKey struct {
	video         Video // VideoH264 for VideoNone and VideoMJPEG (only the audio is used)
	audio         Audio
	fps, gop      int
	width, height int
	dur           time.Duration
}

// clipCache avoids re-running ffmpeg for every server a test binary starts:
// the clips are deterministic for given options, and the machine is small.
var clipCache = struct {
	sync.Mutex
	m map[clipKey]*clip
}{m: map[clipKey]*clip{}}

func loadClip(ffmpeg string, k clipKey) (*clip, error) {
	clipCache.Lock()
	defer clipCache.Unlock()
	if c, ok := clipCache.m[k]; ok {
		return c, nil
	}
	c, err := generateClip(ffmpeg, k)
	if err != nil {
		return nil, err
	}
	clipCache.m[k] = c
	return c, nil
}

// generateClip runs ffmpeg once: the video (H.264 Constrained Baseline,
// H.264 High with B-frames or H.265) and Opus or AAC into MPEG-TS, or
// M-JPEG into a raw file of concatenated JPEGs, plus raw 8 kHz mu-law for
// PCMU, then demuxes into memory.
func generateClip(ffmpeg string, k clipKey) (*clip, error) {
	dir, err := os.MkdirTemp("", "rtsptest-clip-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	tsPath := filepath.Join(dir, "clip.ts")
	ulawPath := filepath.Join(dir, "clip.ulaw")
	mjpegPath := filepath.Join(dir, "clip.mjpeg")
	secs := strconv.FormatFloat(k.dur.Seconds(), 'f', 3, 64)
	gop := strconv.Itoa(k.gop)
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=%d", k.width, k.height, k.fps),
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", secs}
	switch k.video {
	case VideoH264BFrames:
		args = append(args, "-map", "0:v", "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast",
			"-pix_fmt", "yuv420p", "-bf", "2", "-b_strategy", "0",
			"-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-b:v", "600k")
	case VideoH265:
		args = append(args, "-map", "0:v", "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
			"-x265-params", "log-level=error:bframes=0:repeat-headers=1:scenecut=0:keyint="+gop+":min-keyint="+gop,
			"-b:v", "600k")
	case VideoMJPEGFrames:
	default:
		args = append(args, "-map", "0:v", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast",
			"-tune", "zerolatency", "-pix_fmt", "yuv420p", "-bf", "0",
			"-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
			"-b:v", "600k")
	}
	switch k.audio {
	case AudioOpus:
		args = append(args, "-map", "1:a", "-c:a", "libopus", "-b:a", "48k", "-ac", "2")
	case AudioAAC:
		args = append(args, "-map", "1:a", "-c:a", "aac", "-b:a", "64k", "-ac", "2")
	}
	useTS := k.video != VideoMJPEGFrames || k.audio == AudioOpus || k.audio == AudioAAC
	if useTS {
		args = append(args, "-f", "mpegts", "-y", tsPath)
	}
	if k.video == VideoMJPEGFrames {
		args = append(args, "-map", "0:v", "-t", secs, "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "5", "-huffman", "default",
			"-f", "mjpeg", "-y", mjpegPath)
	}
	if k.audio == AudioPCMU {
		args = append(args, "-map", "1:a", "-t", secs, "-ar", "8000", "-ac", "1", "-f", "mulaw", "-y", ulawPath)
	}
	cmd := exec.Command(ffmpeg, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ffmpeg: %v: %s", err, stderr.String())
	}

	c := &clip{}
	if useTS {
		if err := c.demuxTS(tsPath); err != nil {
			return nil, err
		}
	}
	switch k.video {
	case VideoMJPEGFrames:
		raw, err := os.ReadFile(mjpegPath)
		if err != nil {
			return nil, err
		}
		for i, img := range splitJPEGs(raw) {
			at := time.Duration(i) * time.Second / time.Duration(k.fps)
			c.events = append(c.events, event{at: at, pts: at, video: true, data: [][]byte{img}})
			c.videoAUs++
		}
		if c.videoAUs == 0 {
			return nil, errors.New("generated clip has no JPEG")
		}
	case VideoH265:
		if c.videoAUs == 0 || c.vps == nil || c.sps == nil || c.pps == nil {
			return nil, errors.New("generated clip has no H.265 video or no VPS/SPS/PPS")
		}
	default:
		if c.videoAUs == 0 || c.sps == nil || c.pps == nil {
			return nil, errors.New("generated clip has no H.264 video or no SPS/PPS")
		}
	}
	c.duration = time.Duration(c.videoAUs) * time.Second / time.Duration(k.fps)

	if k.audio == AudioPCMU {
		raw, err := os.ReadFile(ulawPath)
		if err != nil {
			return nil, err
		}
		const frame = 160 // 20 ms at 8 kHz, what cameras send
		for i := 0; i+frame <= len(raw); i += frame {
			at := time.Duration(i/frame) * 20 * time.Millisecond
			c.events = append(c.events, event{at: at, pts: at, data: [][]byte{raw[i : i+frame]}})
		}
	}

	// Start the clip at 0 (audio may begin slightly before the first frame)
	// and keep only what fits in one loop so that loops do not overlap.
	var minAt time.Duration
	for i, ev := range c.events {
		if i == 0 || ev.at < minAt {
			minAt = ev.at
		}
	}
	kept := c.events[:0]
	for _, ev := range c.events {
		ev.at -= minAt
		ev.pts -= minAt
		if ev.at < c.duration {
			kept = append(kept, ev)
		}
	}
	c.events = kept
	sort.SliceStable(c.events, func(i, j int) bool { return c.events[i].at < c.events[j].at })
	return c, nil
}

func (c *clip) demuxTS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	r := &mpegts.Reader{R: f}
	if err := r.Initialize(); err != nil {
		return fmt.Errorf("demux clip: %w", err)
	}
	var td mpegts.TimeDecoder
	var first *int64
	rel := func(pts int64) time.Duration {
		pts = td.Decode(pts)
		if first == nil {
			first = &pts
		}
		return time.Duration(pts-*first) * time.Second / 90000
	}

	for _, tr := range r.Tracks() {
		switch codec := tr.Codec.(type) {
		case *tscodecs.H264:
			r.OnDataH264(tr, func(pts, dts int64, au [][]byte) error {
				at := rel(dts) // decoding order: B-frames are sent after their references
				pt := rel(pts)
				var nalus [][]byte
				for _, n := range au {
					switch h264.NALUType(n[0] & 0x1f) {
					// Cameras and `ffmpeg -c copy` from MP4 announce SPS/PPS in
					// the SDP only; mimic that so consumers must handle it.
					case h264.NALUTypeSPS:
						c.sps = append([]byte(nil), n...)
					case h264.NALUTypePPS:
						c.pps = append([]byte(nil), n...)
					case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeSEI:
					default:
						nalus = append(nalus, append([]byte(nil), n...))
					}
				}
				if len(nalus) > 0 {
					c.events = append(c.events, event{at: at, pts: pt, video: true, data: nalus})
					c.videoAUs++
				}
				return nil
			})
		case *tscodecs.H265:
			r.OnDataH265(tr, func(pts, dts int64, au [][]byte) error {
				at, pt := rel(dts), rel(pts)
				var nalus [][]byte
				for _, n := range au {
					// Parameter sets in the SDP only, as for H.264.
					switch h265.NALUType((n[0] >> 1) & 0x3f) {
					case h265.NALUType_VPS_NUT:
						c.vps = append([]byte(nil), n...)
					case h265.NALUType_SPS_NUT:
						c.sps = append([]byte(nil), n...)
					case h265.NALUType_PPS_NUT:
						c.pps = append([]byte(nil), n...)
					case h265.NALUType_AUD_NUT, h265.NALUType_PREFIX_SEI_NUT, h265.NALUType_SUFFIX_SEI_NUT:
					default:
						nalus = append(nalus, append([]byte(nil), n...))
					}
				}
				if len(nalus) > 0 {
					c.events = append(c.events, event{at: at, pts: pt, video: true, data: nalus})
					c.videoAUs++
				}
				return nil
			})
		case *tscodecs.Opus:
			r.OnDataOpus(tr, func(pts int64, packets [][]byte) error {
				at := rel(pts)
				for _, p := range packets {
					c.events = append(c.events, event{at: at, pts: at, data: [][]byte{append([]byte(nil), p...)}})
					at += time.Duration(opus.PacketDuration2(p)) * time.Second / 48000
				}
				return nil
			})
		case *tscodecs.MPEG4Audio:
			cfg := codec.Config
			c.aacConfig = &cfg
			r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				at := rel(pts)
				for _, au := range aus {
					c.events = append(c.events, event{at: at, pts: at, data: [][]byte{append([]byte(nil), au...)}})
					at += time.Duration(mpeg4audio.SamplesPerAccessUnit) * time.Second / time.Duration(cfg.SampleRate)
				}
				return nil
			})
		}
	}
	for {
		if err := r.Read(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("demux clip: %w", err)
		}
	}
}

// splitJPEGs splits concatenated JPEG images (ffmpeg -f mjpeg): each one
// runs from its SOI marker to its EOI marker. Entropy-coded data never
// holds a marker (0xFF is stuffed), so EOI followed by SOI is a boundary.
func splitJPEGs(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 4 && b[0] == 0xFF && b[1] == 0xD8 {
		end := bytes.Index(b, []byte{0xFF, 0xD9, 0xFF, 0xD8})
		if end < 0 {
			if e := bytes.LastIndex(b, []byte{0xFF, 0xD9}); e >= 0 {
				out = append(out, b[:e+2])
			}
			break
		}
		out = append(out, b[:end+2])
		b = b[end+2:]
	}
	return out
}
