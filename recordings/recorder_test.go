package recordings

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
)

var (
	clipMu    sync.Mutex
	clipCache = map[testpeer.ClipOptions]*testpeer.Clip{}
)

// clip returns a generated H.264 + Opus clip (made once per options).
func clip(t *testing.T, o testpeer.ClipOptions) *testpeer.Clip {
	t.Helper()
	clipMu.Lock()
	defer clipMu.Unlock()
	if c := clipCache[o]; c != nil {
		return c
	}
	c := testpeer.MakeClip(t, o)
	clipCache[o] = c
	return c
}

// newStream returns a stream with the clip's tracks declared.
func newStream(t testing.TB, c *testpeer.Clip, audio bool) *media.Stream {
	st := media.NewStream(media.StreamConfig{Name: "cam"}, nil)
	t.Cleanup(st.Close)
	tr := media.Tracks{Video: &media.VideoParams{SPS: c.SPS, PPS: c.PPS}}
	if audio {
		tr.Audio = &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	}
	st.SetTracks(tr)
	return st
}

// feed writes the clip's media with PTS in [from, to) into st in PTS
// order, speed times faster than real time (0: as fast as possible).
// Video comes from the clip's AUs, audio from its Opus packets (20 ms).
func feed(st *media.Stream, c *testpeer.Clip, from, to time.Duration, video, audio bool, speed float64) {
	frame := time.Second / time.Duration(c.FPS)
	vi := int(from / frame)
	ai := int(from / (20 * time.Millisecond))
	t0 := time.Now()
	for {
		vp, ap := time.Duration(vi)*frame, time.Duration(ai)*20*time.Millisecond
		if !video || vi >= len(c.AUs) {
			vp = math.MaxInt64
		}
		if !audio || ai >= len(c.Opus) {
			ap = math.MaxInt64
		}
		pts := min(vp, ap)
		if pts >= to {
			return
		}
		if speed > 0 {
			if d := time.Duration(float64(pts-from)/speed) - time.Since(t0); d > 0 {
				time.Sleep(d)
			}
		}
		if vp <= ap {
			st.WriteH264(vp, c.AUs[vi])
			vi++
		} else {
			st.WriteAudio(ap, c.Opus[ai])
			ai++
		}
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorderSub returns the recorder's subscriber stats, if subscribed.
func recorderSub(st *media.Stream) (media.SubscriberStats, bool) {
	for _, v := range st.Stats().Viewers {
		if strings.HasPrefix(v.ID, "recorder:") {
			return v, true
		}
	}
	return media.SubscriberStats{}, false
}

func waitSubscribed(t testing.TB, st *media.Stream) {
	t.Helper()
	waitFor(t, "the recorder to subscribe", func() bool { _, ok := recorderSub(st); return ok })
}

// waitDrained waits until the recorder read everything queued.
func waitDrained(t testing.TB, st *media.Stream) {
	t.Helper()
	waitFor(t, "the recorder to read its queue", func() bool { s, ok := recorderSub(st); return ok && s.Queued == 0 })
	time.Sleep(50 * time.Millisecond) // the last batch is being written
}

// events collects a recorder's events.
type events struct {
	mu sync.Mutex
	ev []Event
}

func (e *events) on(ev Event) {
	e.mu.Lock()
	e.ev = append(e.ev, ev)
	e.mu.Unlock()
}

func (e *events) list() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ev)
}

func (e *events) count(kind string) int {
	n := 0
	for _, ev := range e.list() {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func newRecorder(t testing.TB, st *media.Stream, cfg RecorderConfig) (*Recorder, *Store, *events) {
	store, err := OpenStore(StoreConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	cfg.Path, cfg.Stream, cfg.Store, cfg.OnEvent = "cam", st, store, ev.on
	r := NewRecorder(cfg, nil)
	t.Cleanup(r.Close)
	return r, store, ev
}

// mp4s lists the finalized recordings, oldest first.
func mp4s(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+Ext))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

type probe struct {
	Streams []struct {
		CodecName string `json:"codec_name"`
		CodecType string `json:"codec_type"`
		StartTime string `json:"start_time"`
		Duration  string `json:"duration"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

func (p probe) duration() float64 {
	d, _ := strconv.ParseFloat(p.Format.Duration, 64)
	return d
}

func (p probe) start(kind string) float64 {
	for _, s := range p.Streams {
		if s.CodecType == kind {
			v, err := strconv.ParseFloat(s.StartTime, 64)
			if err == nil {
				return v
			}
		}
	}
	return math.NaN()
}

func (p probe) codecs() []string {
	var out []string
	for _, s := range p.Streams {
		out = append(out, s.CodecName)
	}
	slices.Sort(out)
	return out
}

// ffprobe validates file with ffprobe (errors are fatal).
func ffprobe(t testing.TB, file string) probe {
	t.Helper()
	bin := testenv.RequireTool(t.(*testing.T), "ffprobe")
	out, err := exec.Command(bin, "-v", "error", "-show_streams", "-show_format", "-of", "json", file).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", file, err, out)
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", file, err, out)
	}
	return p
}

// firstVideoKey reports whether the first video frame decodes as a keyframe.
func firstVideoKey(t testing.TB, file string) bool {
	t.Helper()
	bin := testenv.RequireTool(t.(*testing.T), "ffprobe")
	out, err := exec.Command(bin, "-v", "error", "-select_streams", "v", "-show_frames", "-read_intervals", "%+#1",
		"-show_entries", "frame=key_frame", "-of", "csv=p=0", file).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe frames %s: %v\n%s", file, err, out)
	}
	// The first field of the first line (x264's SEI may follow as side data).
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if first, _, _ = strings.Cut(first, ","); first != "1" {
		t.Logf("ffprobe first frame of %s: %q", file, out)
		return false
	}
	return true
}

func checkFile(t *testing.T, file string, wantCodecs []string) probe {
	t.Helper()
	p := ffprobe(t, file)
	if got := p.codecs(); !slices.Equal(got, wantCodecs) {
		t.Errorf("%s: codecs %v, want %v", filepath.Base(file), got, wantCodecs)
	}
	if slices.Contains(wantCodecs, "h264") && !firstVideoKey(t, file) {
		t.Errorf("%s: first video frame is not a keyframe", filepath.Base(file))
	}
	return p
}

func TestRecorderSixSeconds(t *testing.T) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{Seconds: 6, GOP: 30})
	st := newStream(t, c, true)
	r, store, ev := newRecorder(t, st, RecorderConfig{})
	r.Start()
	r.Start() // idempotent
	waitSubscribed(t, st)
	feed(st, c, 0, 6*time.Second, true, true, 8)
	waitDrained(t, st)
	if s := r.Stats(); !s.Recording || s.Files != 1 || s.Bytes == 0 || !strings.HasSuffix(s.Name, Ext) {
		t.Errorf("stats while recording: %+v", s)
	}
	r.Stop()
	r.Stop() // idempotent
	files := mp4s(t, store.Dir())
	if len(files) != 1 {
		t.Fatalf("files: %v", files)
	}
	p := checkFile(t, files[0], []string{"h264", "opus"})
	if d := p.duration(); math.Abs(d-6) > 0.6 {
		t.Errorf("duration %.3f s, want 6 s ± 10 %%", d)
	}
	if vs, as := p.start("video"), p.start("audio"); !(math.Abs(vs-as) <= 0.1) {
		t.Errorf("video starts at %.3f s, audio at %.3f s", vs, as)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	list := ev.list()
	if len(list) != 2 || list[0].Kind != EventStarted || list[1].Kind != EventFinalized ||
		list[1].Name != filepath.Base(files[0]) || list[1].Bytes != fi.Size() || list[0].Path != "cam" ||
		math.Abs(list[1].Duration.Seconds()-6) > 0.6 {
		t.Errorf("events: %+v (file %d bytes)", list, fi.Size())
	}
	if s := r.Stats(); s.Recording || s.Name != "" || s.Bytes != fi.Size() || s.Failures != 0 {
		t.Errorf("stats after Stop: %+v", s)
	}
	if _, ok := recorderSub(st); ok {
		t.Error("still subscribed after Stop")
	}
}

func TestRecorderRotation(t *testing.T) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{Seconds: 6, GOP: 30})
	st := newStream(t, c, true)
	r, store, ev := newRecorder(t, st, RecorderConfig{SegmentDuration: 2 * time.Second, FragmentDuration: 500 * time.Millisecond})
	r.Start()
	waitSubscribed(t, st)
	feed(st, c, 0, 6*time.Second, true, true, 0)
	waitDrained(t, st)
	r.Close()
	files := mp4s(t, store.Dir())
	if len(files) != 3 {
		t.Fatalf("files: %v, want 3 (6 s in 2 s segments)", files)
	}
	total := 0.0
	for _, f := range files {
		p := checkFile(t, f, []string{"h264", "opus"})
		if d := p.duration(); math.Abs(d-2) > 0.2 {
			t.Errorf("%s: duration %.3f s, want 2 s", filepath.Base(f), d)
		}
		total += p.duration()
	}
	if math.Abs(total-6) > 0.6 {
		t.Errorf("total duration %.3f s", total)
	}
	if ev.count(EventStarted) != 3 || ev.count(EventFinalized) != 3 || r.Stats().Files != 3 {
		t.Errorf("events %+v, stats %+v", ev.list(), r.Stats())
	}
}

func TestRecorderParameterChangeRotates(t *testing.T) {
	leaktest.Check(t)
	a := clip(t, testpeer.ClipOptions{Seconds: 2, GOP: 30})
	b := clip(t, testpeer.ClipOptions{Seconds: 2, GOP: 30, Size: "160x120"})
	st := newStream(t, a, false)
	r, store, _ := newRecorder(t, st, RecorderConfig{})
	r.Start()
	waitSubscribed(t, st)
	feed(st, a, 0, 2*time.Second, true, false, 0)
	st.Discontinuity()
	feed(st, b, 0, 2*time.Second, true, false, 0)
	waitDrained(t, st)
	r.Stop()
	files := mp4s(t, store.Dir())
	if len(files) != 2 {
		t.Fatalf("files: %v, want 2 (new SPS)", files)
	}
	for _, f := range files {
		checkFile(t, f, []string{"h264"})
	}
}

func TestRecorderStopStart(t *testing.T) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{Seconds: 6, GOP: 30})
	st := newStream(t, c, true)
	r, store, ev := newRecorder(t, st, RecorderConfig{})
	r.Start()
	waitSubscribed(t, st)
	feed(st, c, 0, 3*time.Second, true, true, 0)
	waitDrained(t, st)
	r.Stop()
	if n := len(mp4s(t, store.Dir())); n != 1 {
		t.Fatalf("%d files after the first Stop", n)
	}
	r.Start()
	waitSubscribed(t, st)
	feed(st, c, 3*time.Second, 6*time.Second, true, true, 0)
	waitDrained(t, st)
	r.Stop()
	files := mp4s(t, store.Dir())
	if len(files) != 2 {
		t.Fatalf("files: %v", files)
	}
	for _, f := range files {
		p := checkFile(t, f, []string{"h264", "opus"})
		// The second file starts with the cached GOP (from 2 s) and its
		// audio from the stream's ring.
		if vs, as := p.start("video"), p.start("audio"); !(math.Abs(vs-as) <= 0.1) {
			t.Errorf("%s: video starts at %.3f s, audio at %.3f s", filepath.Base(f), vs, as)
		}
	}
	if ev.count(EventStarted) != 2 || ev.count(EventFinalized) != 2 {
		t.Errorf("events: %+v", ev.list())
	}
	r.Close()
	r.Start() // no effect after Close
	if _, ok := recorderSub(st); ok || r.Stats().Recording {
		t.Error("Start after Close records")
	}
}

func TestRecorderStopWithoutMediaDiscards(t *testing.T) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{Seconds: 6, GOP: 30})
	st := newStream(t, c, true)
	r, store, ev := newRecorder(t, st, RecorderConfig{})
	r.Start()
	waitSubscribed(t, st)
	feed(st, c, 0, 500*time.Millisecond, false, true, 0) // audio only before any keyframe: dropped
	waitDrained(t, st)
	r.Stop()
	left, _ := filepath.Glob(filepath.Join(store.Dir(), "*"))
	if len(left) != 0 || len(ev.list()) != 0 {
		t.Errorf("files %v, events %+v", left, ev.list())
	}
}

func TestRecorderAudioOnly(t *testing.T) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{Seconds: 6, GOP: 30})
	st := media.NewStream(media.StreamConfig{Name: "mic"}, nil)
	t.Cleanup(st.Close)
	st.SetTracks(media.Tracks{Audio: &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}})
	r, store, _ := newRecorder(t, st, RecorderConfig{})
	r.Start()
	waitSubscribed(t, st)
	feed(st, c, 0, 3*time.Second, false, true, 0)
	waitDrained(t, st)
	r.Stop()
	files := mp4s(t, store.Dir())
	if len(files) != 1 {
		t.Fatalf("files: %v", files)
	}
	if d := checkFile(t, files[0], []string{"opus"}).duration(); math.Abs(d-3) > 0.3 {
		t.Errorf("duration %.3f s", d)
	}
}

func TestRecorderPartRepair(t *testing.T) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{Seconds: 6, GOP: 30})
	st := newStream(t, c, true)
	r, store, _ := newRecorder(t, st, RecorderConfig{})
	r.Start()
	waitSubscribed(t, st)
	const written = 4 * time.Second
	feed(st, c, 0, written, true, true, 0)
	waitDrained(t, st)
	name := r.Stats().Name
	part := filepath.Join(store.Dir(), name+".part")
	// The stream pauses: the pending fragment is flushed within about
	// FragmentDuration.
	waitFor(t, "the pending fragment", func() bool {
		b, err := os.ReadFile(part)
		if err != nil {
			return false
		}
		end, _ := repairEnd(bytesReaderAt(b), int64(len(b)))
		return end == int64(len(b)) && fragmentsWritten(b) >= 4
	})
	data, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of the last fragment.
	last := lastMoof(t, data)
	cut := last + (int64(len(data))-last)/2
	crashed := filepath.Join(t.TempDir(), "crashed"+Ext+".part")
	if err := os.WriteFile(crashed, data[:cut], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RepairPart(crashed); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(crashed)
	if fi.Size() != last {
		t.Errorf("repaired to %d bytes, want %d (the start of the torn fragment)", fi.Size(), last)
	}
	repaired := strings.TrimSuffix(crashed, ".part")
	if err := os.Rename(crashed, repaired); err != nil {
		t.Fatal(err)
	}
	p := checkFile(t, repaired, []string{"h264", "opus"})
	if d := p.duration(); d < (written - 1500*time.Millisecond).Seconds() {
		t.Errorf("repaired duration %.3f s, written %v", d, written)
	}
	// The recording itself goes on and finalizes normally.
	r.Stop()
	if files := mp4s(t, store.Dir()); len(files) != 1 {
		t.Fatalf("files: %v", files)
	} else if d := checkFile(t, files[0], []string{"h264", "opus"}).duration(); math.Abs(d-written.Seconds()) > 0.4 {
		t.Errorf("duration %.3f s", d)
	}
}

// fragmentsWritten counts the moof boxes of a file.
func fragmentsWritten(b []byte) int {
	n := 0
	for off := int64(0); ; {
		bx, ok, _ := readBox(bytesReaderAt(b), off, int64(len(b)))
		if !ok {
			return n
		}
		if bx.typ == "moof" {
			n++
		}
		off += bx.size
	}
}

func lastMoof(t *testing.T, b []byte) int64 {
	t.Helper()
	last := int64(-1)
	for off := int64(0); ; {
		bx, ok, _ := readBox(bytesReaderAt(b), off, int64(len(b)))
		if !ok {
			break
		}
		if bx.typ == "moof" {
			last = off
		}
		off += bx.size
	}
	if last < 0 {
		t.Fatal("no fragment")
	}
	return last
}

// failingDisk makes files fail with ENOSPC: after limit bytes of the first
// file, then every write until cleared (but those of at most fits bytes,
// as a full filesystem still takes a small init segment into the space a
// truncated fragment freed).
type failingDisk struct {
	limit int64
	fits  int
	full  atomic.Bool
	files atomic.Int32
}

type failingFile struct {
	*os.File
	d       *failingDisk
	n       int64
	limited bool
}

func (f *failingFile) Write(p []byte) (int, error) {
	if f.d.full.Load() && len(p) > f.d.fits {
		return 0, syscall.ENOSPC
	}
	if f.limited && f.n+int64(len(p)) > f.d.limit {
		// A torn write, as a full disk gives.
		k, _ := f.File.Write(p[:f.d.limit-f.n])
		f.n += int64(k)
		f.d.full.Store(true)
		return k, syscall.ENOSPC
	}
	k, err := f.File.Write(p)
	f.n += int64(k)
	return k, err
}

// A full disk finalizes the file, reports once and retries until space
// returns; the retries' files (none gets a fragment) are not announced.
func TestRecorderWriteFailure(t *testing.T) {
	t.Run("nothing fits", func(t *testing.T) { testRecorderWriteFailure(t, 0) })
	t.Run("init segment fits", func(t *testing.T) { testRecorderWriteFailure(t, 4096) })
}

func testRecorderWriteFailure(t *testing.T, fits int) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{Seconds: 10, GOP: 30})
	st := newStream(t, c, true)
	r, store, ev := newRecorder(t, st, RecorderConfig{RetryInterval: 100 * time.Millisecond})
	d := &failingDisk{limit: 150_000, fits: fits}
	r.create = func(path string, start time.Time) (string, recFile, error) {
		name, f, err := store.Create(path, start)
		if err != nil {
			return "", nil, err
		}
		return name, &failingFile{File: f, d: d, limited: d.files.Add(1) == 1}, nil
	}
	r.Start()
	waitSubscribed(t, st)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		feed(st, c, 0, 10*time.Second, true, true, 2.5)
	}()
	waitFor(t, "recording.failed", func() bool { return ev.count(EventFailed) > 0 })
	waitFor(t, "retries on the full disk", func() bool { return d.files.Load() >= 3 })
	if s := r.Stats(); s.Failures != 1 || s.Recording || s.Files != 1 {
		t.Errorf("stats on a full disk: %+v", s)
	}
	d.full.Store(false) // space returns
	waitFor(t, "recording to resume", func() bool { return ev.count(EventStarted) == 2 })
	<-fed
	waitDrained(t, st)
	r.Stop()

	list := ev.list()
	var kinds []string
	for _, e := range list {
		kinds = append(kinds, e.Kind)
	}
	want := []string{EventStarted, EventFinalized, EventFailed, EventStarted, EventFinalized}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if !errors.Is(list[2].Err, syscall.ENOSPC) || list[2].Name != list[0].Name || list[1].Name != list[0].Name {
		t.Errorf("failure event %+v", list[2])
	}
	files := mp4s(t, store.Dir())
	if len(files) != 2 {
		t.Fatalf("files %v", files)
	}
	if left, _ := filepath.Glob(filepath.Join(store.Dir(), "*.part")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	// The file cut by the full disk is valid up to its last fragment.
	fi, _ := os.Stat(files[0])
	if fi.Size() != list[1].Bytes || fi.Size() > d.limit {
		t.Errorf("first file: %d bytes, event says %d", fi.Size(), list[1].Bytes)
	}
	// Its duration is what the finalized event says: the fragment the
	// disk refused is not counted.
	if p := checkFile(t, files[0], []string{"h264", "opus"}); p.duration() < 0.5 || math.Abs(p.duration()-list[1].Duration.Seconds()) > 0.1 {
		t.Errorf("first file: %.3f s, recording.finalized says %v", p.duration(), list[1].Duration)
	}
	if p := checkFile(t, files[1], []string{"h264", "opus"}); p.duration() < 3 {
		t.Errorf("second file: %.3f s", p.duration())
	}
	if s := r.Stats(); s.Files != 2 || s.Failures != 1 {
		t.Errorf("stats %+v", s)
	}
}

// bytesReaderAt is an io.ReaderAt over a byte slice.
type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// benchClip is 10 s of 640x360 H.264 at 2 Mb/s (GOP 2 s) made with ffmpeg,
// plus 20 ms audio frames of Opus's size at 64 kb/s (the recorder copies
// audio bytes, it does not decode them).
func benchClip(b *testing.B) *testpeer.Clip {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		b.Skip("ffmpeg not found")
	}
	out := filepath.Join(b.TempDir(), "v.h264")
	cmd := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "10",
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "60",
		"-keyint_min", "60", "-sc_threshold", "0", "-bf", "0", "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M",
		"-x264-params", "aud=1", "-f", "h264", out)
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("ffmpeg: %v\n%s", err, o)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	c := &testpeer.Clip{FPS: 30}
	var cur [][]byte
	for _, n := range append(testpeer.SplitAnnexB(raw), []byte{9}) {
		switch n[0] & 0x1f {
		case 9:
			if len(cur) > 0 {
				c.AUs = append(c.AUs, cur)
			}
			cur = nil
			continue
		case 7:
			c.SPS = n
		case 8:
			c.PPS = n
		}
		cur = append(cur, n)
	}
	for range 500 {
		c.Opus = append(c.Opus, make([]byte, 160))
	}
	return c
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRecorder records 10 s of a 2 Mb/s H.264 + Opus stream per
// iteration, written into the stream as fast as it goes. It reports the
// CPU time per second of media with the recorder ("record") and without
// it ("hub": the stream's own work of writing the same media), so the
// recorder's cost is the difference.
func BenchmarkRecorder(b *testing.B) {
	c := benchClip(b)
	for _, record := range []bool{false, true} {
		name := "hub"
		if record {
			name = "record"
		}
		b.Run(name, func(b *testing.B) {
			var cpu time.Duration
			for range b.N {
				st := newStream(b, c, true)
				var r *Recorder
				if record {
					r, _, _ = newRecorder(b, st, RecorderConfig{})
					r.Start()
					waitSubscribed(b, st)
				}
				t0 := cpuTime()
				feed(st, c, 0, 10*time.Second, true, true, 0)
				if record {
					waitDrained(b, st)
					r.Stop()
				}
				cpu += cpuTime() - t0
				st.Close()
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N*10), "cpu-ms/media-s")
		})
	}
}
