package testpeer

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/icey/icey-server/internal/testenv"
)

// Video encodings for MediaOptions.Video.
const (
	MediaH264Baseline    = "h264-baseline"     // libx264 constrained baseline, no B-frames
	MediaH264HighBFrames = "h264-high-bframes" // libx264 High, 2 B-frames (x264's default)
	MediaH265            = "h265"              // libx265 Main, no B-frames
	MediaVP8             = "vp8"               // libvpx
	MediaMJPEG           = "mjpeg"             // full-range 4:2:0 JPEGs
)

// Audio encodings for MediaOptions.Audio ("" for none).
const (
	MediaOpus = "opus" // libopus 48 kHz stereo, 20 ms frames
	MediaAAC  = "aac"  // AAC-LC 48 kHz stereo
	MediaPCMU = "pcmu" // G.711 mu-law 8 kHz mono
)

// MediaOptions describe a file MakeMedia writes. Zero fields take the
// defaults.
type MediaOptions struct {
	Video string // MediaH264Baseline (default), MediaH264HighBFrames, MediaH265, MediaVP8, MediaMJPEG, or "none"
	Audio string // MediaOpus, MediaAAC, MediaPCMU or "" (none)
	FPS   int    // default 25
	Size  string // WxH, default "320x240"
	// Seconds is the length (default 4); the GOP is 1 s (FPS frames).
	Seconds float64
	// Container is an ffmpeg muxer name. The default fits the codecs: mp4
	// for H.264/H.265 with Opus, AAC or no audio; webm for VP8 with Opus
	// or none; mkv otherwise (M-JPEG, PCMU). Elementary streams need no
	// audio: "h264" and "hevc" (Annex-B, with an access unit delimiter in
	// front of every access unit), "ivf" (VP8), "mjpeg" (concatenated
	// JPEGs).
	Container string
	// Name of the file in dir (default "media." + the container's usual
	// extension).
	Name string
}

var containerExt = map[string]string{"mp4": ".mp4", "webm": ".webm", "matroska": ".mkv", "mkv": ".mkv", "mov": ".mov",
	"h264": ".h264", "hevc": ".h265", "ivf": ".ivf", "mjpeg": ".mjpeg", "mpegts": ".ts"}

// MakeMedia writes a test file into dir with ffmpeg (the testsrc2 pattern
// and a 440 Hz tone) and returns its path. It fails tb when ffmpeg or an
// encoder is missing or ffmpeg refuses the combination.
func MakeMedia(tb testing.TB, dir string, o MediaOptions) string {
	tb.Helper()
	args, path, err := mediaArgs(dir, o)
	if err != nil {
		tb.Fatal(err)
	}
	t, ok := tb.(*testing.T)
	var ffmpeg string
	if ok {
		ffmpeg = testenv.RequireTool(t, "ffmpeg")
	} else if ffmpeg, err = exec.LookPath("ffmpeg"); err != nil {
		tb.Fatalf("ffmpeg not found: %v", err)
	}
	cmd := exec.Command(ffmpeg, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
	}
	return path
}

// mediaArgs builds MakeMedia's ffmpeg command line.
func mediaArgs(dir string, o MediaOptions) (args []string, path string, err error) {
	if o.Video == "" {
		o.Video = MediaH264Baseline
	}
	if o.FPS <= 0 {
		o.FPS = 25
	}
	if o.Size == "" {
		o.Size = "320x240"
	}
	if o.Seconds <= 0 {
		o.Seconds = 4
	}
	if o.Video == "none" && o.Audio == "" {
		return nil, "", fmt.Errorf("testpeer.MakeMedia: neither video nor audio")
	}
	if o.Container == "" {
		switch {
		case (o.Video == MediaH264Baseline || o.Video == MediaH264HighBFrames || o.Video == MediaH265) && o.Audio != MediaPCMU:
			o.Container = "mp4"
		case o.Video == MediaVP8 && (o.Audio == MediaOpus || o.Audio == ""):
			o.Container = "webm"
		default:
			o.Container = "matroska"
		}
	}
	if o.Name == "" {
		ext, ok := containerExt[o.Container]
		if !ok {
			ext = "." + o.Container
		}
		o.Name = "media" + ext
	}
	path = filepath.Join(dir, o.Name)
	gop := strconv.Itoa(o.FPS)
	secs := strconv.FormatFloat(o.Seconds, 'f', 3, 64)
	args = []string{"-nostdin", "-hide_banner", "-v", "error", "-y"}
	if o.Video != "none" {
		args = append(args, "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=%d", o.Size, o.FPS))
	}
	if o.Audio != "" {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
	}
	args = append(args, "-t", secs)
	keyint := []string{"-g", gop, "-keyint_min", gop, "-sc_threshold", "0"}
	switch o.Video {
	case "none":
	case MediaH264Baseline:
		args = append(args, "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "0")
		args = append(args, keyint...)
		args = append(args, "-x264-params", "aud=1")
	case MediaH264HighBFrames:
		args = append(args, "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "2")
		args = append(args, keyint...)
		args = append(args, "-x264-params", "aud=1")
	case MediaH265:
		args = append(args, "-c:v", "libx265", "-preset", "veryfast", "-pix_fmt", "yuv420p",
			"-x265-params", fmt.Sprintf("log-level=error:aud=1:bframes=0:keyint=%s:min-keyint=%s:scenecut=0:repeat-headers=1", gop, gop))
		if o.Container == "mp4" || o.Container == "mov" {
			args = append(args, "-tag:v", "hvc1")
		}
	case MediaVP8:
		args = append(args, "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-pix_fmt", "yuv420p",
			"-g", gop, "-keyint_min", gop)
	case MediaMJPEG:
		args = append(args, "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "5")
	default:
		return nil, "", fmt.Errorf("testpeer.MakeMedia: unknown video %q", o.Video)
	}
	switch o.Audio {
	case "":
	case MediaOpus:
		args = append(args, "-c:a", "libopus", "-b:a", "64k", "-ac", "2", "-frame_duration", "20")
	case MediaAAC:
		args = append(args, "-c:a", "aac", "-b:a", "64k", "-ac", "2")
	case MediaPCMU:
		args = append(args, "-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1")
	default:
		return nil, "", fmt.Errorf("testpeer.MakeMedia: unknown audio %q", o.Audio)
	}
	if o.Container == "mp4" || o.Container == "mov" {
		args = append(args, "-movflags", "+faststart")
	}
	args = append(args, "-f", o.Container, path)
	return args, path, nil
}
