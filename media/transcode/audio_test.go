package transcode

import (
	"bufio"
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

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
