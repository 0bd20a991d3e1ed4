package transcode

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
)

// checkLeaks: see testenv.CheckGoroutines.
func checkLeaks(t *testing.T) { t.Helper(); testenv.CheckGoroutines(t) }

// makeClip writes a 2 s test clip (tone at 44.1 kHz) with ffmpeg and
// returns its path.
func makeClip(t *testing.T, name string, codecArgs ...string) string {
	t.Helper()
	testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), name)
	childtest.WriteClip(t, out, 44100, append([]string{"-t", "2"}, codecArgs...)...)
	return out
}

func mp4AAC(t *testing.T) string {
	// High profile with B-frames and AAC: nothing a browser gets as is.
	return makeClip(t, "in.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high",
		"-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2")
}

func webmVP8(t *testing.T) string {
	return makeClip(t, "in.webm", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
		"-b:v", "500k", "-c:a", "libvorbis", "-ac", "2")
}

func TestTranscodeFiles(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		name  string
		clip  func(*testing.T) string
		audio bool
	}{
		{"mp4-h264-high-aac", mp4AAC, true},
		{"webm-vp8-vorbis", webmVP8, true},
		{"mkv-mpeg4-no-audio", func(t *testing.T) string {
			return makeClip(t, "in.mkv", "-map", "0:v", "-c:v", "mpeg4", "-q:v", "5")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			src, err := New(Config{Input: tc.clip(t), Width: 160}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if src.Kind() != KindFile {
				t.Errorf("Kind() = %q", src.Kind())
			}
			t0 := time.Now()
			r := childtest.Start(t, src, 30*time.Second)
			tl := childtest.Count(r.Ctx, t, r.Stream, func(tl childtest.Tally) bool { return tl.AUs >= 25 && (tl.Audio >= 25 || !tc.audio) })
			tr := r.Stream.Tracks()
			if tr.Video == nil {
				t.Fatal("no video track")
			}
			switch {
			case tc.audio && (tr.Audio == nil || tr.Audio.Codec != media.CodecOpus || tr.Audio.ClockRate != 48000):
				t.Fatalf("audio track %+v, want Opus/48000", tr.Audio)
			case !tc.audio && (tr.Audio != nil || tl.Audio != 0):
				t.Fatalf("audio track %+v (%d packets) from an input without audio", tr.Audio, tl.Audio)
			}
			if tl.Keyframes == 0 || tl.AUs < 25 || (tc.audio && tl.Audio < 25) {
				t.Fatalf("got %+v", tl)
			}
			// profile_idc 66 with constraint_set1: Constrained Baseline.
			if sps := tr.Video.SPS; len(sps) < 3 || sps[1] != 66 || sps[2]&0x40 == 0 {
				t.Errorf("SPS %x is not Constrained Baseline", sps)
			}
			// A 2 s file without Loop ends by itself: Run returns nil.
			select {
			case <-r.Done():
				if err := r.Err(); err != nil {
					t.Fatalf("Run = %v, want nil at end of file", err)
				}
			case <-r.Ctx.Done():
				t.Fatal("Run did not return at end of file")
			}
			// -re paces in real time: 2 s of media takes about 2 s.
			if d := time.Since(t0); d < 1500*time.Millisecond {
				t.Errorf("a 2 s file ended after %s: not paced", d)
			}
			t.Logf("%+v in %s", tl, time.Since(t0).Round(time.Millisecond))
		})
	}
}

func TestTranscodeLoopAndCancelKillsFFmpeg(t *testing.T) {
	checkLeaks(t)
	src, err := New(Config{Input: mp4AAC(t), Loop: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := childtest.Start(t, src, 0)

	// 3 s of a 2 s clip: the loop keeps media coming.
	rctx, rcancel := context.WithTimeout(r.Ctx, 30*time.Second)
	defer rcancel()
	var first time.Time
	tl := childtest.Count(rctx, t, r.Stream, func(tl childtest.Tally) bool {
		if first.IsZero() && tl.AUs > 0 {
			first = time.Now()
		}
		return !first.IsZero() && time.Since(first) > 3*time.Second
	})
	// More than the clip's 50 frames proves the loop; the reader also must
	// not have seen the stream end.
	t.Logf("%+v in 3 s", tl)
	if tl.AUs <= 55 {
		t.Fatalf("only %d AUs in 3 s of a looping 2 s, 25 fps file", tl.AUs)
	}
	select {
	case <-r.Done():
		t.Fatalf("Run returned %v while looping", r.Err())
	default:
	}
	pid := int(src.pid.Load())
	if pid == 0 {
		t.Fatal("no ffmpeg pid")
	}

	r.Cancel()
	if err := r.Wait(t, 5*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	// Reaped, not a zombie: the /proc entry is gone once Wait returned.
	if !childtest.Gone(pid) {
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		t.Fatalf("ffmpeg %d still exists after cancel: %s", pid, stat)
	}
}

func TestTranscodeFailures(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		name, input string
		want        string
	}{
		{"missing-file", filepath.Join(t.TempDir(), "nope.mp4"), "No such file"},
		{"refused-url", "http://admin:hunter22secret@127.0.0.1:1/live.ts", "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			src, err := New(Config{Input: tc.input}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = childtest.RunErr(t, src, 20*time.Second)
			if !errors.Is(err, media.ErrSourceUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want ErrSourceUnavailable mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter22secret") || strings.Contains(src.String(), "hunter22secret") {
				t.Errorf("credentials leaked: %v / %s", err, src.String())
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		cfg  Config
		want string // "" = valid
		kind string
	}{
		{Config{Input: "/tmp/a.mkv"}, "", KindFile},
		{Config{Input: "v4l2:/dev/video0"}, "", KindDevice},
		{Config{Input: "srt://127.0.0.1:9000"}, "", KindURL},
		{Config{Input: "/dev/video0", Kind: KindDevice}, "v4l2:", ""},
		{Config{Input: "x", Kind: "tape"}, "kind", ""},
		{Config{}, "no input", ""},
		{Config{Input: "a.mp4", FFmpegPath: "/nonexistent/ffmpeg"}, "ffmpeg not found", ""},
	} {
		s, err := New(tc.cfg, nil)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("New(%+v) = %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		case tc.want == "" && s.Kind() != tc.kind:
			t.Errorf("New(%+v).Kind() = %q, want %q", tc.cfg, s.Kind(), tc.kind)
		}
	}
	if !Available() {
		t.Error("Available() = false with ffmpeg installed")
	}
}
