package file

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/icey/icey-server/media"
)

func TestProbe(t *testing.T) {
	tests := []struct {
		clip       string
		video      string
		audio      string
		container  string
		probeErr   error // from Probe
		newErr     error // from New
		warns      int
		errMention string
	}{
		{clip: "h264-opus-2s", video: "H264", audio: "opus", container: "mp4"},
		{clip: "h264-opus-1s", video: "H264", audio: "opus", container: "mp4"},
		{clip: "h264-only", video: "H264", container: "mp4"},
		{clip: "h264-aac", video: "H264", audio: "AAC", container: "mp4", warns: 1},
		{clip: "vp9-opus", video: "VP9", audio: "opus", container: "mp4",
			probeErr: media.ErrUnsupportedCodec, newErr: media.ErrUnsupportedCodec, errMention: "VP9"},
		{clip: "hevc", video: "H265", container: "mp4"},
		{clip: "mpeg4", video: "MPEG-4 Visual", container: "mp4",
			probeErr: media.ErrUnsupportedCodec, newErr: media.ErrUnsupportedCodec, errMention: "MPEG-4"},
		{clip: "opus-only", audio: "opus", container: "mp4",
			probeErr: media.ErrUnsupportedCodec, newErr: media.ErrUnsupportedCodec, errMention: "no video"},
		{clip: "fragmented", video: "H264", audio: "opus", container: "mp4"},
		{clip: "fragmented-abs", video: "H264", container: "mp4"},
		{clip: "mkv", container: "matroska",
			probeErr: media.ErrUnsupportedCodec, newErr: media.ErrUnsupportedCodec, errMention: "matroska"},
	}
	for _, tc := range tests {
		t.Run(tc.clip, func(t *testing.T) {
			p := testClip(t, tc.clip)
			info, err := Probe(p)
			if !errors.Is(err, tc.probeErr) || (tc.probeErr == nil) != (err == nil) {
				t.Fatalf("Probe err = %v, want %v", err, tc.probeErr)
			}
			if info.Container != tc.container || info.VideoCodec != tc.video || info.AudioCodec != tc.audio {
				t.Errorf("Probe = %+v, want container %q video %q audio %q", info, tc.container, tc.video, tc.audio)
			}
			if err == nil && (info.Duration < 400*time.Millisecond || info.Duration > 2100*time.Millisecond) {
				t.Errorf("duration %v", info.Duration)
			}
			if (tc.video == "H264" || tc.video == "H265") && err == nil && (info.Width != 320 || info.Height != 180) {
				t.Errorf("size %dx%d", info.Width, info.Height)
			}
			src, err := New(Config{Path: p}, nil)
			if !errors.Is(err, tc.newErr) || (tc.newErr == nil) != (err == nil) {
				t.Fatalf("New err = %v, want %v", err, tc.newErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.errMention) {
					t.Errorf("error %q does not name %q", err, tc.errMention)
				}
				return
			}
			if got := len(src.Warnings()); got != tc.warns {
				t.Errorf("warnings %q, want %d", src.Warnings(), tc.warns)
			}
			if src.Kind() != "file" || src.String() != p {
				t.Errorf("Kind/String = %q %q", src.Kind(), src.String())
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	good, err := os.ReadFile(testClip(t, "h264-opus-2s"))
	if err != nil {
		t.Fatal(err)
	}
	moovAtEnd, err := os.ReadFile(testClip(t, "h264-opus-1s"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	check := func(t *testing.T, name string, b []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, f := range []func() error{
			func() error { _, err := Probe(p); return err },
			func() error { _, err := New(Config{Path: p}, nil); return err },
			func() error { _, err := NewFromReader(name, bytes.NewReader(b), false, nil); return err },
		} {
			err := f()
			if err == nil {
				t.Fatalf("%s (%d bytes): no error", name, len(b))
			}
			if !errors.Is(err, media.ErrSourceUnavailable) && !errors.Is(err, media.ErrUnsupportedCodec) {
				t.Fatalf("%s: error %v wraps no sentinel", name, err)
			}
		}
	}

	t.Run("missing", func(t *testing.T) {
		_, err := New(Config{Path: filepath.Join(dir, "nope.mp4")}, nil)
		if !errors.Is(err, media.ErrSourceUnavailable) {
			t.Fatalf("err = %v", err)
		}
		_, err = Probe(filepath.Join(dir, "nope.mp4"))
		if !errors.Is(err, media.ErrSourceUnavailable) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("empty", func(t *testing.T) { check(t, "empty.mp4", nil) })
	t.Run("truncated", func(t *testing.T) {
		// Every prefix length class: inside ftyp, moov, mdat, and one byte short.
		cuts := []int{1, 7, 8, 20, 100, 500, 1000, 4000}
		for f := 0.05; f < 1; f += 0.05 {
			cuts = append(cuts, int(float64(len(good))*f))
		}
		cuts = append(cuts, len(good)-1)
		for _, n := range cuts {
			check(t, "trunc-faststart.mp4", good[:n])
			if n < len(moovAtEnd) {
				check(t, "trunc-moovend.mp4", moovAtEnd[:n])
			}
		}
	})
	t.Run("random", func(t *testing.T) {
		rng := rand.New(rand.NewSource(1))
		for i := 0; i < 50; i++ {
			b := make([]byte, rng.Intn(20000))
			rng.Read(b)
			if i%2 == 0 && len(b) >= 8 {
				copy(b[4:8], "ftyp") // get past the container sniffing
			}
			check(t, "random.mp4", b)
		}
	})
	t.Run("corrupt moov", func(t *testing.T) {
		// Flip bytes inside the moov box (at the start of a faststart file):
		// the parse must fail cleanly or produce a playable file, never panic.
		rng := rand.New(rand.NewSource(2))
		for i := 0; i < 300; i++ {
			b := append([]byte(nil), good...)
			for j := 0; j < 1+rng.Intn(4); j++ {
				b[32+rng.Intn(3000)] = byte(rng.Intn(256))
			}
			src, err := NewFromReader("corrupt.mp4", bytes.NewReader(b), false, nil)
			if err != nil {
				if !errors.Is(err, media.ErrSourceUnavailable) && !errors.Is(err, media.ErrUnsupportedCodec) {
					t.Fatalf("error %v wraps no sentinel", err)
				}
				continue
			}
			// Still parseable: playing it must not panic either (fast, by
			// running past the schedule: offset the pacer into the past).
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = src.runFast(ctx, &recorder{})
			cancel()
			if err != nil && !errors.Is(err, media.ErrSourceUnavailable) && !errors.Is(err, media.ErrUnsupportedCodec) {
				t.Fatalf("run error %v wraps no sentinel", err)
			}
		}
	})
}

// runFast plays the whole file without pacing.
func (s *Source) runFast(ctx context.Context, st media.Writer) error {
	return s.runWith(ctx, st, false)
}

func TestRunPacedNoLoop(t *testing.T) {
	src, err := New(Config{Path: testClip(t, "h264-opus-2s")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	start := time.Now()
	if err := src.Run(context.Background(), rec); err != nil {
		t.Fatalf("Run = %v, want nil at the end of the file", err)
	}
	took := time.Since(start)
	if took < 1900*time.Millisecond || took > 4*time.Second {
		t.Errorf("Run took %v for a 2 s file", took)
	}
	ev := rec.snapshot()
	if ev[0].kind != "tracks" || ev[0].tr.Video == nil || ev[0].tr.Audio == nil ||
		ev[0].tr.Audio.Codec != media.CodecOpus || ev[0].tr.Audio.ClockRate != 48000 || len(ev[0].tr.Video.SPS) == 0 {
		t.Fatalf("first event %+v, want tracks with H.264 and Opus", ev[0])
	}
	if n := rec.count("video"); n != 60 {
		t.Errorf("%d video access units, want 60", n)
	}
	if n := rec.count("audio"); n < 99 || n > 102 {
		t.Errorf("%d audio frames, want ~100", n)
	}
	if rec.count("disc") != 0 {
		t.Error("discontinuity without loop")
	}
	firstVideo := true
	var maxLate time.Duration
	last := map[string]time.Duration{"video": -1, "audio": -1}
	for _, e := range ev[1:] {
		if e.kind == "video" && firstVideo {
			firstVideo = false
			if !h264.IsRandomAccess(e.au) {
				t.Error("first access unit is not an IDR")
			}
		}
		if e.kind == "video" {
			for _, n := range e.au {
				if len(n) == 0 || n[0]&0x80 != 0 {
					t.Fatalf("bad NALU %x", n[:min(4, len(n))])
				}
			}
		}
		if e.pts <= last[e.kind] {
			t.Fatalf("%s pts %v after %v", e.kind, e.pts, last[e.kind])
		}
		last[e.kind] = e.pts
		// Each sample is written when due: never early (timer resolution
		// aside), and not much late on a loaded machine.
		rel := e.at.Sub(start)
		if rel < e.pts-20*time.Millisecond {
			t.Fatalf("%s pts %v written early at %v", e.kind, e.pts, rel)
		}
		if late := rel - e.pts; late > maxLate {
			maxLate = late
		}
	}
	t.Logf("2 s file played in %v, max lateness %v", took, maxLate)
	if maxLate > 700*time.Millisecond {
		t.Errorf("samples up to %v late", maxLate)
	}
}

func TestRunLoop(t *testing.T) {
	src, err := New(Config{Path: testClip(t, "h264-opus-1s"), Loop: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec) }()
	deadline := time.Now().Add(10 * time.Second)
	for rec.count("disc") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	cancelAt := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
		if d := time.Since(cancelAt); d > 500*time.Millisecond {
			t.Errorf("Run returned %v after cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if rec.count("disc") < 2 || src.Loops() < 2 {
		t.Fatalf("%d discontinuities, %d loops, want >= 2", rec.count("disc"), src.Loops())
	}
	// Timestamps keep increasing across loop points; a keyframe follows
	// every discontinuity.
	last := map[string]time.Duration{"video": -1, "audio": -1}
	afterDisc := false
	for _, e := range rec.snapshot() {
		switch e.kind {
		case "disc":
			afterDisc = true
		case "video", "audio":
			if e.pts <= last[e.kind] {
				t.Fatalf("%s pts went from %v to %v", e.kind, last[e.kind], e.pts)
			}
			if e.kind == "video" && afterDisc {
				afterDisc = false
				if !h264.IsRandomAccess(e.au) {
					t.Error("first access unit after a loop is not an IDR")
				}
				// One frame interval (plus the audio tail) after the last.
				if gap := e.pts - last["video"]; gap < 30*time.Millisecond || gap > 60*time.Millisecond {
					t.Errorf("video pts gap at loop %v", gap)
				}
			}
			last[e.kind] = e.pts
		}
	}
}

func TestRunCancelPrompt(t *testing.T) {
	src, err := New(Config{Path: testClip(t, "h264-opus-2s")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = src.Run(ctx, &recorder{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v", err)
	}
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Errorf("Run took %v to notice cancellation", d)
	}
}

func TestBFramesPTS(t *testing.T) {
	src, err := New(Config{Path: testClip(t, "h264-bframes")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if err := src.runFast(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	// Decode order differs from presentation order, but the presentation
	// times are the 30 fps grid starting at 0 (the composition shift of the
	// first frame is removed, as the file's edit list says).
	seen := map[time.Duration]bool{}
	for _, e := range rec.snapshot() {
		if e.kind == "video" {
			seen[e.pts.Round(time.Millisecond)] = true
		}
	}
	if len(seen) != 30 || !seen[0] || !seen[(29*time.Second/30).Round(time.Millisecond)] {
		t.Errorf("presentation times %v", seen)
	}
}

func TestRunFileReplacedByGarbage(t *testing.T) {
	b, err := os.ReadFile(testClip(t, "h264-only"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "x.mp4")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := New(Config{Path: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := src.Run(context.Background(), &recorder{}); !errors.Is(err, media.ErrSourceUnavailable) {
		t.Fatalf("Run on a truncated file = %v", err)
	}
	os.Remove(p)
	if err := src.Run(context.Background(), &recorder{}); !errors.Is(err, media.ErrSourceUnavailable) {
		t.Fatalf("Run on a missing file = %v", err)
	}
}

func TestNewFromReaderConcurrentRuns(t *testing.T) {
	b, err := os.ReadFile(testClip(t, "h264-opus-1s"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewFromReader("mem.mp4", bytes.NewReader(b), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if src.String() != "mem.mp4" {
		t.Errorf("String = %q", src.String())
	}
	var wg sync.WaitGroup
	recs := []*recorder{{}, {}, {}}
	for _, r := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := src.runFast(context.Background(), r); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, r := range recs {
		if r.count("video") != 30 {
			t.Errorf("video %d", r.count("video"))
		}
	}
}

// FuzzLoad feeds arbitrary bytes (seeded with the embedded test clip and
// its damaged variants) to the parser and player: errors are fine, panics
// and hangs are not. `go test` runs the seeds; `go test -fuzz FuzzLoad`
// explores further.
func FuzzLoad(f *testing.F) {
	clip, err := os.ReadFile("../builtin/testclip.mp4")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(clip[:4096])
	// Small whole files of both layouts, when ffmpeg is there to make them.
	if ffmpeg, err := exec.LookPath("ffmpeg"); err == nil {
		for _, name := range []string{"fragmented-abs", "h264-only"} {
			if p, err := genClip(ffmpeg, name); err == nil {
				if b, err := os.ReadFile(p); err == nil {
					f.Add(b)
				}
			}
		}
	}
	f.Add([]byte("\x00\x00\x00\x08ftyp"))
	f.Add([]byte("\x00\x00\x00\x01moov\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		src, err := NewFromReader("fuzz.mp4", bytes.NewReader(b), false, nil)
		if err != nil {
			if !errors.Is(err, media.ErrSourceUnavailable) && !errors.Is(err, media.ErrUnsupportedCodec) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = src.runFast(ctx, &recorder{})
	})
}

// After a stall longer than maxLag the pacer shifts its schedule instead of
// bursting the backlog; a small lag is caught up without waiting.
func TestPacerLag(t *testing.T) {
	p := pacer{start: time.Now().Add(-5 * time.Second), timer: time.NewTimer(time.Hour)}
	defer p.timer.Stop()
	t0 := time.Now()
	if err := p.wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if shift := time.Since(p.start); shift > 100*time.Millisecond {
		t.Errorf("schedule not shifted after a 5 s stall: start %v ago", shift)
	}
	// The next frame is now due one frame interval later, not at once.
	if err := p.wait(context.Background(), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 40*time.Millisecond {
		t.Errorf("next frame after the stall came %v later, want ~50 ms", d)
	}
	small := pacer{start: time.Now().Add(-300 * time.Millisecond), timer: time.NewTimer(time.Hour)}
	defer small.timer.Stop()
	before := small.start
	if err := small.wait(context.Background(), 0); err != nil || !small.start.Equal(before) {
		t.Errorf("small lag: err %v, start moved %v", err, small.start.Sub(before))
	}
}

// A fragmented remux of a progressive file delivers the same samples at
// the same times (within 10 ms: ffmpeg's remux drops the Opus pre-skip edit
// list and stretches the first video frame by 6.5 ms instead).
func TestFragmentedSameAsProgressive(t *testing.T) {
	play := func(clip string) map[string][]event {
		src, err := New(Config{Path: testClip(t, clip)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := src.Info().Fragmented; got != strings.HasSuffix(clip, "-frag") {
			t.Errorf("%s: Fragmented = %v", clip, got)
		}
		rec := &recorder{}
		if err := src.runFast(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		m := map[string][]event{}
		for _, e := range rec.snapshot() {
			m[e.kind] = append(m[e.kind], e)
		}
		return m
	}
	prog, frag := play("h264-opus-2s"), play("h264-opus-2s-frag")
	for _, kind := range []string{"video", "audio"} {
		p, f := prog[kind], frag[kind]
		if len(p) != len(f) || len(p) == 0 {
			t.Fatalf("%s: %d samples progressive, %d fragmented", kind, len(p), len(f))
		}
		for i := range p {
			if d := p[i].pts - f[i].pts; d < -10*time.Millisecond || d > 10*time.Millisecond {
				t.Fatalf("%s %d: pts %v progressive, %v fragmented", kind, i, p[i].pts, f[i].pts)
			}
			if !bytes.Equal(p[i].frame, f[i].frame) || len(p[i].au) != len(f[i].au) {
				t.Fatalf("%s %d: payloads differ", kind, i)
			}
			for j := range p[i].au {
				if !bytes.Equal(p[i].au[j], f[i].au[j]) {
					t.Fatalf("%s %d: NALU %d differs", kind, i, j)
				}
			}
		}
	}
}
