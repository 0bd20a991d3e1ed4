package intel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/recordings"
)

var (
	artClipOnce sync.Once
	artClipData *testpeer.Clip
)

// artClip is a 320x240 H.264 + Opus clip with a keyframe every second.
func artClip(t *testing.T) *testpeer.Clip {
	t.Helper()
	artClipOnce.Do(func() { artClipData = testpeer.MakeClip(t, testpeer.ClipOptions{FPS: 25, GOP: 25, Seconds: 4}) })
	if artClipData == nil {
		t.Fatal("no clip")
	}
	return artClipData
}

// artSource plays the clip (looped) into a new stream in real time until
// the test ends, and returns once the first keyframe is published.
func artSource(t *testing.T) *media.Stream {
	t.Helper()
	c := artClip(t)
	st := media.NewStream(media.StreamConfig{Name: "cam"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	go func() {
		defer close(done)
		testpeer.Play(ctx, st, c, true)
	}()
	artWaitMedia(t, st, 0)
	return st
}

// artWaitMedia waits until the stream's newest unit is at least pts.
func artWaitMedia(t *testing.T, st *media.Stream, pts time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs := st.Ring().Stats()
		if rs.Keyframes > 0 && rs.Newest >= pts {
			return rs.Newest
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream did not reach %v", pts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func artNoPart(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".part") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind in %s: %s", dir, e.Name())
		}
	}
}

// A snapshot of a live stream at a given PTS is a PNG of the stream's size
// that ffprobe reads; JPEG too.
func TestSnapshotPNG(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	st := artSource(t)
	at := 1300 * time.Millisecond
	artWaitMedia(t, st, at+200*time.Millisecond)
	units := st.Ring().Units(at)
	if len(units) == 0 || !units[0].Keyframe || units[0].PTS > at {
		t.Fatalf("ring: %d units", len(units))
	}
	dir := t.TempDir()
	for _, name := range []string{"snap.png", "snap.jpg"} {
		file := filepath.Join(dir, name)
		w, h, err := Snapshot(context.Background(), ffmpeg, units, at, file)
		if err != nil {
			t.Fatal(err)
		}
		if w != 320 || h != 240 {
			t.Errorf("%s: %dx%d, want 320x240", name, w, h)
		}
		p, err := testenv.FFprobe(t, file)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"snap.png": "png", "snap.jpg": "mjpeg"}[name]
		if v := p.Streams["video"]; v.Codec != want || v.Width != 320 || v.Height != 240 {
			t.Errorf("%s: ffprobe %+v", name, v)
		}
	}
	f, err := os.Open(filepath.Join(dir, "snap.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("png: %v", err)
	}
	// The frame nearest at: 1310 ms is frame 33 (1320 ms) of the clip,
	// as ffmpeg decodes it from the elementary stream.
	at = 1310 * time.Millisecond
	if _, _, err := Snapshot(context.Background(), ffmpeg, st.Ring().Units(at), at, filepath.Join(dir, "n.png")); err != nil {
		t.Fatal(err)
	}
	got := artDecodePNG(t, filepath.Join(dir, "n.png"))
	if want := artReference(t, ffmpeg, 33); !bytes.Equal(got, want) {
		t.Error("the snapshot at 1310 ms is not frame 33")
	}
	if other := artReference(t, ffmpeg, 32); bytes.Equal(got, other) {
		t.Error("frames 32 and 33 are the same: the check proves nothing")
	}
	// Nothing to decode.
	if _, _, err := Snapshot(context.Background(), ffmpeg, nil, at, filepath.Join(dir, "none.png")); !errors.Is(err, ErrNoFrame) {
		t.Errorf("no units: %v", err)
	}
	artNoPart(t, dir)
}

// artDecodePNG returns a PNG file's RGBA pixels.
func artDecodePNG(t *testing.T, file string) []byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	rgba := image.NewRGBA(img.Bounds())
	draw.Draw(rgba, rgba.Bounds(), img, img.Bounds().Min, draw.Src)
	return rgba.Pix
}

// artReference decodes frame n of the clip's H.264 with ffmpeg.
func artReference(t *testing.T, ffmpeg string, n int) []byte {
	t.Helper()
	dir := t.TempDir()
	var es bytes.Buffer
	for _, au := range artClip(t).AUs {
		for _, nalu := range au {
			es.Write([]byte{0, 0, 0, 1})
			es.Write(nalu)
		}
	}
	in, out := filepath.Join(dir, "v.h264"), filepath.Join(dir, "ref.png")
	if err := os.WriteFile(in, es.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-y", "-i", in, "-vf", fmt.Sprintf("select=eq(n\\,%d)", n),
		"-fps_mode", "passthrough", "-frames:v", "1", "-c:v", "png", "-pix_fmt", "rgb24", "-f", "image2", "-update", "1", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference: %v\n%s", err, b)
	}
	return artDecodePNG(t, out)
}

// Snapshots names files <path>-<UTC time>.png in its directory (created)
// and skips those within the minimum interval of the path's previous one.
func TestSnapshotsRateLimit(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	st := artSource(t)
	at := artWaitMedia(t, st, 500*time.Millisecond)
	dir := filepath.Join(t.TempDir(), "snapshots")
	s, err := NewSnapshots(dir, time.Second, ffmpeg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	units := st.Ring().Units(at)
	info, err := s.Take(ctx, "cam", units, at, now)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "cam-2026-11-30T12-00-00.000Z.png" || info.File != filepath.Join(dir, info.Name) ||
		info.URL != "/recordings/snapshots/cam/"+info.Name || info.Width != 320 || info.Height != 240 || info.Size <= 0 {
		t.Errorf("info %+v", info)
	}
	if s.Due("cam", now.Add(500*time.Millisecond)) {
		t.Error("due within the interval")
	}
	if _, err := s.Take(ctx, "cam", units, at, now.Add(500*time.Millisecond)); !errors.Is(err, ErrRateLimited) {
		t.Errorf("within the interval: %v", err)
	}
	// Another path has its own interval.
	if _, err := s.Take(ctx, "other", units, at, now.Add(500*time.Millisecond)); err != nil {
		t.Errorf("other path: %v", err)
	}
	// A failed snapshot does not count.
	if _, err := s.Take(ctx, "cam2", nil, at, now); err == nil {
		t.Error("a snapshot of nothing succeeded")
	}
	if !s.Due("cam2", now.Add(time.Millisecond)) {
		t.Error("a failed snapshot counted against the interval")
	}
	info2, err := s.Take(ctx, "cam", units, at, now.Add(1100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if info2.Name == info.Name {
		t.Error("same name")
	}
	if s.Taken() != 3 {
		t.Errorf("taken %d, want 3", s.Taken())
	}
	m, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	if len(m) != 3 {
		t.Errorf("files %v", m)
	}
	for _, f := range m {
		if p, err := testenv.FFprobe(t, f); err != nil || p.Streams["video"].Width != 320 {
			t.Errorf("%s: %+v %v", f, p, err)
		}
	}
	artNoPart(t, dir)
}

// Go returns the snapshot's name at once and writes it in the background;
// a second call within the interval is refused; Close waits for it.
func TestSnapshotsGo(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	st := artSource(t)
	at := artWaitMedia(t, st, 500*time.Millisecond)
	dir := t.TempDir()
	s, err := NewSnapshots(dir, time.Second, ffmpeg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	name, url, ok := s.Go("cam", st, at, now)
	if !ok || name != SnapshotName("cam", now) || url != "/recordings/snapshots/cam/"+name {
		t.Fatalf("go: %q %q %v", name, url, ok)
	}
	if _, _, ok := s.Go("cam", st, at, now.Add(10*time.Millisecond)); ok {
		t.Error("second snapshot within the interval")
	}
	s.Close()
	if p, err := testenv.FFprobe(t, filepath.Join(dir, name)); err != nil || p.Streams["video"].Width != 320 {
		t.Errorf("snapshot: %+v %v", p, err)
	}
	if _, _, ok := s.Go("cam", st, at, now.Add(time.Hour)); ok {
		t.Error("snapshot after Close")
	}
	artNoPart(t, dir)
}

// artClips collects the clipper's reports.
type artClips struct {
	ch chan ClipInfo
}

func (a *artClips) on(c ClipInfo) { a.ch <- c }

func (a *artClips) wait(t *testing.T, d time.Duration) ClipInfo {
	t.Helper()
	select {
	case c := <-a.ch:
		return c
	case <-time.After(d):
		t.Fatal("no clip reported")
		return ClipInfo{}
	}
}

// keyBefore is the PTS of the clip's last keyframe at or before pts (one
// per second).
func keyBefore(pts time.Duration) time.Duration { return pts.Truncate(time.Second) }

func checkClip(t *testing.T, ci ClipInfo, wantDur float64) testenv.Probe {
	t.Helper()
	p, err := testenv.FFprobe(t, ci.Path)
	if err != nil {
		t.Fatalf("%s: %v", ci.Name, err)
	}
	if v, a := p.Streams["video"], p.Streams["audio"]; v.Codec != "h264" || v.Width != 320 || a.Codec != "opus" {
		t.Errorf("%s: streams %+v", ci.Name, p.Streams)
	}
	if !p.FirstVideoKey {
		t.Errorf("%s: does not start on a keyframe", ci.Name)
	}
	if math.Abs(p.Duration-wantDur) > 0.5 {
		t.Errorf("%s: duration %.3f s, want %.3f", ci.Name, p.Duration, wantDur)
	}
	fi, err := os.Stat(ci.Path)
	if err != nil || fi.Size() != ci.Size {
		t.Errorf("%s: size %v %v, reported %d", ci.Name, fi, err, ci.Size)
	}
	return p
}

// A clip triggered at T runs from the keyframe at or before T − preRoll
// to T + postRoll; a second event inside the window extends it.
func TestClipperPrePostRoll(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	st := artSource(t)
	const pre, post = time.Second, 2 * time.Second
	dir := filepath.Join(t.TempDir(), "clips")
	got := &artClips{ch: make(chan ClipInfo, 4)}
	c, err := NewClipper(ClipConfig{Dir: dir, PreRoll: pre, PostRoll: post}, st, "cam", got.on, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// One event.
	at := artWaitMedia(t, st, 2500*time.Millisecond)
	now := time.Now()
	name, url := c.Trigger(at, now)
	if name != recordings.FileName("cam", now) || url != "/recordings/clips/cam/"+name {
		t.Errorf("trigger: %q %q", name, url)
	}
	ci := got.wait(t, 15*time.Second)
	start := keyBefore(at - pre)
	if ci.Name != name || ci.Path != filepath.Join(dir, name) || ci.URL != url {
		t.Errorf("clip %+v", ci)
	}
	if ci.Start != start || ci.End < at+post-100*time.Millisecond || ci.End > at+post {
		t.Errorf("clip media %v..%v, want %v..%v", ci.Start, ci.End, start, at+post)
	}
	want := (at + post - start).Seconds()
	p1 := checkClip(t, ci, want)
	if lo, hi := (pre + post).Seconds(), (pre + post + time.Second).Seconds(); p1.Duration < lo-0.2 || p1.Duration > hi+0.2 {
		t.Errorf("duration %.3f s outside preRoll+postRoll..+1 s", p1.Duration)
	}

	// Two events, the second one second later: the clip is one second longer.
	at1 := artWaitMedia(t, st, at+post+500*time.Millisecond)
	name1, _ := c.Trigger(at1, time.Now())
	at2 := artWaitMedia(t, st, at1+time.Second)
	name2, _ := c.Trigger(at2, time.Now().Add(time.Second))
	if name1 != name2 || name1 == name {
		t.Errorf("second trigger started another clip: %q %q", name1, name2)
	}
	ci2 := got.wait(t, 15*time.Second)
	start2 := keyBefore(at1 - pre)
	if ci2.Name != name1 || ci2.Start != start2 || ci2.End < at2+post-100*time.Millisecond {
		t.Errorf("extended clip %+v, want %v..%v", ci2, start2, at2+post)
	}
	p2 := checkClip(t, ci2, (at2 + post - start2).Seconds())
	if g := p2.Duration - (at1 + post - start2).Seconds(); g < 0.7 {
		t.Errorf("the extension added %.3f s, want about %.3f", g, (at2 - at1).Seconds())
	}
	if c.Clips() != 2 {
		t.Errorf("clips %d, want 2", c.Clips())
	}
	select {
	case x := <-got.ch:
		t.Errorf("extra clip %+v", x)
	default:
	}
	artNoPart(t, dir)
}

// Close during an open clip finalizes it, shorter, valid; later triggers
// do nothing.
func TestClipperCloseShortens(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	st := artSource(t)
	dir := t.TempDir()
	got := &artClips{ch: make(chan ClipInfo, 4)}
	c, err := NewClipper(ClipConfig{Dir: dir, PreRoll: time.Second, PostRoll: 30 * time.Second}, st, "cam", got.on, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := artWaitMedia(t, st, 1500*time.Millisecond)
	name, _ := c.Trigger(at, time.Now())
	if name == "" {
		t.Fatal("no clip")
	}
	artWaitMedia(t, st, at+time.Second)
	c.Close()
	var ci ClipInfo
	select {
	case ci = <-got.ch:
	default:
		t.Fatal("Close returned before the clip was reported")
	}
	start := keyBefore(at - time.Second)
	p := checkClip(t, ci, (ci.End - start).Seconds())
	if p.Duration < 1.5 || p.Duration > 4 {
		t.Errorf("duration %.3f s, want about %.1f", p.Duration, (at + time.Second - start).Seconds())
	}
	if n, _ := c.Trigger(at+2*time.Second, time.Now()); n != "" {
		t.Error("trigger after Close")
	}
	c.Close() // idempotent
	artNoPart(t, dir)
}

// A clip of a stream whose source stalls ends after ClipIdleTimeout is not
// tested here (5 s); a clip whose stream closes is finalized at once.
func TestClipperStreamClosed(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	c0 := artClip(t)
	st := media.NewStream(media.StreamConfig{Name: "cam"}, nil)
	st.SetTracks(media.Tracks{Video: &media.VideoParams{SPS: c0.SPS, PPS: c0.PPS}})
	frame := time.Second / time.Duration(c0.FPS)
	for i := range 50 {
		st.WriteH264(time.Duration(i)*frame, c0.AUs[i])
	}
	dir := t.TempDir()
	got := &artClips{ch: make(chan ClipInfo, 4)}
	c, err := NewClipper(ClipConfig{Dir: dir, PreRoll: 500 * time.Millisecond, PostRoll: 10 * time.Second}, st, "cam", got.on, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Trigger(1800*time.Millisecond, time.Now())
	time.Sleep(100 * time.Millisecond)
	st.Close()
	ci := got.wait(t, 5*time.Second)
	if ci.Start != time.Second || ci.End != 49*frame {
		t.Errorf("clip %v..%v", ci.Start, ci.End)
	}
	p, err := testenv.FFprobe(t, ci.Path)
	if err != nil || !p.FirstVideoKey || math.Abs(p.Duration-1) > 0.1 {
		t.Errorf("probe %+v %v", p, err)
	}
	artNoPart(t, dir)
}
