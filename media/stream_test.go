package media

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Timestamps and sequence numbers continue across a Discontinuity, with one
// offset for audio and video (A/V sync), and video resumes at an IDR.
func TestDiscontinuity(t *testing.T) {
	checkLeaks(t)
	st := newVideoStream(t, StreamConfig{}, true)
	sub, _ := st.Subscribe("s", SubscribeOptions{})
	const aStep = 20 * time.Millisecond
	run := func() {
		for i := 0; i < 10; i++ {
			pts := time.Duration(i) * frame30
			for a := pts.Truncate(aStep); a < pts+frame30; a += aStep {
				if a >= pts {
					st.WriteAudio(a, []byte{0xfc, byte(a / aStep)})
				}
			}
			au := [][]byte{slice(2000)}
			if i == 0 {
				au = [][]byte{idr(3000)}
			}
			st.WriteH264(pts, au)
		}
	}
	run()
	before := drain(t, sub)
	st.Discontinuity()
	// The new run starts with a P frame (dropped: no decoder could use it),
	// then starts over at pts 0 with audio first.
	st.WriteH264(0, [][]byte{slice(100)})
	run()
	after := drain(t, sub)

	for _, k := range []Kind{KindVideo, KindAudio} {
		b, a := onlyKind(before, k), onlyKind(after, k)
		all := append(append([]*Packet{}, b...), a...)
		for i := 1; i < len(all); i++ {
			if all[i].RTP.SequenceNumber != all[i-1].RTP.SequenceNumber+1 {
				t.Fatalf("%v: seq %d after %d", k, all[i].RTP.SequenceNumber, all[i-1].RTP.SequenceNumber)
			}
			if int32(all[i].RTP.Timestamp-all[i-1].RTP.Timestamp) < 0 {
				t.Fatalf("%v: timestamp went back", k)
			}
		}
	}
	vb, va := onlyKind(before, KindVideo), onlyKind(after, KindVideo)
	if !va[0].Keyframe {
		t.Fatal("video after the discontinuity does not start with a keyframe")
	}
	if got := len(depacketize(t, va, 1200)); got != 10 {
		t.Fatalf("%d AUs after the discontinuity, want 10", got)
	}
	// Same media time for the same pts on both kinds, before and after.
	ab, aa := onlyKind(before, KindAudio), onlyKind(after, KindAudio)
	vSec := func(p *Packet) float64 { return float64(p.RTP.Timestamp-vb[0].RTP.Timestamp) / 90000 }
	aSec := func(p *Packet) float64 { return float64(p.RTP.Timestamp-ab[0].RTP.Timestamp) / 48000 }
	if vSec(va[0]) != aSec(aa[0]) {
		t.Fatalf("A/V offset differs after the discontinuity: video %.4fs, audio %.4fs", vSec(va[0]), aSec(aa[0]))
	}
	// Audio ran last (to 320 ms): the new timeline starts one audio frame
	// after it, which is more than one video frame after the last picture.
	lastA := ab[len(ab)-1].RTP.Timestamp - ab[0].RTP.Timestamp
	startV := va[0].RTP.Timestamp - vb[0].RTP.Timestamp
	if lastA != 15360 || uint64(startV)*48000 != uint64(lastA+960)*90000 {
		t.Fatalf("new timeline starts at %.4fs, want last audio frame (%.4fs) + 20ms",
			vSec(va[0]), aSec(ab[len(ab)-1]))
	}
}

// A subscriber joining mid-GOP gets the cached GOP first (FromCache, the
// first packet a keyframe, original timestamps and sequence numbers), then
// live packets shared with the others; audio is live only. With NoCache,
// video starts at the next live keyframe.
func TestJoinMidGOP(t *testing.T) {
	checkLeaks(t)
	st := newVideoStream(t, StreamConfig{}, true)
	early, _ := st.Subscribe("early", SubscribeOptions{})
	pts := time.Duration(0)
	writeAV := func(au []byte) {
		st.WriteAudio(pts, []byte{1, 2, 3})
		st.WriteH264(pts, [][]byte{au})
		pts += frame30
	}
	writeAV(idr(5000))
	writeAV(slice(2000))
	writeAV(slice(1500))
	late, _ := st.Subscribe("late", SubscribeOptions{})
	nocache, _ := st.Subscribe("nocache", SubscribeOptions{NoCache: true})
	writeAV(slice(1000))
	writeAV(idr(4000))

	e, l, n := drain(t, early), drain(t, late), drain(t, nocache)
	ev, lv := onlyKind(e, KindVideo), onlyKind(l, KindVideo)
	if len(lv) != len(ev) {
		t.Fatalf("late got %d video packets, early %d", len(lv), len(ev))
	}
	cached := 0
	for i := range lv {
		if lv[i].RTP.Timestamp != ev[i].RTP.Timestamp || lv[i].RTP.SequenceNumber != ev[i].RTP.SequenceNumber {
			t.Fatalf("late packet %d: ts/seq %d/%d, early %d/%d", i,
				lv[i].RTP.Timestamp, lv[i].RTP.SequenceNumber, ev[i].RTP.Timestamp, ev[i].RTP.SequenceNumber)
		}
		if lv[i].FromCache {
			cached++
			if i > 0 && !lv[i-1].FromCache {
				t.Fatal("cached packet after a live one")
			}
		} else if lv[i] != ev[i] {
			t.Fatal("live packets are not shared between subscribers")
		}
		if ev[i].FromCache {
			t.Fatal("early subscriber got a FromCache packet")
		}
	}
	if !lv[0].Keyframe || !lv[0].FromCache {
		t.Fatalf("late's first video packet: keyframe %v, cached %v", lv[0].Keyframe, lv[0].FromCache)
	}
	// The first three AUs: 5000-byte IDR (STAP-A + 5 FU-A), 2 + 2 FU-A.
	if cached != 10 {
		t.Fatalf("%d cached packets, want 10", cached)
	}
	// The burst comes first, then live audio and video in write order.
	for i := 0; i < cached; i++ {
		if l[i].Kind != KindVideo {
			t.Fatal("audio inside the cached burst")
		}
	}
	if got := len(onlyKind(l, KindAudio)); got != 2 {
		t.Fatalf("late got %d audio packets, want the 2 live ones", got)
	}
	nv := onlyKind(n, KindVideo)
	if !nv[0].Keyframe || nv[0].FromCache || nv[0].RTP.Timestamp != ev[len(ev)-1].RTP.Timestamp {
		t.Fatal("NoCache subscriber did not start at the next live keyframe")
	}
	if got := len(onlyKind(n, KindAudio)); got != 2 {
		t.Fatalf("NoCache got %d audio packets, want 2 (audio does not wait for a keyframe)", got)
	}
	if s := nocache.Stats(); s.Dropped != 0 {
		t.Fatalf("initial wait for a keyframe counted as %d drops", s.Dropped)
	}
}

// A GOP larger than GOPCacheMaxBytes is not cached: a new subscriber then
// waits for the next live keyframe instead of getting a partial GOP.
func TestGOPCacheBound(t *testing.T) {
	st := newVideoStream(t, StreamConfig{GOPCacheMaxBytes: 6000}, true)
	st.WriteH264(0, [][]byte{idr(4000)})
	st.WriteH264(frame30, [][]byte{slice(1000)})
	s1, _ := st.Subscribe("fits", SubscribeOptions{})
	st.WriteH264(2*frame30, [][]byte{slice(3000)}) // now 8000 bytes: dropped
	s2, _ := st.Subscribe("too-late", SubscribeOptions{})
	st.WriteH264(3*frame30, [][]byte{slice(1000)})
	st.WriteH264(4*frame30, [][]byte{idr(1000)})

	if p := drain(t, s1); !p[0].FromCache || !p[0].Keyframe || len(depacketize(t, p, 1200)) != 5 {
		t.Fatal("subscriber within the bound did not get the cached GOP")
	}
	p := drain(t, s2)
	if p[0].FromCache || !p[0].Keyframe || len(depacketize(t, p, 1200)) != 1 {
		t.Fatal("subscriber after the cache overflowed did not start at the live keyframe")
	}
}

// A subscriber that never reads does not change what a reading one gets;
// it drops (counted), and once it reads again its video restarts at a
// keyframe while audio kept flowing.
func TestSlowSubscriber(t *testing.T) {
	checkLeaks(t)
	aus := makeClip(t, "640x360", 3, 15)
	st := newVideoStream(t, StreamConfig{}, false)
	fast, _ := st.Subscribe("fast", SubscribeOptions{})
	slow, _ := st.Subscribe("slow", SubscribeOptions{QueuePackets: 40})
	ref, _ := st.Subscribe("reference", SubscribeOptions{QueuePackets: 1 << 16})

	var fastGot []*Packet
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { // a real concurrent reader
		defer wg.Done()
		buf := make([]*Unit, 32)
		for {
			n, err := fast.Read(ctx, buf)
			fastGot = append(fastGot, packetsOf(buf[:n])...)
			if err != nil {
				return
			}
		}
	}()
	half := len(aus) / 2
	write := func(from, to int) {
		for i := from; i < to; i++ {
			pts := time.Duration(i) * frame30
			st.WriteAudio(pts, []byte{0xfc, byte(i)})
			st.WriteH264(pts, aus[i])
		}
	}
	write(0, half)
	ss := slow.Stats()
	if ss.Dropped == 0 || ss.Overflows == 0 {
		t.Fatalf("slow subscriber: %+v, want drops and overflows", ss)
	}
	// The slow one starts reading again.
	var slowGot []*Packet
	for i := half; i < len(aus); i++ {
		write(i, i+1)
		slowGot = append(slowGot, drain(t, slow)...)
	}
	refGot := drain(t, ref)
	deadline := time.Now().Add(10 * time.Second)
	for fast.Stats().Queued > 0 || fast.Stats().Sent < uint64(len(refGot)) {
		if time.Now().After(deadline) {
			t.Fatal("fast reader did not catch up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()

	if len(fastGot) != len(refGot) {
		t.Fatalf("reading subscriber got %d packets, reference %d", len(fastGot), len(refGot))
	}
	for i := range fastGot {
		if fastGot[i] != refGot[i] {
			t.Fatalf("reading subscriber's packet %d differs", i)
		}
	}
	if fs := fast.Stats(); fs.Dropped != 0 || fs.Overflows != 0 {
		t.Fatalf("reading subscriber dropped: %+v", fs)
	}
	// After its overflow, the slow subscriber's video resumes at a keyframe
	// and stays decodable; its audio never waited for one.
	sv := onlyKind(slowGot, KindVideo)
	if len(sv) == 0 || !sv[0].Keyframe {
		t.Fatal("slow subscriber's video did not resume at a keyframe")
	}
	for i := 1; i < len(sv); i++ {
		if sv[i].RTP.SequenceNumber != sv[i-1].RTP.SequenceNumber+1 && !sv[i].Keyframe {
			t.Fatalf("slow subscriber: gap before packet %d that is not a keyframe", i)
		}
	}
	sa := onlyKind(slowGot, KindAudio)
	if len(sa) < len(aus)-half-1 {
		t.Fatalf("slow subscriber got %d audio packets after resuming, want about %d", len(sa), len(aus)-half)
	}
	t.Logf("slow: %+v; fast: %+v", slow.Stats(), fast.Stats())
}

func TestReadSemantics(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	st := NewStream(StreamConfig{Name: "x"}, nil)
	if _, err := st.Subscribe("a", SubscribeOptions{}); !errors.Is(err, ErrNoTracks) {
		t.Fatalf("Subscribe before SetTracks: %v, want ErrNoTracks", err)
	}
	tracksCh := make(chan Tracks, 1)
	go func() {
		tr, err := st.WaitTracks(ctx)
		if err != nil {
			t.Error(err)
		}
		tracksCh <- tr
	}()
	st.SetTracks(Tracks{Audio: &AudioParams{Codec: CodecPCMU, ClockRate: 8000, Channels: 1}})
	if tr := <-tracksCh; tr.Audio == nil || tr.Audio.Codec != CodecPCMU || tr.Video != nil {
		t.Fatalf("WaitTracks: %+v", tr)
	}
	sub, err := st.Subscribe("a", SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Read blocks until a packet arrives.
	got := make(chan int, 1)
	go func() {
		n, err := sub.Read(ctx, make([]*Unit, 8))
		if err != nil {
			t.Error(err)
		}
		got <- n
	}()
	select {
	case <-got:
		t.Fatal("Read returned without a packet")
	case <-time.After(50 * time.Millisecond):
	}
	st.WriteAudio(0, make([]byte, 160))
	if n := <-got; n != 1 {
		t.Fatalf("Read = %d", n)
	}

	// Batching: everything queued that fits.
	for i := 1; i <= 10; i++ {
		st.WriteAudio(time.Duration(i)*20*time.Millisecond, make([]byte, 160))
	}
	buf := make([]*Unit, 4)
	if n, _ := sub.Read(ctx, buf); n != 4 {
		t.Fatalf("Read with 4 slots = %d", n)
	}
	buf = make([]*Unit, 64)
	n, _ := sub.Read(ctx, buf)
	if n != 6 {
		t.Fatalf("Read = %d, want the 6 left", n)
	}
	if p := buf[n-1].Packets[0]; p.RTP.PayloadType != PayloadTypePCMU || p.RTP.Timestamp-buf[0].Packets[0].RTP.Timestamp != 5*160 {
		t.Fatalf("PCMU packet: pt %d", p.RTP.PayloadType)
	}
	if s := sub.Stats(); s.Sent != 11 || s.Queued != 0 {
		t.Fatalf("stats %+v", s)
	}

	// ctx done.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := sub.Read(cctx, buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with expired ctx: %v", err)
	}
	cancel()

	// Subscriber.Close ends a blocked Read.
	errc := make(chan error, 1)
	go func() { _, err := sub.Read(ctx, buf); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	sub.Close()
	sub.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if st.Stats().Subscribers != 0 {
		t.Fatal("closed subscriber still attached")
	}

	// Stream.Close ends every subscriber, even with queued packets.
	s1, _ := st.Subscribe("1", SubscribeOptions{})
	s2, _ := st.Subscribe("2", SubscribeOptions{})
	st.WriteAudio(time.Second, []byte{1})
	go func() { _, err := s2.Read(ctx, buf); errc <- err }()
	st.Close()
	st.Close()
	if _, err := s1.Read(ctx, buf); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after stream Close: %v", err)
	}
	if _, err := s2.Read(ctx, buf); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after stream Close: %v", err)
	}
	<-errc
	if _, err := st.Subscribe("3", SubscribeOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatalf("WaitTracks after Close with tracks: %v", err)
	}
	st2 := NewStream(StreamConfig{}, nil)
	st2.Close()
	if _, err := st2.WaitTracks(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitTracks on a closed stream without tracks: %v", err)
	}
	st.WriteAudio(2*time.Second, []byte{1}) // ignored, must not panic
}

func TestStats(t *testing.T) {
	st := newVideoStream(t, StreamConfig{Name: "cam"}, true)
	clock := time.Unix(1000, 0)
	st.now = func() time.Time { return clock }
	sub, _ := st.Subscribe("viewer-1", SubscribeOptions{QueuePackets: 8})
	for i := 0; i < 90; i++ {
		au := [][]byte{slice(100)}
		if i%30 == 0 {
			au = [][]byte{idr(100)}
		}
		st.WriteH264(time.Duration(i)*frame30, au)
		clock = clock.Add(40 * time.Millisecond) // 25 fps in wall time
	}
	s := st.Stats()
	if s.FPS < 24.5 || s.FPS > 25.5 {
		t.Fatalf("FPS %.2f, want 25", s.FPS)
	}
	if s.PacketsIn != 90 || s.BytesIn != uint64(87*100+3*(1+2+len(testSPS)+2+len(testPPS)+2+100)) {
		t.Fatalf("in: %d packets, %d bytes", s.PacketsIn, s.BytesIn)
	}
	if s.State != SourceUp || s.Subscribers != 1 || len(s.Viewers) != 1 || s.Viewers[0].ID != "viewer-1" {
		t.Fatalf("stats %+v", s)
	}
	if v := s.Viewers[0]; v.Dropped == 0 || v.Overflows == 0 {
		t.Fatalf("viewer stats %+v", v)
	}
	if s.Tracks.Video == nil || string(s.Tracks.Video.SPS) != string(testSPS) || s.Tracks.Audio == nil {
		t.Fatalf("tracks %+v", s.Tracks)
	}
	if !s.LastMediaAt.Equal(clock.Add(-40 * time.Millisecond)) {
		t.Fatalf("LastMediaAt %v", s.LastMediaAt)
	}
	clock = clock.Add(3 * time.Second)
	if fps := st.Stats().FPS; fps != 0 {
		t.Fatalf("FPS %.2f after 3 s without video", fps)
	}
	_ = sub
}

// Video only: the new timeline starts exactly one frame after the last AU.
func TestDiscontinuityVideoOnly(t *testing.T) {
	st := NewStream(StreamConfig{}, nil)
	defer st.Close()
	st.SetTracks(Tracks{Video: &VideoParams{SPS: testSPS, PPS: testPPS}})
	sub, _ := st.Subscribe("v", SubscribeOptions{})
	for loop := 0; loop < 3; loop++ { // a file looping three times
		st.Discontinuity()
		writeGOP(st, 0, 5)
	}
	aus := depacketize(t, drain(t, sub), 1200)
	if len(aus) != 15 {
		t.Fatalf("%d AUs", len(aus))
	}
	for i := 1; i < len(aus); i++ {
		if d := aus[i].ts - aus[i-1].ts; d != 3000 {
			t.Fatalf("AU %d: step %d, want 3000", i, d)
		}
	}
}
