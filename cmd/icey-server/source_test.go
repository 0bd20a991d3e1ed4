package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
)

// makeMP4 writes a 2 s clip with the given codec arguments.
func makeMP4(t *testing.T, name string, codec ...string) string {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), name)
	args := append([]string{"-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2"}, codec...)
	if b, err := exec.Command(ffmpeg, append(args, out)...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	return out
}

// The source kind decides the path: H.264+Opus plays directly, AAC and
// other codecs go through one ffmpeg transcode; without ffmpeg, AAC plays
// video-only with a warning and other codecs fail the source check clearly.
func TestFileSourcePaths(t *testing.T) {
	h264opus := makeMP4(t, "direct.mp4", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "25", "-c:a", "libopus", "-ac", "2")
	h264aac := makeMP4(t, "aac.mp4", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "25", "-c:a", "aac")
	vp9 := makeMP4(t, "vp9.mp4", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", "-ac", "2")

	stream := func(p *proc) map[string]any {
		_, st, _ := p.get(t, "/api/status")
		return st["stream"].(map[string]any)
	}
	cases := []struct {
		name, file string
		noFFmpeg   bool
		audio      string
		warning    string
	}{
		{"h264+opus direct", h264opus, false, "opus", ""},
		{"aac transcoded", h264aac, false, "opus", "transcoded to Opus"},
		{"vp9 transcoded", vp9, false, "opus", "VP9"},
		{"aac without ffmpeg: video only", h264aac, true, "", "AAC"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var env []string
			if tc.noFFmpeg {
				env = append(env, "PATH="+t.TempDir())
			}
			p := launch(t, []string{"--source", tc.file}, env...)
			p.waitFor(t, "/api/ready", 200, 30*time.Second)
			s := stream(p)
			if s["sourceKind"] != "file" || s["video"] != "H264" {
				t.Fatalf("stream %v", s)
			}
			if got, _ := s["audio"].(string); got != tc.audio {
				t.Fatalf("audio %q, want %q (stream %v)", got, tc.audio, s)
			}
			w := strings.Join(toStrings(s["warnings"]), " | ")
			if tc.warning != "" && !strings.Contains(w, tc.warning) {
				t.Fatalf("warnings %q lack %q", w, tc.warning)
			}
			if tc.warning == "" && w != "" {
				t.Fatalf("unexpected warnings %q", w)
			}
		})
	}
	t.Run("vp9 without ffmpeg exits 4", func(t *testing.T) {
		p := launch(t, []string{"--source", vp9}, "PATH="+t.TempDir())
		if code := p.wait(t, 20*time.Second); code != 4 {
			t.Fatalf("exit %d: %s", code, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), "VP9") || !strings.Contains(p.stderr.String(), "install ffmpeg") {
			t.Fatalf("message: %s", p.stderr)
		}
	})
}

func toStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
