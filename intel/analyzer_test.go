package intel

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/file"
)

// One analyser on the clip: motion events only while the square moves
// (±300 ms), the largest region over the square; speech:start and
// speech:end at the tone's edges (±250 ms, the end after minSilence);
// payloads in the contract's shape.
func TestAnalyzerMotionAndSpeech(t *testing.T) {
	testenv.CheckGoroutines(t)
	clip := testpeer.MotionClip(t, t.TempDir())
	src, err := file.New(file.Config{Path: clip}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "lobby"}, nil)
	defer st.Close()
	var (
		mu     sync.Mutex
		vision []VisionEvent
		speech []SpeechPayload
	)
	an := NewAnalyzer(st, AnalyzerConfig{Path: "lobby",
		Vision:   VisionConfig{Enabled: true}, // the contract's defaults
		Speech:   SpeechConfig{Enabled: true},
		OnVision: func(e VisionEvent) { mu.Lock(); vision = append(vision, e); mu.Unlock() },
		OnSpeech: func(e SpeechPayload) { mu.Lock(); speech = append(speech, e); mu.Unlock() },
	}, nil)
	// The tap subscribes before the first write, so it sees the clip from
	// its start.
	an.Start()
	defer an.Close()
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := src.Run(ctx, st); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the decoder's last frames
	mu.Lock()
	defer mu.Unlock()
	if len(vision) == 0 {
		t.Fatal("no motion event")
	}
	first, last := time.Duration(vision[0].Frame.PTSUsec)*time.Microsecond, time.Duration(vision[len(vision)-1].Frame.PTSUsec)*time.Microsecond
	t.Logf("%d motion events from %v to %v", len(vision), first, last)
	// Events only while the square moves (1 s to 3 s, ±300 ms), the first
	// within 300 ms of its start, and on through the motion (the cooldown
	// is 500 ms: one at least in its last second).
	if first < 700*time.Millisecond || first > 1300*time.Millisecond || last < 2*time.Second || last > 3300*time.Millisecond {
		t.Fatalf("motion events from %v to %v, want from 1 s ±300 ms, on until 3 s, none after 3.3 s", first, last)
	}
	for _, e := range vision {
		pts := time.Duration(e.Frame.PTSUsec) * time.Microsecond
		if e.Schema != "vision.event.v1" || e.Source != "lobby" || e.Detector != "motion" || e.Frame.Width != 320 || e.Frame.Height != 240 ||
			e.Data.Grid.Width != 32 || len(e.Data.Grid.Cells) != 32*18 || len(e.Detections) == 0 {
			t.Fatalf("event %+v", e)
		}
		// The square's box at that time, normalized.
		x := testpeer.MotionX(pts.Seconds())
		sx, sy, sw, sh := x/320, float64(testpeer.MotionY)/240, float64(testpeer.MotionSquare)/320, float64(testpeer.MotionSquare)/240
		r := e.Detections[0].Region
		if r.X > sx+sw+0.1 || r.X+r.Width < sx-0.1 || r.Y > sy+sh+0.05 || r.Y+r.Height < sy-0.05 {
			t.Fatalf("at %v the largest region %+v does not overlap the square (%.2f,%.2f %.2fx%.2f)", pts, r, sx, sy, sw, sh)
		}
	}
	var starts, ends []time.Duration
	for _, e := range speech {
		switch e.Type {
		case SpeechStart:
			starts = append(starts, time.Duration(e.Time)*time.Microsecond)
		case SpeechEnd:
			ends = append(ends, time.Duration(e.Time)*time.Microsecond)
		}
		if e.Source != "lobby" || e.Detector != "energy_vad" || e.Audio.SampleRate != 16000 {
			t.Fatalf("speech event %+v", e)
		}
	}
	t.Logf("speech starts %v ends %v", starts, ends)
	want := []time.Duration{0, 2 * time.Second, 4 * time.Second}
	if len(starts) != 3 || len(ends) < 2 {
		t.Fatalf("starts %v ends %v, want starts at %v", starts, ends, want)
	}
	for i, s := range starts {
		if d := s - want[i]; d < -250*time.Millisecond || d > 250*time.Millisecond {
			t.Fatalf("speech:start at %v, want %v ±250 ms", s, want[i])
		}
	}
	for i, e := range ends[:2] {
		// The tone stops at 1 s and 3 s; the end is told once the silence
		// lasted minSilence (250 ms).
		if d := e - (want[i] + time.Second + 250*time.Millisecond); d < -250*time.Millisecond || d > 250*time.Millisecond {
			t.Fatalf("speech:end at %v, want %v ±250 ms", e, want[i]+time.Second+250*time.Millisecond)
		}
	}
	vs, ss := an.Stats()
	t.Logf("vision %+v speech %+v", vs, ss)
	if vs.DetectorEmitted != uint64(len(vision)) || vs.DetectorSeen < 20 || vs.DecoderCPU <= 0 {
		t.Fatalf("vision stats %+v", vs)
	}
}
