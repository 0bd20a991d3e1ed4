package renditions

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
)

func startSource(t *testing.T) (*media.Stream, func()) {
	t.Helper()
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{FPS: 25, GOP: 50, Seconds: 4})
	src := media.NewStream(media.StreamConfig{Name: "src"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); testpeer.Play(ctx, src, clip, true) }()
	// Wait for the first keyframe, as a path does before its first viewer.
	deadline := time.Now().Add(5 * time.Second)
	for src.Stats().LastKeyframeAt.IsZero() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return src, func() { cancel(); wg.Wait(); src.Close() }
}

// measure reads a rendition's stream for d: video units per second,
// keyframes and audio units.
func measure(t *testing.T, st *media.Stream, d time.Duration) (fps float64, keys, audio int, codec string) {
	t.Helper()
	sub, err := st.Subscribe("m", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var video int
	var firstPTS, lastPTS time.Duration
	buf := make([]*media.Unit, 32)
	for {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			break
		}
		for _, u := range buf[:n] {
			if u.Kind == media.KindAudio {
				audio++
				continue
			}
			codec = u.Codec
			if u.Keyframe {
				keys++
			}
			if u.FromCache {
				continue // the rate is measured on live units
			}
			if video == 0 {
				firstPTS = u.PTS
			}
			lastPTS = u.PTS
			video++
		}
	}
	if video > 1 {
		fps = float64(video-1) / (lastPTS - firstPTS).Seconds()
	}
	return fps, keys, audio, codec
}

// One rendition per target codec, shared by its viewers, at the source's
// frame rate with the source's audio copied; stopped after the last viewer
// left and the linger time passed.
func TestRenditionsSharedAndStopped(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	src, stop := startSource(t)
	defer stop()
	set := New("cam", src, Config{Linger: 300 * time.Millisecond}, nil)
	defer set.Close()

	for _, codec := range Targets {
		t.Run(codec, func(t *testing.T) {
			began := time.Now()
			st1, rel1, err := set.Acquire(context.Background(), codec)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: first keyframe after %s", codec, time.Since(began).Round(time.Millisecond))
			st2, rel2, err := set.Acquire(context.Background(), codec)
			if err != nil {
				t.Fatal(err)
			}
			if st1 != st2 {
				t.Fatal("two viewers of one codec got two renditions")
			}
			stats := set.Stats()
			if len(stats) != 1 || stats[0].Viewers != 2 || stats[0].Pid == 0 {
				t.Fatalf("stats %+v", stats)
			}
			pid := stats[0].Pid
			fps, keys, audio, got := measure(t, st1, 3*time.Second)
			t.Logf("%s: %.1f fps, %d keyframes, %d audio units", codec, fps, keys, audio)
			if got != codec || fps < 22.5 || fps > 27.5 || keys < 1 || audio < 100 {
				t.Fatalf("%s rendition: codec %s, %.1f fps, %d keyframes, %d audio units", codec, got, fps, keys, audio)
			}
			rel1()
			rel2()
			deadline := time.Now().Add(5 * time.Second)
			for (len(set.Stats()) > 0 || syscall.Kill(pid, 0) == nil) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := len(set.Stats()); n != 0 {
				t.Fatalf("%d renditions still running after their viewers left", n)
			}
			if syscall.Kill(pid, 0) == nil {
				t.Fatalf("ffmpeg %d still running", pid)
			}
		})
	}
}

// Killing ffmpeg mid-stream: the rendition restarts it (counted), its
// stream keeps the same viewers and frames flow again within seconds.
func TestRenditionRestartsDeadFFmpeg(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	src, stop := startSource(t)
	defer stop()
	set := New("cam", src, Config{MinBackoff: 100 * time.Millisecond}, nil)
	defer set.Close()
	st, rel, err := set.Acquire(context.Background(), media.CodecVP8)
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	pid := set.Stats()[0].Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	deadline := killed.Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s := set.Stats()[0]; s.Restarts == 1 && s.State == "up" && s.Pid != pid {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := set.Stats()[0]
	if s.Restarts != 1 || s.State != "up" {
		t.Fatalf("after kill: %+v", s)
	}
	t.Logf("up again %s after the kill", time.Since(killed).Round(time.Millisecond))
	fps, keys, _, _ := measure(t, st, 2*time.Second)
	if fps < 22.5 || fps > 27.5 || keys < 1 {
		t.Fatalf("after restart: %.1f fps, %d keyframes", fps, keys)
	}
	if s.CPUSeconds <= 0 {
		t.Fatalf("CPU not counted: %+v", s)
	}
}

// Without ffmpeg a rendition is refused with ErrNoFFmpeg, at once.
func TestRenditionWithoutFFmpeg(t *testing.T) {
	src := media.NewStream(media.StreamConfig{}, nil)
	defer src.Close()
	src.SetTracks(media.Tracks{Video: &media.VideoParams{}})
	set := New("cam", src, Config{FFmpegPath: "/nonexistent/ffmpeg"}, nil)
	defer set.Close()
	if _, _, err := set.Acquire(context.Background(), media.CodecVP8); err != ErrNoFFmpeg {
		t.Fatalf("err = %v, want ErrNoFFmpeg", err)
	}
	if _, _, err := set.Acquire(context.Background(), "AV1"); err == nil {
		t.Fatal("AV1 accepted")
	}
}

// A source restart (its run ends, a new one starts: Discontinuity, tracks
// declared again) does not end the rendition: the same ffmpeg goes on and
// its viewers get pictures again.
func TestRenditionSurvivesSourceRestart(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{FPS: 25, GOP: 25, Seconds: 2})
	src := media.NewStream(media.StreamConfig{Name: "src"}, nil)
	defer src.Close()
	run := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); testpeer.Play(ctx, src, clip, true) }()
		return func() { cancel(); <-done }
	}
	stop := run()
	for src.Stats().LastKeyframeAt.IsZero() {
		time.Sleep(10 * time.Millisecond)
	}
	set := New("cam", src, Config{}, nil)
	defer set.Close()
	st, rel, err := set.Acquire(context.Background(), media.CodecH264)
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	pid := set.Stats()[0].Pid
	time.Sleep(time.Second)
	stop()
	time.Sleep(500 * time.Millisecond) // the camera is away
	src.Discontinuity()
	stop = run()
	defer stop()
	fps, keys, _, _ := measure(t, st, 3*time.Second)
	s := set.Stats()[0]
	if fps < 22.5 || fps > 27.5 || keys < 1 || s.Restarts != 0 || s.Pid != pid {
		t.Fatalf("after the source restarted: %.1f fps, %d keyframes, stats %+v (pid was %d)", fps, keys, s, pid)
	}
}
