package tsdemux

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
)

// clip has ffmpeg write 2 s of the test picture (25 fps, a keyframe every
// second) and a tone as MPEG-TS with the given video encoder arguments.
func clip(t *testing.T, video ...string) []byte {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "clip.ts")
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", "2", "-g", "25", "-pix_fmt", "yuv420p"}
	args = append(append(args, video...), "-c:a", "aac", "-ac", "2", "-f", "mpegts", "-y", out)
	if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// play demuxes ts into a new Stream (unpaced) and returns the stream and
// the warnings.
func play(t *testing.T, ts []byte) (*media.Stream, []string, error) {
	t.Helper()
	st := media.NewStream(media.StreamConfig{Name: "ts"}, nil)
	t.Cleanup(st.Close)
	var warns []string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Play(ctx, bytes.NewReader(ts), st, Options{OnTracks: func(w []string) { warns = w }})
	return st, warns, err
}

// H.265 passes through as it is: Codec H265 units, the in-band parameter
// sets learned, one keyframe a second.
func TestH265PassesThrough(t *testing.T) {
	st, warns, err := play(t, clip(t, "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:bframes=0"))
	if errors.Is(err, media.ErrUnsupportedCodec) {
		t.Fatalf("Play = %v", err)
	}
	tr := st.Tracks()
	if tr.Video == nil || tr.Video.Codec != media.CodecH265 || len(tr.Video.VPS) == 0 || len(tr.Video.SPS) == 0 {
		t.Fatalf("video track %+v", tr.Video)
	}
	units := st.Units(0)
	var video, keys int
	for _, u := range units {
		if u.Kind != media.KindVideo {
			continue
		}
		if u.Codec != media.CodecH265 {
			t.Fatalf("unit codec %q", u.Codec)
		}
		video++
		if u.Keyframe {
			keys++
		}
	}
	if video < 48 || keys != 2 {
		t.Errorf("%d H.265 units, %d keyframes: want 50, 2", video, keys)
	}
	if vi := st.VideoInfo(); vi.Codec != media.CodecH265 || vi.Width != 320 || vi.Height != 240 {
		t.Errorf("VideoInfo %+v", vi)
	}
	if w := strings.Join(warns, "; "); !strings.Contains(w, "MPEG4Audio dropped") {
		t.Errorf("warnings %q (AAC without ffmpeg is dropped)", w)
	}
}

// H.264 with B-frames: written in decoding order with presentation times,
// which go backwards; the stream notices.
func TestH264BFramesPTS(t *testing.T) {
	st, _, err := play(t, clip(t, "-c:v", "libx264", "-profile:v", "high", "-preset", "fast", "-bf", "2"))
	if errors.Is(err, media.ErrUnsupportedCodec) {
		t.Fatalf("Play = %v", err)
	}
	var pts []time.Duration
	for _, u := range st.Units(0) {
		if u.Kind == media.KindVideo {
			pts = append(pts, u.PTS)
		}
	}
	back := 0
	for i := 1; i < len(pts); i++ {
		if pts[i] < pts[i-1] {
			back++
		}
	}
	if len(pts) < 48 || back == 0 {
		t.Errorf("%d units, PTS back %d times: %v", len(pts), back, pts)
	}
	if vi := st.VideoInfo(); !vi.BFrames || vi.Codec != media.CodecH264 {
		t.Errorf("VideoInfo %+v", vi)
	}
}

// Other video is refused before anything is written, for the caller to
// transcode the whole stream.
func TestOtherVideoRefused(t *testing.T) {
	st, _, err := play(t, clip(t, "-c:v", "mpeg2video"))
	if !errors.Is(err, media.ErrUnsupportedCodec) || !strings.Contains(err.Error(), "H.265") {
		t.Fatalf("Play = %v, want ErrUnsupportedCodec", err)
	}
	if tr := st.Tracks(); tr.Video != nil {
		t.Errorf("tracks declared: %+v", tr)
	}
}
