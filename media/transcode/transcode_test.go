package transcode

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
)

// checkLeaks: see testenv.CheckGoroutines.
func checkLeaks(t *testing.T) { t.Helper(); testenv.CheckGoroutines(t) }

// makeClip writes a short test clip with ffmpeg and returns its path.
func makeClip(t *testing.T, name string, codecArgs ...string) string {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), name)
	args := append([]string{"-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2"},
		codecArgs...)
	args = append(args, "-y", out)
	if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
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

type tally struct {
	aus, keyframes, audio int
}

// collect subscribes once tracks are declared and counts media until
// stop returns true or Read fails (stream closed, deadline).
func collect(ctx context.Context, t *testing.T, st *media.Stream, stop func(tally) bool) tally {
	t.Helper()
	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatalf("no tracks: %v", err)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var tl tally
	buf := make([]*media.Packet, 64)
	for !stop(tl) {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			return tl
		}
		for _, p := range buf[:n] {
			switch {
			case p.Kind == media.KindAudio:
				tl.audio++
			case p.Keyframe:
				tl.keyframes++
			}
			if p.Kind == media.KindVideo && p.RTP.Marker {
				tl.aus++
			}
		}
	}
	return tl
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
			st := media.NewStream(media.StreamConfig{Name: tc.name}, nil)
			defer st.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			t0 := time.Now()
			go func() { done <- src.Run(ctx, st) }()

			tl := collect(ctx, t, st, func(tl tally) bool { return tl.aus >= 25 && (tl.audio >= 25 || !tc.audio) })
			tr := st.Tracks()
			if tr.Video == nil {
				t.Fatal("no video track")
			}
			switch {
			case tc.audio && (tr.Audio == nil || tr.Audio.Codec != media.CodecOpus || tr.Audio.ClockRate != 48000):
				t.Fatalf("audio track %+v, want Opus/48000", tr.Audio)
			case !tc.audio && (tr.Audio != nil || tl.audio != 0):
				t.Fatalf("audio track %+v (%d packets) from an input without audio", tr.Audio, tl.audio)
			}
			if tl.keyframes == 0 || tl.aus < 25 || (tc.audio && tl.audio < 25) {
				t.Fatalf("got %+v", tl)
			}
			// profile_idc 66 with constraint_set1: Constrained Baseline.
			if sps := tr.Video.SPS; len(sps) < 3 || sps[1] != 66 || sps[2]&0x40 == 0 {
				t.Errorf("SPS %x is not Constrained Baseline", sps)
			}
			// A 2 s file without Loop ends by itself: Run returns nil.
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run = %v, want nil at end of file", err)
				}
			case <-ctx.Done():
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
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()

	// 3 s of a 2 s clip: the loop keeps media coming.
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	var first time.Time
	tl := collect(rctx, t, st, func(tl tally) bool {
		if first.IsZero() && tl.aus > 0 {
			first = time.Now()
		}
		return !first.IsZero() && time.Since(first) > 3*time.Second
	})
	// More than the clip's 50 frames proves the loop; the reader also must
	// not have seen the stream end.
	t.Logf("%+v in 3 s", tl)
	if tl.aus <= 55 {
		t.Fatalf("only %d AUs in 3 s of a looping 2 s, 25 fps file", tl.aus)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while looping", err)
	default:
	}
	pid := int(src.pid.Load())
	if pid == 0 {
		t.Fatal("no ffmpeg pid")
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// Reaped, not a zombie: the /proc entry is gone once Wait returned.
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !os.IsNotExist(err) {
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
			st := media.NewStream(media.StreamConfig{}, nil)
			defer st.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = src.Run(ctx, st)
			t.Logf("Run: %v", err)
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
