package builtin

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/icey/icey-server/media"
)

// The embedded clip is what gen.sh promises: small, browser-safe H.264
// Constrained Baseline 640x360 at 30 fps with a 1 s GOP and no B-frames,
// Opus stereo, and audio as long as video so the loop is seamless.
func TestEmbeddedClip(t *testing.T) {
	if len(testclip) > 1<<20 {
		t.Errorf("clip is %d bytes, want well under 1 MiB", len(testclip))
	}
	var p pmp4.Presentation
	if err := p.Unmarshal(bytes.NewReader(testclip)); err != nil {
		t.Fatal(err)
	}
	var video, audio *pmp4.Track
	for _, tr := range p.Tracks {
		switch tr.Codec.(type) {
		case *codecs.H264:
			video = tr
		case *codecs.Opus:
			audio = tr
		}
	}
	if video == nil || audio == nil {
		t.Fatalf("tracks %+v, want H.264 and Opus", p.Tracks)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(video.Codec.(*codecs.H264).SPS); err != nil {
		t.Fatal(err)
	}
	// profile_idc 66 with constraint_set1 = Constrained Baseline.
	if sps.ProfileIdc != 66 || !sps.ConstraintSet1Flag || sps.Width() != 640 || sps.Height() != 360 {
		t.Errorf("SPS profile %d cs1 %v %dx%d, want Constrained Baseline 640x360",
			sps.ProfileIdc, sps.ConstraintSet1Flag, sps.Width(), sps.Height())
	}
	if ch := audio.Codec.(*codecs.Opus).ChannelCount; ch != 2 {
		t.Errorf("Opus channels %d", ch)
	}
	var vDur, aDur uint64
	var bytesV int
	for i, s := range video.Samples {
		vDur += uint64(s.Duration)
		bytesV += int(s.PayloadSize)
		if s.PTSOffset != 0 {
			t.Fatal("composition offsets: B-frames present")
		}
		if wantSync := i%30 == 0; !s.IsNonSyncSample != wantSync {
			t.Fatalf("sample %d sync=%v, want a keyframe exactly every 30 frames", i, !s.IsNonSyncSample)
		}
	}
	for _, s := range audio.Samples {
		aDur += uint64(s.Duration)
	}
	vd := time.Duration(vDur) * time.Second / time.Duration(video.TimeScale)
	ad := time.Duration(aDur) * time.Second / time.Duration(audio.TimeScale)
	if len(video.Samples) != 180 || vd != 6*time.Second {
		t.Errorf("video: %d frames, %v", len(video.Samples), vd)
	}
	// Opus carries the encoder's pre-skip (312 samples, 6.5 ms) in front.
	if d := ad - vd; d < 0 || d > 10*time.Millisecond {
		t.Errorf("audio %v vs video %v: loop not seamless", ad, vd)
	}
	kbps := float64(bytesV) * 8 / vd.Seconds() / 1000
	t.Logf("clip %d bytes, video %.0f kbit/s, %v / %v", len(testclip), kbps, vd, ad)
	if kbps < 300 || kbps > 700 {
		t.Errorf("video bitrate %.0f kbit/s", kbps)
	}
}

// The built-in source delivers video (starting with a keyframe) and audio
// through a real Stream, and stops promptly.
func TestSourceDelivers(t *testing.T) {
	before := runtime.NumGoroutine()
	src := New(nil)
	if src.Kind() != "builtin" || src.String() != "builtin test stream" {
		t.Errorf("Kind/String = %q %q", src.Kind(), src.String())
	}
	if in := src.Info(); in.VideoCodec != "H264" || in.AudioCodec != "opus" || in.Width != 640 {
		t.Errorf("info %+v", in)
	}
	st := media.NewStream(media.StreamConfig{Name: "builtin"}, nil)
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()

	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	tr, err := st.WaitTracks(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Video == nil || tr.Audio == nil || tr.Audio.Codec != media.CodecOpus || tr.Audio.ClockRate != 48000 || tr.Audio.Channels != 2 {
		t.Fatalf("tracks %+v", tr)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var video, audio int
	var first *media.Packet
	buf := make([]*media.Unit, 64)
	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	defer rcancel()
	for {
		n, err := sub.Read(rctx, buf)
		for _, u := range buf[:n] {
			for _, p := range u.Packets {
				if p.Kind == media.KindVideo {
					if first == nil {
						first = p
					}
					video++
				} else {
					audio++
				}
			}
		}
		if err != nil {
			break
		}
	}
	if first == nil || !first.Keyframe {
		t.Fatalf("first video packet %+v is not a keyframe", first)
	}
	t.Logf("1 s: %d video packets, %d audio packets", video, audio)
	if video < 20 || audio < 25 {
		t.Errorf("%d video and %d audio packets in 1 s", video, audio)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop")
	}
	sub.Close()
	st.Close()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before, %d after", before, n)
	}
}
