package file

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/icey/icey-server/media"
)

// collect reads the packets of the units from sub until ctx is done or the stream closes.
type collected struct {
	pkts []*media.Packet
	at   []time.Time
}

func collect(ctx context.Context, sub *media.Subscriber) *collected {
	c := &collected{}
	buf := make([]*media.Unit, 64)
	for {
		n, err := sub.Read(ctx, buf)
		now := time.Now()
		for _, u := range buf[:n] {
			for _, p := range u.Packets {
				c.pkts = append(c.pkts, p)
				c.at = append(c.at, now)
			}
		}
		if err != nil {
			return c
		}
	}
}

// frames counts distinct video RTP timestamps (access units) and audio packets.
func (c *collected) frames() (video, audio int) {
	var last uint32
	have := false
	for _, p := range c.pkts {
		if p.Kind == media.KindAudio {
			audio++
			continue
		}
		if !have || p.RTP.Timestamp != last {
			video++
			last, have = p.RTP.Timestamp, true
		}
	}
	return
}

func subscribeWhenReady(t *testing.T, st *media.Stream) *media.Subscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatalf("WaitTracks: %v", err)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	return sub
}

func settleGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before, %d after", before, n)
	}
}

// A looping file through a real Stream: the first video packet a
// subscriber gets is a keyframe, packets arrive at the file's rate, and RTP
// timestamps never go backwards across loop points.
func TestStreamLoop(t *testing.T) {
	before := runtime.NumGoroutine()
	src, err := New(Config{Path: testClip(t, "h264-opus-1s"), Loop: true}, nil)
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
	const listen = 2600 * time.Millisecond
	rctx, rcancel := context.WithTimeout(context.Background(), listen)
	defer rcancel()
	c := collect(rctx, sub)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if src.Loops() < 2 {
		t.Fatalf("%d loops in %v of a 1 s file", src.Loops(), listen)
	}

	var firstVideo *media.Packet
	lastTS := map[media.Kind]uint32{}
	seen := map[media.Kind]bool{}
	for _, p := range c.pkts {
		if p.Kind == media.KindVideo && firstVideo == nil {
			firstVideo = p
		}
		if len(p.RTP.Payload) == 0 {
			t.Fatal("empty packet")
		}
		if len(p.RTP.Payload) > 1200 {
			t.Fatalf("payload %d bytes", len(p.RTP.Payload))
		}
		if seen[p.Kind] {
			d := int32(p.RTP.Timestamp - lastTS[p.Kind])
			if d < 0 || (p.Kind == media.KindAudio && d == 0) {
				t.Fatalf("%v RTP timestamp went from %d to %d", p.Kind, lastTS[p.Kind], p.RTP.Timestamp)
			}
			// Continuous: no jump larger than a few frames, loop points included
			// (video clock 90 kHz, Opus 48 kHz).
			if limit := map[media.Kind]int32{media.KindVideo: 9000, media.KindAudio: 2880}[p.Kind]; d > limit {
				t.Errorf("%v RTP timestamp jumped by %d", p.Kind, d)
			}
		}
		lastTS[p.Kind], seen[p.Kind] = p.RTP.Timestamp, true
	}
	if firstVideo == nil || !firstVideo.Keyframe {
		t.Fatalf("first video packet %+v is not a keyframe", firstVideo)
	}
	video, audio := c.frames()
	// 30 fps and 50 Opus frames per second; generous bounds for a busy machine.
	secs := listen.Seconds()
	t.Logf("%v: %d video frames (%.1f/s), %d audio packets (%.1f/s), %d loops", listen, video, float64(video)/secs, audio, float64(audio)/secs, src.Loops())
	if video < int(20*secs) || video > int(40*secs) {
		t.Errorf("video frames %d in %v", video, listen)
	}
	if audio < int(35*secs) || audio > int(65*secs) {
		t.Errorf("audio packets %d in %v", audio, listen)
	}
	sub.Close()
	st.Close()
	settleGoroutines(t, before)
}

// Without loop, Run returns nil after about the file's duration and the
// subscriber got the whole file.
func TestStreamNoLoop(t *testing.T) {
	src, err := New(Config{Path: testClip(t, "h264-only")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "file"}, nil)
	defer st.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background(), st) }()
	sub := subscribeWhenReady(t, st)
	rctx, rcancel := context.WithCancel(context.Background())
	got := make(chan *collected, 1)
	go func() { got <- collect(rctx, sub) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end")
	}
	took := time.Since(start)
	time.Sleep(100 * time.Millisecond)
	rcancel()
	c := <-got
	if took < 900*time.Millisecond || took > 3*time.Second {
		t.Errorf("1 s file ended after %v", took)
	}
	video, audio := c.frames()
	if video < 28 || video > 30 || audio != 0 {
		t.Errorf("%d video frames and %d audio packets, want 30 and 0", video, audio)
	}
	if tr := st.Tracks(); tr.Video == nil || tr.Audio != nil {
		t.Errorf("tracks %+v", tr)
	}
}

// AAC audio is not carried: the stream has video only, with a warning.
func TestStreamAACVideoOnly(t *testing.T) {
	src, err := New(Config{Path: testClip(t, "h264-aac")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Warnings()) != 1 {
		t.Fatalf("warnings %q", src.Warnings())
	}
	st := media.NewStream(media.StreamConfig{Name: "file"}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.Run(ctx, st); err != nil {
		t.Fatal(err)
	}
	if tr := st.Tracks(); tr.Video == nil || tr.Audio != nil {
		t.Errorf("tracks %+v", tr)
	}
	if s := st.Stats(); s.PacketsIn == 0 {
		t.Errorf("no packets published: %+v", s)
	}
}
