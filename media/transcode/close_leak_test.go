package transcode

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// AudioPipe.Close while ffmpeg is converting (G.722 in, Opus out, paced
// in real time): ffmpeg is reaped, Done is closed, the writer and reader
// goroutines end and no Opus frame is delivered after Close returns.
func TestCloseLeaksAudioPipe(t *testing.T) {
	leaktest.Check(t)
	raw := makeClip(t, "a.g722", "-map", "1:a", "-c:a", "g722", "-ar", "16000", "-ac", "1", "-f", "g722")
	in := readG722(t, raw)
	p, err := StartAudio(context.Background(), AudioConfig{Codec: AudioG722, OnOpus: func(time.Duration, []byte) {}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	t0 := time.Now()
	for _, a := range in {
		if p.Frames() >= 20 {
			break
		}
		time.Sleep(time.Until(t0.Add(a.pts - in[0].pts)))
		p.WriteG722(a.pts, a.aus[0])
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Frames() < 20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p.Frames() == 0 {
		t.Fatal("no Opus frame out of the pipe")
	}
	start := time.Now()
	p.Close()
	took := time.Since(start)
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed when Close returned")
	}
	frames := p.Frames()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("ffmpeg %d still exists after Close", pid)
	}
	p.WriteG722(time.Hour, in[0].aus[0]) // after Close: dropped, no panic
	p.Close()                            // idempotent
	time.Sleep(200 * time.Millisecond)
	if p.Frames() != frames {
		t.Errorf("%d Opus frames delivered after Close", p.Frames()-frames)
	}
	t.Logf("AudioPipe.Close after %d Opus frames: ffmpeg %d reaped in %v (err %v)", frames, pid, took.Round(time.Millisecond), p.Err())
	if !errors.Is(p.Err(), ErrPipeClosed) {
		t.Errorf("Err after Close = %v, want ErrPipeClosed (the caller's Close is no failure)", p.Err())
	}
}
