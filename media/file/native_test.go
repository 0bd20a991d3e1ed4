package file

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
)

// playIntoStream plays src (paced, no loop) into a real Stream and returns
// every unit a subscriber got, cached burst included, in arrival order.
// During the run, during is called once the tracks are declared.
func playIntoStream(t *testing.T, src *Source, during func()) (*media.Stream, []*media.Unit) {
	t.Helper()
	st := media.NewStream(media.StreamConfig{Name: "file"}, nil)
	t.Cleanup(st.Close)
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background(), st) }()
	sub := subscribeWhenReady(t, st)
	defer sub.Close()
	if during != nil {
		during()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan []*media.Unit, 1)
	go func() {
		var out []*media.Unit
		buf := make([]*media.Unit, 64)
		for {
			n, err := sub.Read(ctx, buf)
			out = append(out, buf[:n]...)
			if err != nil {
				got <- out
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not end")
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	return st, <-got
}

// fileVideoSamples reads the first video track's samples independently of
// the source: NALUs in decoding order, without parameter sets and AUDs.
func fileVideoSamples(t *testing.T, path string) [][][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p pmp4.Presentation
	if err := p.Unmarshal(f); err != nil {
		t.Fatal(err)
	}
	for _, tr := range p.Tracks {
		if !tr.Codec.IsVideo() {
			continue
		}
		var out [][][]byte
		for _, s := range tr.Samples {
			b, err := s.GetPayload()
			if err != nil {
				t.Fatal(err)
			}
			var au h264.AVCC
			if err := au.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			out = append(out, stripH264(au))
		}
		return out
	}
	t.Fatal("no video track")
	return nil
}

// stripH264 drops SPS, PPS, AUD and filler (which the hub puts or takes).
func stripH264(au [][]byte) [][]byte {
	var out [][]byte
	for _, n := range au {
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS, h264.NALUTypePPS, h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeFillerData:
			continue
		}
		out = append(out, n)
	}
	return out
}

// ffprobePTS lists the video packets' presentation times in file
// (decoding) order, as ffmpeg's demuxer reports them.
func ffprobePTS(t *testing.T, path string) []time.Duration {
	t.Helper()
	ffprobe := testenv.RequireTool(t, "ffprobe")
	out, err := exec.Command(ffprobe, "-v", "error", "-select_streams", "v:0",
		"-show_entries", "packet=pts_time", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var pts []time.Duration
	for _, l := range strings.Fields(string(out)) {
		v, err := strconv.ParseFloat(strings.TrimSuffix(l, ","), 64)
		if err != nil {
			t.Fatalf("ffprobe line %q", l)
		}
		pts = append(pts, time.Duration(v*float64(time.Second)).Round(time.Millisecond))
	}
	return pts
}

func decreases(pts []time.Duration) int {
	n := 0
	for i := 1; i < len(pts); i++ {
		if pts[i] < pts[i-1] {
			n++
		}
	}
	return n
}

// H.264 High with B-frames: the samples are written in decoding order with
// their presentation times (decode time + composition offset), exactly the
// times ffmpeg's demuxer reports, and the stream sees the reordering.
func TestBFramesIntoStream(t *testing.T) {
	path := testClip(t, "h264-high-bf2")
	want := ffprobePTS(t, path)
	if decreases(want) == 0 {
		t.Fatalf("test clip has no B-frames: %v", want)
	}
	src, err := New(Config{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if err := src.runFast(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	for _, e := range rec.snapshot() {
		if e.kind == "video" {
			got = append(got, e.pts.Round(time.Millisecond))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("video pts in write order\n got %v\nwant %v (ffprobe)", got, want)
	}

	samples := fileVideoSamples(t, path)
	st, units := playIntoStream(t, src, nil)
	var video []*media.Unit
	for _, u := range units {
		if u.Kind == media.KindVideo {
			video = append(video, u)
		}
	}
	if len(video) != len(samples) {
		t.Fatalf("%d video units, file has %d samples", len(video), len(samples))
	}
	var unitPTS []time.Duration
	for i, u := range video {
		unitPTS = append(unitPTS, u.PTS.Round(time.Millisecond))
		if u.Codec != media.CodecH264 {
			t.Fatalf("unit codec %q", u.Codec)
		}
		if g := stripH264(u.Payload); !slices.EqualFunc(g, samples[i], bytes.Equal) {
			t.Fatalf("unit %d: NALUs differ from the file's sample", i)
		}
	}
	// The stream's timeline starts at the first written pts; the steps
	// (and so the reordering) are the file's.
	for i := 1; i < len(want); i++ {
		if d, w := unitPTS[i]-unitPTS[i-1], want[i]-want[i-1]; (d - w).Abs() > time.Millisecond {
			t.Fatalf("unit %d: pts step %v, file %v", i, d, w)
		}
	}
	if decreases(unitPTS) != decreases(want) {
		t.Errorf("units reorder %d times, file %d", decreases(unitPTS), decreases(want))
	}
	if vi := st.VideoInfo(); !vi.BFrames || vi.Codec != media.CodecH264 || vi.Profile == "" {
		t.Errorf("VideoInfo %+v, want H.264 with B-frames", vi)
	}
}

// H.264 + AAC with TranscodeAudio: the video units are the file's samples,
// untouched; the AAC goes through an ffmpeg that only encodes audio and
// comes back as Opus at 50 frames a second.
func TestAACTranscodedVideoPassedThrough(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	path := testClip(t, "h264-aac-2s")
	src, err := New(Config{Path: path, TranscodeAudio: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := src.Warnings(); len(w) != 1 || !strings.Contains(w[0], "AAC is transcoded to Opus") {
		t.Errorf("warnings %q", w)
	}
	var argv []string
	start := time.Now()
	st, units := playIntoStream(t, src, func() {
		deadline := time.Now().Add(5 * time.Second)
		for src.audioPid.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		p, err := childtest.Read(int(src.audioPid.Load()))
		if err != nil {
			t.Errorf("ffmpeg child: %v", err)
			return
		}
		argv = p.Cmdline
	})
	took := time.Since(start)
	t.Logf("ffmpeg argv %q", argv)
	joined := " " + strings.Join(argv, " ") + " "
	if !strings.Contains(joined, " -i pipe:0 ") || !strings.Contains(joined, " -map 0:a:0 ") || !strings.Contains(joined, " libopus ") {
		t.Errorf("ffmpeg is not the audio pipe: %q", argv)
	}
	for _, bad := range []string{"-c:v", "-vcodec", "libx264", "h264", path} {
		if strings.Contains(joined, bad) {
			t.Errorf("ffmpeg argv has %q: video or the file reaches ffmpeg", bad)
		}
	}
	if pid := src.audioPid.Load(); pid != 0 {
		t.Errorf("ffmpeg %d still recorded after the run", pid)
	}

	tr := st.Tracks()
	if tr.Video == nil || tr.Video.VideoCodec() != media.CodecH264 || tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Fatalf("tracks %+v", tr)
	}
	samples := fileVideoSamples(t, path)
	var video, audio []*media.Unit
	for _, u := range units {
		if u.Kind == media.KindVideo {
			video = append(video, u)
		} else {
			audio = append(audio, u)
		}
	}
	if len(video) != len(samples) {
		t.Fatalf("%d video units, file has %d samples", len(video), len(samples))
	}
	for i, u := range video {
		if g := stripH264(u.Payload); !slices.EqualFunc(g, samples[i], bytes.Equal) {
			t.Fatalf("unit %d: NALUs differ from the file's sample", i)
		}
	}
	// 2 s of audio in 20 ms Opus frames.
	t.Logf("%d video units, %d Opus units, run took %v", len(video), len(audio), took)
	if len(audio) < 90 || len(audio) > 108 {
		t.Errorf("%d Opus units for 2 s of AAC, want about 100", len(audio))
	}
	if len(audio) > 1 {
		span := audio[len(audio)-1].PTS - audio[0].PTS
		if rate := float64(len(audio)-1) / span.Seconds(); rate < 48 || rate > 52 {
			t.Errorf("Opus at %.1f frames/s over %v, want 50", rate, span)
		}
		// A/V sync: the audio spans the video's time range.
		if d := (audio[0].PTS - video[0].PTS).Abs(); d > 100*time.Millisecond {
			t.Errorf("first Opus at %v, first video at %v", audio[0].PTS, video[0].PTS)
		}
	}
	for _, u := range audio {
		if u.Codec != media.CodecOpus || len(u.Payload) != 1 || len(u.Payload[0]) == 0 {
			t.Fatalf("audio unit %+v", u)
		}
	}
}

// H.265 (hvc1) with AAC: read natively, written as H.265 with its
// parameter sets, keyframes every second; the AAC is transcoded.
func TestH265File(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	path := testClip(t, "hevc-aac")
	info, err := Probe(path)
	if err != nil || info.VideoCodec != CodecH265 || info.AudioCodec != CodecAAC {
		t.Fatalf("Probe = %+v, %v", info, err)
	}
	src, err := New(Config{Path: path, TranscodeAudio: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, units := playIntoStream(t, src, nil)
	tr := st.Tracks()
	if tr.Video == nil || tr.Video.Codec != media.CodecH265 || len(tr.Video.VPS) == 0 || len(tr.Video.SPS) == 0 || len(tr.Video.PPS) == 0 {
		t.Fatalf("video track %+v", tr.Video)
	}
	if tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Fatalf("audio track %+v", tr.Audio)
	}
	var video, keys, audio int
	for _, u := range units {
		switch {
		case u.Kind == media.KindAudio:
			audio++
		case u.Codec != media.CodecH265:
			t.Fatalf("video unit codec %q", u.Codec)
		default:
			video++
			if u.Keyframe {
				keys++
				// VPS, SPS, PPS in front of the random-access picture.
				if len(u.Payload) < 4 || (u.Payload[0][0]>>1)&0x3f != 32 {
					t.Errorf("keyframe does not start with a VPS")
				}
			}
		}
	}
	t.Logf("%d H.265 units (%d keyframes), %d Opus units", video, keys, audio)
	if video != 60 || keys != 2 || audio < 90 {
		t.Errorf("%d video units, %d keyframes, %d audio: want 60, 2, ~100", video, keys, audio)
	}
	if vi := st.VideoInfo(); vi.Codec != media.CodecH265 || vi.Width != 320 || vi.Height != 180 {
		t.Errorf("VideoInfo %+v", vi)
	}
}

// A looping H.264 + AAC file: one audio transcode for the whole run, and
// the Opus keeps flowing across loops with increasing timestamps.
func TestAACTranscodedLoop(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	src, err := New(Config{Path: testClip(t, "h264-aac"), Loop: true, TranscodeAudio: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "file"}, nil)
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()
	sub := subscribeWhenReady(t, st)
	defer sub.Close()
	pid := src.audioPid.Load()
	rctx, rcancel := context.WithTimeout(context.Background(), 3200*time.Millisecond)
	defer rcancel()
	var audio []time.Duration
	video := 0
	buf := make([]*media.Unit, 64)
	for {
		n, err := sub.Read(rctx, buf)
		for _, u := range buf[:n] {
			if u.Kind == media.KindAudio {
				audio = append(audio, u.PTS)
			} else {
				video++
			}
		}
		if err != nil {
			break
		}
	}
	if src.Loops() < 2 {
		t.Errorf("%d loops in 3.2 s of a 1 s file", src.Loops())
	}
	if p := src.audioPid.Load(); p != pid || p == 0 {
		t.Errorf("audio transcode pid %d, then %d: want one for the run", pid, p)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if src.audioPid.Load() != 0 || !childtest.Gone(int(pid)) {
		t.Errorf("ffmpeg %d not reaped", pid)
	}
	t.Logf("%d video units, %d Opus units over %d loops", video, len(audio), src.Loops())
	if video < 80 || len(audio) < 130 {
		t.Errorf("%d video units, %d Opus units in 3.2 s", video, len(audio))
	}
	for i := 1; i < len(audio); i++ {
		if audio[i] <= audio[i-1] {
			t.Fatalf("Opus pts %v after %v (unit %d)", audio[i], audio[i-1], i)
		}
	}
}
