package app

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media/file"
	"github.com/icey/icey-server/media/transcode"
)

// The file source reads H.264 (B-frames too) and H.265 MP4 natively, AAC
// through an audio-only ffmpeg, and transcodes only what it cannot read.
func TestBuildSourceFile(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	dir := t.TempDir()
	gen := func(name string, args ...string) string {
		out := filepath.Join(dir, name)
		args = append([]string{"-hide_banner", "-loglevel", "error", "-y",
			"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "0.5"},
			append(args, out)...)
		if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %s: %v %s", name, err, b)
		}
		return out
	}
	h264aac := gen("h264-aac.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high", "-bf", "2", "-c:a", "aac")
	h265 := gen("h265.mp4", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1", "-an")
	mpeg4 := gen("mpeg4.mp4", "-c:v", "mpeg4", "-c:a", "aac")

	build := func(path string) (any, []string) {
		t.Helper()
		cfg := config.Default()
		cfg.Media.Source = path
		s, warns, err := buildSource(cfg, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return s, warns
	}

	s, warns := build(h264aac)
	if _, ok := s.(*file.Source); !ok {
		t.Errorf("H.264 + AAC: %T, want the native file source", s)
	}
	if w := strings.Join(warns, "; "); w != "audio AAC is transcoded to Opus with ffmpeg" {
		t.Errorf("H.264 + AAC warnings %q", w)
	}

	s, warns = build(h265)
	if _, ok := s.(*file.Source); !ok || len(warns) != 0 {
		t.Errorf("H.265: %T %q, want the native file source without warnings", s, warns)
	}

	s, warns = build(mpeg4)
	if _, ok := s.(*transcode.Source); !ok {
		t.Errorf("MPEG-4 Visual: %T, want the ffmpeg transcode", s)
	}
	if w := strings.Join(warns, "; "); !strings.Contains(w, "MPEG-4 Visual") || !strings.Contains(w, "transcoding with ffmpeg") {
		t.Errorf("MPEG-4 Visual warnings %q", w)
	}

	// Without ffmpeg, AAC is dropped (video plays) and MPEG-4 is refused.
	t.Setenv("PATH", t.TempDir())
	if transcode.Available() {
		t.Fatal("ffmpeg still found")
	}
	s, warns = build(h264aac)
	if _, ok := s.(*file.Source); !ok {
		t.Errorf("H.264 + AAC without ffmpeg: %T", s)
	}
	if w := strings.Join(warns, "; "); !strings.Contains(w, "AAC is not carried") || !strings.Contains(w, "video only") {
		t.Errorf("H.264 + AAC without ffmpeg: warnings %q", w)
	}
	cfg := config.Default()
	cfg.Media.Source = mpeg4
	if _, _, err := buildSource(cfg, nil); err == nil || !strings.Contains(err.Error(), "MPEG-4 Visual") {
		t.Errorf("MPEG-4 Visual without ffmpeg: err %v", err)
	}
}
