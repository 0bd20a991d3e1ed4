package intel

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

// The tap decodes a stream once into grid-sized grey frames with the
// stream's timestamps, at its frame rate, and Opus audio into 20 ms blocks
// of 16 kHz PCM on the same timeline; a killed decoder is restarted and
// counted, and frames come again.
func TestTapDecodesFramesAndAudio(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{FPS: 25, GOP: 25, Seconds: 2})
	st := media.NewStream(media.StreamConfig{Name: "cam"}, nil)
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		testpeer.Play(ctx, st, clip, true)
	}()
	defer func() { cancel(); wg.Wait() }()

	tap := NewTap(st, TapConfig{Video: true, Audio: true, GridWidth: 32, GridHeight: 18, FrameQueue: 64, AudioQueue: 256, MinBackoff: 100 * time.Millisecond}, nil)
	tctx, tcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tap.Run(tctx) }()
	defer func() { tcancel(); <-done }()

	collect := func(d time.Duration) (frames []TapFrame, blocks []AudioBlock) {
		end := time.After(d)
		for {
			select {
			case f := <-tap.Frames():
				frames = append(frames, f)
			case b := <-tap.Audio():
				blocks = append(blocks, b)
			case <-end:
				return
			}
		}
	}
	collect(500 * time.Millisecond) // start-up
	frames, blocks := collect(2 * time.Second)
	if len(frames) < 45 || len(frames) > 55 {
		t.Fatalf("%d frames in 2 s, want ~50", len(frames))
	}
	for i, f := range frames {
		if len(f.Luma) != 32*18 {
			t.Fatalf("frame of %d bytes", len(f.Luma))
		}
		if i > 0 {
			if d := f.PTS - frames[i-1].PTS; d < 35*time.Millisecond || d > 45*time.Millisecond {
				t.Fatalf("frame %d: PTS step %v, want 40 ms", i, d)
			}
		}
		if f.FedAt.IsZero() {
			t.Fatalf("frame %d (PTS %v) without its fed time", i, f.PTS)
		}
	}
	if len(blocks) < 85 || len(blocks) > 115 {
		t.Fatalf("%d audio blocks in 2 s, want ~100", len(blocks))
	}
	if b := blocks[len(blocks)-1]; b.SampleRate != 16000 || len(b.Samples) != 320 {
		t.Fatalf("block %+v", b)
	}
	// Audio and video on one timeline (within 200 ms).
	if d := blocks[len(blocks)-1].PTS - frames[len(frames)-1].PTS; d > 200*time.Millisecond || d < -200*time.Millisecond {
		t.Fatalf("audio at %v, video at %v", blocks[len(blocks)-1].PTS, frames[len(frames)-1].PTS)
	}
	var peak int16
	for _, b := range blocks {
		for _, s := range b.Samples {
			peak = max(peak, s)
		}
	}
	if peak < 1000 {
		t.Fatalf("decoded audio is silent (peak %d) for a 440 Hz tone", peak)
	}

	pid := tap.Stats().Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	collect(1500 * time.Millisecond)
	frames, _ = collect(time.Second)
	s := tap.Stats()
	if s.Restarts != 1 || s.Pid == pid || s.Pid == 0 || len(frames) < 20 {
		t.Fatalf("after the kill: %+v, %d frames in 1 s", s, len(frames))
	}
}

// G.711 audio is decoded without ffmpeg.
func TestTapG711WithoutFFmpeg(t *testing.T) {
	testenv.CheckGoroutines(t)
	st := media.NewStream(media.StreamConfig{Name: "cam"}, nil)
	defer st.Close()
	st.SetTracks(media.Tracks{Audio: &media.AudioParams{Codec: media.CodecPCMU, ClockRate: 8000, Channels: 1}})
	tap := NewTap(st, TapConfig{Audio: true, FFmpegPath: "/nonexistent"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tap.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)
	frame := make([]byte, 160)
	for i := range frame {
		frame[i] = 0x00 // mu-law: the most negative sample, -32124
	}
	st.WriteAudio(0, frame)
	select {
	case b := <-tap.Audio():
		if b.SampleRate != 8000 || len(b.Samples) != 160 || b.Samples[0] > -30000 {
			t.Fatalf("block %+v", b.Samples[:4])
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no audio block")
	}
}
