package file

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
)

var (
	clipDir  string
	clipMu   sync.Mutex
	clipMemo = map[string]string{}
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "icey-file-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clipDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// Short test clips, each generated once per test binary run. Video is
// 320x180 at 30 fps with a 1 s GOP and no B-frames, like a browser-safe file.
var clipArgs = map[string][]string{
	"h264-opus-2s": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0",
		"-c:a", "libopus", "-b:a", "32k", "-ac", "2", "-movflags", "+faststart"},
	"h264-opus-1s": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "1", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0",
		"-c:a", "libopus", "-b:a", "32k", "-ac", "2"}, // moov at the end
	"h264-aac": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "1", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0",
		"-c:a", "aac", "-movflags", "+faststart"},
	"h264-only": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
		"-t", "1", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0",
		"-movflags", "+faststart"},
	"h264-bframes": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "1", "-c:v", "libx264", "-profile:v", "main", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "2",
		"-c:a", "libopus", "-ac", "2", "-movflags", "+faststart"},
	"vp9-opus": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "1", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k",
		"-c:a", "libopus", "-ac", "2"},
	"hevc": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
		"-t", "0.5", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1"},
	"mpeg4": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-t", "0.5", "-c:v", "mpeg4"},
	// B-frames as a camera or an encoder's "high" preset writes them.
	"h264-high-bf2": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx264", "-profile:v", "high", "-preset", "fast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "2",
		"-c:a", "libopus", "-ac", "2", "-movflags", "+faststart"},
	"h264-aac-2s": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "2", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0",
		"-c:a", "aac", "-ac", "2", "-movflags", "+faststart"},
	"hevc-aac": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=30:bframes=0", "-tag:v", "hvc1",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-movflags", "+faststart"},
	"opus-only": {"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1", "-c:a", "libopus", "-ac", "2"},
	"fragmented": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "1", "-c:a", "libopus", "-ac", "2", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0",
		"-movflags", "frag_keyframe+empty_moov+default_base_moof"},
	// The 2 s clip remuxed as fragmented MP4: same samples, other layout.
	"h264-opus-2s-frag": {"-i", "@h264-opus-2s", "-c", "copy", "-movflags", "frag_keyframe+empty_moov+default_base_moof"},
	"fragmented-abs": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
		"-t", "0.5", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "5", "-bf", "0",
		"-movflags", "frag_keyframe+empty_moov"}, // absolute base_data_offset
	"mkv": {"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
		"-t", "0.5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "matroska"},
}

// testClip returns the path of a generated clip.
func testClip(t *testing.T, name string) string {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	p, err := genClip(ffmpeg, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// genClip generates a clip once per test binary run.
func genClip(ffmpeg, name string) (string, error) {
	args, ok := clipArgs[name]
	if !ok {
		return "", fmt.Errorf("no clip %q", name)
	}
	// "@clip" arguments name another generated clip (remuxes).
	args = append([]string(nil), args...)
	for i, a := range args {
		if strings.HasPrefix(a, "@") {
			p, err := genClip(ffmpeg, a[1:])
			if err != nil {
				return "", err
			}
			args[i] = p
		}
	}
	clipMu.Lock()
	defer clipMu.Unlock()
	if p, ok := clipMemo[name]; ok {
		return p, nil
	}
	ext := ".mp4"
	if name == "mkv" {
		ext = ".mkv"
	}
	out := filepath.Join(clipDir, name+ext)
	cmd := exec.Command(ffmpeg, append(append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...), out)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("ffmpeg %s: %v\n%s", name, err, b)
	}
	clipMemo[name] = out
	return out, nil
}

// event is one call a source made on its media.Writer.
type event struct {
	kind  string // "tracks", "video", "audio", "disc"
	pts   time.Duration
	at    time.Time
	au    [][]byte
	frame []byte
	tr    media.Tracks
}

// recorder is a media.Writer that records every call.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) add(e event) {
	e.at = time.Now()
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) SetTracks(t media.Tracks) { r.add(event{kind: "tracks", tr: t}) }
func (r *recorder) WriteH264(pts time.Duration, au [][]byte) {
	r.add(event{kind: "video", pts: pts, au: au})
}
func (r *recorder) WriteH265(pts time.Duration, au [][]byte) {
	r.add(event{kind: "video", pts: pts, au: au})
}
func (r *recorder) WriteAudio(pts time.Duration, f []byte) {
	r.add(event{kind: "audio", pts: pts, frame: f})
}
func (r *recorder) Discontinuity() { r.add(event{kind: "disc"}) }

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

func (r *recorder) count(kind string) int {
	n := 0
	for _, e := range r.snapshot() {
		if e.kind == kind {
			n++
		}
	}
	return n
}
