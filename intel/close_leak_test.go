package intel

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/testenv"
)

// Analyzer.Close while its tap decodes a live stream (ffmpeg running for
// video and audio) and the vision and speech loops consume it: every
// goroutine ends (tap runner, ffmpeg readers and feeder, both loops) and
// the detector sees no frame after Close returns.
func TestCloseLeaksAnalyzer(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	leaktest.Check(t)
	st := artSource(t)
	an := NewAnalyzer(st, AnalyzerConfig{Path: "cam",
		Vision:   VisionConfig{Enabled: true},
		Speech:   SpeechConfig{Enabled: true},
		OnVision: func(VisionEvent) {},
		OnSpeech: func(SpeechPayload) {},
	}, nil)
	an.Start()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, _ := an.Stats()
		if v.DetectorSeen >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the analyser's detector saw %d frames in 20 s: %+v", v.DetectorSeen, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	an.Close()
	took := time.Since(start)
	an.Close() // idempotent
	v, s := an.Stats()
	time.Sleep(500 * time.Millisecond)
	if v2, _ := an.Stats(); v2.DetectorSeen != v.DetectorSeen {
		t.Errorf("detector saw %d more frames after Close", v2.DetectorSeen-v.DetectorSeen)
	}
	t.Logf("Analyzer.Close after %d frames seen (sampled %.1f fps, decoder restarts %d, speech queue dropped %d) returned in %v",
		v.DetectorSeen, v.SampledFps, v.DecoderRestarts, s.QueueDropped, took.Round(time.Millisecond))
}

// Snapshots.Close while two snapshots (two paths) are being encoded by
// ffmpeg: Close waits for them, both files are images ffprobe reads, and
// nothing of theirs keeps running.
func TestCloseLeaksSnapshots(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	leaktest.Check(t)
	st := artSource(t)
	at := artWaitMedia(t, st, 500*time.Millisecond)
	dir := t.TempDir()
	s, err := NewSnapshots(dir, time.Second, ffmpeg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var names []string
	for _, path := range []string{"cam", "door"} {
		name, _, ok := s.Go(path, st, at, now)
		if !ok {
			t.Fatalf("%s: snapshot refused", path)
		}
		names = append(names, name)
	}
	start := time.Now()
	s.Close()
	took := time.Since(start)
	for _, name := range names {
		if p, err := testenv.FFprobe(t, filepath.Join(dir, name)); err != nil || p.Streams["video"].Width != 320 {
			t.Errorf("%s after Close: %+v %v", name, p, err)
		}
	}
	if _, _, ok := s.Go("cam", st, at, now.Add(time.Hour)); ok {
		t.Error("snapshot accepted after Close")
	}
	artNoPart(t, dir)
	t.Logf("Snapshots.Close waited %v for %d snapshots under way; taken %d", took.Round(time.Millisecond), len(names), s.Taken())
}

// Clipper.Close during an open clip (30 s post-roll): the clip's writer
// goroutine ends, the clip is finalized and reported before Close returns.
func TestCloseLeaksClipper(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	leaktest.Check(t)
	st := artSource(t)
	dir := t.TempDir()
	got := &artClips{ch: make(chan ClipInfo, 4)}
	c, err := NewClipper(ClipConfig{Dir: dir, PreRoll: time.Second, PostRoll: 30 * time.Second}, st, "cam", got.on, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := artWaitMedia(t, st, 1500*time.Millisecond)
	if name, _ := c.Trigger(at, time.Now()); name == "" {
		t.Fatal("no clip started")
	}
	artWaitMedia(t, st, at+time.Second)
	start := time.Now()
	c.Close()
	took := time.Since(start)
	var ci ClipInfo
	select {
	case ci = <-got.ch:
	default:
		t.Fatal("Close returned before the clip was reported")
	}
	p, err := testenv.FFprobe(t, ci.Path)
	if err != nil || p.Streams["video"].Codec != "h264" {
		t.Fatalf("clip after Close: %+v %v", p, err)
	}
	c.Close()
	artNoPart(t, dir)
	t.Logf("Clipper.Close finalized an open clip of %.2f s (%d bytes) in %v", p.Duration, ci.Size, took.Round(time.Millisecond))
}
