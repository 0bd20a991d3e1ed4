package transcode

import (
	"bufio"
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg1audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media/childtest"
)

type aacAU struct {
	pts time.Duration
	aus [][]byte
}

// readAAC demuxes the AAC track of an MPEG-TS file.
func readAAC(t *testing.T, path string) (*tscodecs.MPEG4Audio, []aacAU) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &mpegts.Reader{R: bufio.NewReader(f)}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	var codec *tscodecs.MPEG4Audio
	var out []aacAU
	var td mpegts.TimeDecoder
	for _, tr := range r.Tracks() {
		if c, ok := tr.Codec.(*tscodecs.MPEG4Audio); ok {
			codec = c
			r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				v := td.Decode(pts)
				out = append(out, aacAU{time.Duration(v) * time.Second / 90000, aus})
				return nil
			})
		}
	}
	if codec == nil {
		t.Fatal("no AAC track")
	}
	for r.Read() == nil {
	}
	return codec, out
}

// AAC written to the pipe comes back as Opus on the same timeline, and
// ffmpeg's command line holds no input but pipe:0.
func TestAudioPipeAACToOpus(t *testing.T) {
	checkLeaks(t)
	ts := makeClip(t, "a.ts", "-map", "1:a", "-c:a", "aac", "-ac", "2", "-f", "mpegts")
	codec, in := readAAC(t, ts)
	if len(in) < 5 {
		t.Fatalf("only %d AAC writes in the clip", len(in))
	}
	t.Setenv("ICEY_AUTH_TOKEN", "pipe-env-secret")

	var mu sync.Mutex
	var got []time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := StartAudio(ctx, AudioConfig{AAC: codec.Config, OnOpus: func(pts time.Duration, frame []byte) {
		mu.Lock()
		got = append(got, pts)
		mu.Unlock()
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	childtest.CheckChild(t, p.Pid(), "pipe-env-secret", "ICEY_")
	// Shift the input to start at 5 s, pace it at 4x real time.
	const base = 5 * time.Second
	// Paced in real time, like a camera.
	t0 := time.Now()
	var firstOut time.Duration
	for _, a := range in {
		time.Sleep(time.Until(t0.Add(a.pts - in[0].pts)))
		p.WriteAAC(base+a.pts, a.aus)
		if firstOut == 0 && p.Frames() > 0 {
			firstOut = time.Since(t0)
		}
	}
	t.Logf("first Opus frame within %s of the first AAC write", firstOut)
	deadline := time.Now().Add(10 * time.Second)
	for p.Frames() < 80 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < 80 { // 2 s of audio = 100 frames of 20 ms
		t.Fatalf("%d Opus frames out of 2 s of AAC", len(got))
	}
	// Same timeline: the first Opus frame is within 50 ms of the first AAC.
	if d := got[0] - (base + in[0].pts); d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("first Opus PTS %s, first AAC PTS %s", got[0], base+in[0].pts)
	}
	t.Logf("%d AAC writes -> %d Opus frames, first PTS %s (input %s), last %s", len(in), len(got), got[0], base+in[0].pts, got[len(got)-1])
}

// readMPEGAudio demuxes the MPEG-1/2 Audio track of an MPEG-TS file.
func readMPEGAudio(t *testing.T, path string) []aacAU {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &mpegts.Reader{R: bufio.NewReader(f)}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	var out []aacAU
	var td mpegts.TimeDecoder
	for _, tr := range r.Tracks() {
		if _, ok := tr.Codec.(*tscodecs.MPEG1Audio); ok {
			r.OnDataMPEG1Audio(tr, func(pts int64, frames [][]byte) error {
				v := td.Decode(pts)
				out = append(out, aacAU{time.Duration(v) * time.Second / 90000, frames})
				return nil
			})
		}
	}
	for r.Read() == nil {
	}
	if len(out) < 5 {
		t.Fatalf("only %d MPEG audio writes in the clip", len(out))
	}
	return out
}

// readMP3 cuts a raw MPEG audio file (no ID3 tag, no Xing frame) into
// frames, one write each, timed by their sample counts.
func readMP3(t *testing.T, path string) []aacAU {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []aacAU
	var at time.Duration
	for len(raw) >= 4 {
		var h mpeg1audio.FrameHeader
		if err := h.Unmarshal(raw); err != nil {
			t.Fatalf("frame %d: %v", len(out), err)
		}
		n := min(MPEGAudioFrameLen(h), len(raw))
		out = append(out, aacAU{at, [][]byte{raw[:n]}})
		at += time.Duration(h.SampleCount()) * time.Second / time.Duration(h.SampleRate)
		raw = raw[n:]
	}
	if len(out) < 5 {
		t.Fatalf("only %d MPEG audio frames in the clip", len(out))
	}
	return out
}

// readG722 cuts a raw G.722 file (16 kHz, 64 kbit/s) into 20 ms frames of
// 160 bytes, as RTP carries them.
func readG722(t *testing.T, path string) []aacAU {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []aacAU
	for i := 0; i+160 <= len(raw); i += 160 {
		out = append(out, aacAU{time.Duration(i/160) * 20 * time.Millisecond, [][]byte{raw[i : i+160]}})
	}
	return out
}

// runAudioPipe feeds in (paced in real time, shifted to start at 5 s) to a
// pipe of codec and checks the Opus frames: ~50 per second, on the input
// timeline (the first within 50 ms of the first input), increasing.
func runAudioPipe(t *testing.T, codec AudioCodec, in []aacAU) {
	t.Helper()
	t.Setenv("ICEY_AUTH_TOKEN", "pipe-env-secret")
	var mu sync.Mutex
	var got []time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := StartAudio(ctx, AudioConfig{Codec: codec, OnOpus: func(pts time.Duration, frame []byte) {
		mu.Lock()
		got = append(got, pts)
		mu.Unlock()
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	proc := childtest.CheckChild(t, p.Pid(), "pipe-env-secret", "ICEY_")
	if argv := " " + strings.Join(proc.Cmdline, " ") + " "; !strings.Contains(argv, " -i pipe:0 ") || strings.Count(argv, " -i ") != 1 {
		t.Errorf("ffmpeg reads more than its stdin: %q", proc.Cmdline)
	}
	const base = 5 * time.Second
	t0 := time.Now()
	for _, a := range in {
		time.Sleep(time.Until(t0.Add(a.pts - in[0].pts)))
		switch codec {
		case AudioMPEG1:
			p.WriteMPEG1Audio(base+a.pts, a.aus)
		case AudioG722:
			p.WriteG722(base+a.pts, a.aus[0])
		}
	}
	fed := time.Since(t0)
	deadline := time.Now().Add(10 * time.Second)
	for p.Frames() < 90 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-p.Done():
		t.Fatalf("pipe stopped: %v", p.Err())
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	// 2 s of input: ~100 frames of 20 ms (ffmpeg may still hold the last few).
	if len(got) < 90 || len(got) > 102 {
		t.Fatalf("%d Opus frames out of %s of %s", len(got), fed.Round(time.Millisecond), codec)
	}
	if d := got[0] - (base + in[0].pts); d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("first Opus PTS %s, first input PTS %s", got[0], base+in[0].pts)
	}
	for i := 1; i < len(got); i++ {
		if d := got[i] - got[i-1]; d < 19*time.Millisecond || d > 21*time.Millisecond {
			t.Fatalf("Opus PTS step %d: %s -> %s", i, got[i-1], got[i])
		}
	}
	last := in[len(in)-1].pts - in[0].pts
	if span := got[len(got)-1] - got[0]; span < last-150*time.Millisecond || span > last+50*time.Millisecond {
		t.Errorf("Opus spans %s, the input %s", span, last)
	}
	t.Logf("%s: %d writes -> %d Opus frames, PTS %s..%s (input %s..%s)", codec, len(in), len(got),
		got[0], got[len(got)-1], base+in[0].pts, base+in[len(in)-1].pts)
}

// MP3 (MPEG-1 layer III at 44.1 kHz, MPEG-2 layer III at 22.05 kHz) and
// MP2 written to the pipe come back as Opus on the same timeline.
func TestAudioPipeMPEGAudioToOpus(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"mp3", []string{"-c:a", "libmp3lame", "-b:a", "64k", "-ac", "1"}},
		{"mp3-mpeg2-22k", []string{"-c:a", "libmp3lame", "-ar", "22050", "-b:a", "32k", "-ac", "1",
			"-write_xing", "0", "-id3v2_version", "0", "-f", "mp3"}},
		{"mp2", []string{"-c:a", "mp2", "-b:a", "128k", "-ac", "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			args := append([]string{"-map", "1:a"}, tc.args...)
			if slices.Contains(args, "mp3") {
				// mediacommon reads no MPEG-2 audio from MPEG-TS: raw frames.
				runAudioPipe(t, AudioMPEG1, readMP3(t, makeClip(t, "a.mp3", args...)))
				return
			}
			ts := makeClip(t, "a.ts", append(args, "-f", "mpegts")...)
			runAudioPipe(t, AudioMPEG1, readMPEGAudio(t, ts))
		})
	}
}

// G.722 written to the pipe (as Matroska) comes back as Opus on the same
// timeline.
func TestAudioPipeG722ToOpus(t *testing.T) {
	checkLeaks(t)
	raw := makeClip(t, "a.g722", "-map", "1:a", "-c:a", "g722", "-ar", "16000", "-ac", "1", "-f", "g722")
	runAudioPipe(t, AudioG722, readG722(t, raw))
}

// A pipe of one codec ignores the writes of another.
func TestAudioPipeWrongWrite(t *testing.T) {
	checkLeaks(t)
	testenv.RequireTool(t, "ffmpeg")
	p, err := StartAudio(context.Background(), AudioConfig{Codec: AudioG722, OnOpus: func(time.Duration, []byte) {}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.WriteAAC(0, [][]byte{{1, 2, 3}})
	p.WriteMPEG1Audio(0, [][]byte{{0xff, 0xfb, 0x90, 0}})
	if len(p.in) != 0 {
		t.Errorf("%d writes queued", len(p.in))
	}
	if _, err := StartAudio(context.Background(), AudioConfig{Codec: 42, OnOpus: func(time.Duration, []byte) {}}, nil); err == nil {
		t.Error("unknown codec accepted")
	}
}
