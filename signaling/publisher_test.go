package signaling

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
)

// pubClip is the shared test clip as a WHIP publisher sends it.
func pubClip(t *testing.T) *testpeer.Clip {
	c := getClip(t)
	return &testpeer.Clip{AUs: c.aus, FPS: clipFPS, Opus: c.opus}
}

// startPublisher publishes the shared clip through POST /whip.
func startPublisher(t *testing.T, h *harness, o testpeer.PublishOptions) *testpeer.Publisher {
	t.Helper()
	p, err := testpeer.Publish(context.Background(), h.srv.URL+"/whip", pubClip(t), o)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// relayHarness is a path that takes one publisher and viewers.
func relayHarness(t *testing.T, cfg Config) *harness {
	return newHarnessRoles(t, nil, cfg, nil, true, true)
}

func waitPublishing(t *testing.T, h *harness) {
	t.Helper()
	waitFor(t, "the publisher's tracks", 10*time.Second, func() bool {
		tr := h.st.Tracks()
		return tr.Video != nil && tr.Audio != nil
	})
}

func sessionsByRole(h *harness) map[string]int {
	out := map[string]int{}
	for _, s := range h.m.Sessions() {
		if s.State == "connected" {
			out[s.Role]++
		}
	}
	return out
}

// A WHIP publisher's H.264 and Opus reach a WHEP viewer of the same path:
// frames reassemble, the first is an IDR with SPS/PPS, audio flows.
func TestPublisherViewerDecodes(t *testing.T) {
	base := runtime.NumGoroutine()
	h := relayHarness(t, Config{})
	pub := startPublisher(t, h, testpeer.PublishOptions{})
	waitPublishing(t, h)

	v := startViewer(t, h)
	waitChan(t, "viewer connected", v.connected, 10*time.Second)
	v.waitFrames(t, 60, 15*time.Second)
	waitFor(t, "audio at the viewer", 10*time.Second, func() bool { _, _, a := v.snapshot(); return a >= 25 })
	frames, maxPayload, audio := v.snapshot()
	if f := frames[0]; !f.idr || !f.sps || !f.pps {
		t.Fatalf("first frame NAL types %v: want SPS, PPS and IDR", f.nalTypes)
	}
	keyframes, damaged := 0, 0
	for i, f := range frames {
		if f.idr {
			keyframes++
		}
		if f.truncated {
			damaged++
		}
		if i > 0 && int32(f.ts-frames[i-1].ts) <= 0 {
			t.Errorf("frame %d: RTP timestamp %d after %d", i, f.ts, frames[i-1].ts)
		}
	}
	if damaged > 0 {
		t.Errorf("%d frames with missing packets", damaged)
	}
	if maxPayload > 1200 {
		t.Errorf("max RTP payload %d > 1200", maxPayload)
	}
	t.Logf("viewer: %d frames (%d keyframes), %d audio packets; publisher sent %d frames, %d audio packets, got %d PLIs",
		len(frames), keyframes, audio, pub.FramesSent.Load(), pub.AudioSent.Load(), pub.PLIs.Load())
	if got := sessionsByRole(h); got["publisher"] != 1 || got["viewer"] != 1 {
		t.Errorf("connected sessions by role: %v", got)
	}
	// The server gives the publisher's encoder feedback: receiver reports
	// and transport-wide congestion control.
	waitFor(t, "receiver reports and TWCC feedback at the publisher", 5*time.Second, func() bool {
		return pub.Reports.Load() > 0 && pub.CCFeedback.Load() > 0
	})

	// The publisher hangs up: its session ends, the viewer's stays.
	if code, err := pub.Delete(); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE publisher: %d %v", code, err)
	}
	waitFor(t, "publisher gone", 10*time.Second, func() bool { return sessionsByRole(h)["publisher"] == 0 })
	time.Sleep(300 * time.Millisecond)
	if got := sessionsByRole(h); got["viewer"] != 1 {
		t.Errorf("viewer session gone with the publisher: %v", got)
	}
	pub.Close()
	v.close()
	h.close()
	checkGoroutines(t, base)
}

// Handover: publisher 1 leaves, publisher 2 arrives, and the same viewer
// peer connection (no new offer) decodes again, with RTP timestamps and
// sequence numbers continuing across the change.
func TestPublisherHandover(t *testing.T) {
	h := relayHarness(t, Config{})
	pub1 := startPublisher(t, h, testpeer.PublishOptions{})
	waitPublishing(t, h)
	v := startViewer(t, h)
	waitChan(t, "viewer connected", v.connected, 10*time.Second)
	v.waitFrames(t, 45, 15*time.Second)

	if code, err := pub1.Delete(); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE publisher 1: %d %v", code, err)
	}
	pub1.Close()
	lastSent1 := pub1.LastFrameAt()
	n1 := v.gotFrames.Load()

	// Publisher 2 posts at once (what a client that reconnects does).
	handover := time.Now()
	pub2 := startPublisher(t, h, testpeer.PublishOptions{})
	v.waitFrames(t, int(n1)+45, 15*time.Second)

	frames, _, _ := v.snapshot()
	// The handover is the frame gap that spans publisher 2's arrival.
	split := -1
	for i := 1; i < len(frames); i++ {
		if frames[i-1].at.Before(handover) && !frames[i].at.Before(handover) {
			split = i
			break
		}
	}
	if split < 0 {
		t.Fatal("no frame from publisher 2 after the handover")
	}
	last1, first2 := frames[split-1], frames[split]
	if !first2.idr || !first2.sps || !first2.pps {
		t.Errorf("first frame after the handover has NAL types %v: want SPS, PPS and IDR", first2.nalTypes)
	}
	for i := 1; i < len(frames); i++ {
		if d := int32(frames[i].ts - frames[i-1].ts); d <= 0 {
			t.Errorf("frame %d: RTP timestamp went back by %d (from %d to %d)", i, -d, frames[i-1].ts, frames[i].ts)
		}
		if frames[i].truncated {
			// The viewer marks a frame whose packets do not follow the
			// previous one's sequence number.
			t.Errorf("frame %d: sequence number gap (handover at frame %d)", i, split)
		}
	}
	tsJump := time.Duration(int32(first2.ts-last1.ts)) * time.Second / 90000
	gap := first2.at.Sub(last1.at)
	t.Logf("handover gap at the viewer: %v (last frame of publisher 1 -> first frame of publisher 2); publisher 1's last frame was sent %v before publisher 2's POST (its DELETE); publisher 2 POST -> first frame at the viewer %v; RTP timestamp step across the gap %v",
		gap.Round(time.Millisecond), handover.Sub(lastSent1).Round(time.Millisecond), first2.at.Sub(handover).Round(time.Millisecond), tsJump)
	if tsJump > time.Second {
		t.Errorf("RTP timestamps jumped %v across the handover, want about one frame", tsJump)
	}
	if got := sessionsByRole(h); got["viewer"] != 1 || got["publisher"] != 1 {
		t.Errorf("connected sessions by role after the handover: %v", got)
	}
	_ = pub2
}

// A second publisher while one is live is refused with 409; the first
// keeps publishing.
func TestPublisherBusy(t *testing.T) {
	h := relayHarness(t, Config{})
	pub1 := startPublisher(t, h, testpeer.PublishOptions{})
	waitPublishing(t, h)
	v := startViewer(t, h)
	v.waitFrames(t, 15, 15*time.Second)

	_, err := testpeer.Publish(context.Background(), h.srv.URL+"/whip", pubClip(t), testpeer.PublishOptions{})
	var se *testpeer.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusConflict {
		t.Fatalf("second publisher: %v, want 409", err)
	}
	t.Logf("second publisher refused: %d %q", se.Code, se.Body)

	n := v.gotFrames.Load()
	v.waitFrames(t, int(n)+30, 10*time.Second)
	if got := sessionsByRole(h); got["publisher"] != 1 {
		t.Errorf("connected sessions by role: %v", got)
	}
	if pub1.FramesSent.Load() == 0 {
		t.Error("publisher 1 stopped sending")
	}

	// Publisher 1 goes away without a DELETE: its session ends (the peer
	// closed) and frees the path for the next one.
	pub1.Disconnect()
	waitFor(t, "publisher 1's session gone", 20*time.Second, func() bool { return sessionsByRole(h)["publisher"] == 0 })
	startPublisher(t, h, testpeer.PublishOptions{})
	n = v.gotFrames.Load()
	v.waitFrames(t, int(n)+15, 10*time.Second)
}

// A viewer that joins while the stream has no keyframe (the publisher
// started mid-GOP) makes the stream ask the publisher for one: the PLI
// reaches it and the viewer gets a keyframe before the clip's next IDR.
func TestPublisherKeyframeRequest(t *testing.T) {
	h := relayHarness(t, Config{})
	// Frame 1 of a 60-frame GOP: the clip's next IDR is ~2 s away.
	pub := startPublisher(t, h, testpeer.PublishOptions{StartFrame: 1})
	waitPublishing(t, h)
	waitFor(t, "video from the publisher", 10*time.Second, func() bool { return h.st.Stats().PacketsIn > 0 })
	if n := pub.PLIs.Load(); n != 0 {
		t.Errorf("%d PLIs before any viewer", n)
	}

	v := startViewer(t, h)
	waitFor(t, "a PLI at the publisher", 5*time.Second, func() bool { return pub.PLIs.Load() > 0 })
	waitChan(t, "first frame", v.firstFrame, 10*time.Second)
	frames, _, _ := v.snapshot()
	if !frames[0].idr {
		t.Errorf("first frame NAL types %v: want an IDR", frames[0].nalTypes)
	}
	t.Logf("PLIs at the publisher %d; viewer POST -> first frame %v (the clip's own next IDR was up to 2 s away)",
		pub.PLIs.Load(), frames[0].at.Sub(v.posted).Round(time.Millisecond))
}

// recordingSink records what a publisher's track readers write.
type recordingSink struct {
	mu       sync.Mutex
	aus      [][][]byte
	pts      []time.Duration
	requests int
}

func (r *recordingSink) SetTracks(media.Tracks)            {}
func (r *recordingSink) Discontinuity()                    {}
func (r *recordingSink) WriteAudio(time.Duration, []byte)  {}
func (r *recordingSink) WriteH265(time.Duration, [][]byte) {}
func (r *recordingSink) RequestKeyframe()                  { r.mu.Lock(); r.requests++; r.mu.Unlock() }
func (r *recordingSink) WriteH264(pts time.Duration, au [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := make([][]byte, len(au))
	for i, n := range au {
		cp[i] = append([]byte(nil), n...)
	}
	r.aus = append(r.aus, cp)
	r.pts = append(r.pts, pts)
}

// The video depacketizer reassembles access units from RFC 6184 packets
// (pion's payloader: STAP-A, FU-A, single NALUs) across an RTP timestamp
// wrap; a lost packet drops its access unit and everything up to the next
// IDR, and requests one keyframe.
func TestPublisherDepacketizeLoss(t *testing.T) {
	c := getClip(t)
	const frames = 90 // IDRs at 0 and 60
	const lossFrame = 10
	var pay codecs.H264Payloader
	var pkts []*rtp.Packet
	seq := uint16(65500)         // wraps too
	ts0 := uint32(1<<32 - 30000) // wraps after 10 frames
	lost := false
	var want [][][]byte // AUs expected out, NALUs without AUD
	for i := 0; i < frames; i++ {
		var annexb []byte
		var nalus [][]byte
		for _, n := range c.aus[i] {
			annexb = append(annexb, 0, 0, 0, 1)
			annexb = append(annexb, n...)
			if n[0]&0x1f != 9 {
				nalus = append(nalus, n)
			}
		}
		payloads := pay.Payload(1200, annexb)
		if i < lossFrame || i >= 60 {
			want = append(want, nalus)
		}
		for j, pl := range payloads {
			p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 102, SequenceNumber: seq,
				Timestamp: ts0 + uint32(i*3000), Marker: j == len(payloads)-1, SSRC: 1}, Payload: pl}
			seq++
			if i == lossFrame && j == len(payloads)/2 && !lost {
				lost = true
				continue
			}
			pkts = append(pkts, p)
			if i == 5 && j == 0 {
				pkts = append(pkts, p) // a duplicate is ignored
			}
		}
	}
	sink := &recordingSink{}
	p := &publisher{sink: sink}
	next := 0
	p.readVideo(func() (*rtp.Packet, error) {
		if next == len(pkts) {
			return nil, io.EOF
		}
		next++
		return pkts[next-1], nil
	}, time.Now())

	if len(sink.aus) != len(want) {
		t.Fatalf("%d access units written, want %d", len(sink.aus), len(want))
	}
	for i := range want {
		if len(sink.aus[i]) != len(want[i]) {
			t.Fatalf("AU %d: %d NALUs, want %d", i, len(sink.aus[i]), len(want[i]))
		}
		for k := range want[i] {
			if !bytes.Equal(sink.aus[i][k], want[i][k]) {
				t.Fatalf("AU %d NALU %d differs", i, k)
			}
		}
	}
	if !hasIDR(sink.aus[lossFrame]) {
		t.Error("the first AU after the loss is not the IDR")
	}
	// pts follow the RTP timestamps (across the wrap): frame n at n/30 s.
	for i, pts := range sink.pts {
		frame := i
		if i >= lossFrame {
			frame = i - lossFrame + 60
		}
		if d := pts - sink.pts[0] - time.Duration(frame)*time.Second/30; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("AU %d (frame %d): pts %v, off by %v", i, frame, pts-sink.pts[0], d)
		}
	}
	if sink.requests != 1 {
		t.Errorf("%d keyframe requests, want 1", sink.requests)
	}
	if p.lostPackets.Load() != 1 {
		t.Errorf("lost packets %d, want 1", p.lostPackets.Load())
	}
}

// A publisher that sends keyframes only when asked (an endless GOP) is
// asked for one every 2 s once the stream has viewers and its last
// keyframe is older than 4 s.
func TestPublisherRareKeyframes(t *testing.T) {
	h := relayHarness(t, Config{})
	// One IDR in 12 s: the publisher never skips one of the clip's IDRs
	// (which would leave the pictures after it without their reference).
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{GOP: 360, Seconds: 12})
	pub, err := testpeer.Publish(context.Background(), h.srv.URL+"/whip", clip, testpeer.PublishOptions{OnlyRequestedKeyframes: true})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Cleanup(pub.Close)
	waitPublishing(t, h)
	waitFor(t, "the first keyframe", 10*time.Second, func() bool { return !h.st.Stats().LastKeyframeAt.IsZero() })
	first := h.st.Stats().LastKeyframeAt
	v := startViewer(t, h) // starts from the cached keyframe: no PLI for it
	v.waitFrames(t, 10, 10*time.Second)
	if n := pub.PLIs.Load(); n != 0 {
		t.Errorf("%d PLIs while the keyframe was fresh", n)
	}
	waitFor(t, "a PLI for a stale keyframe", 10*time.Second, func() bool { return pub.PLIs.Load() > 0 })
	asked := time.Since(first)
	waitFor(t, "the requested keyframe", 5*time.Second, func() bool {
		return h.st.Stats().LastKeyframeAt.After(first) && pub.KeyframesSent.Load() >= 2
	})
	t.Logf("first PLI %v after the first keyframe (want > %v and about %v + up to %v); publisher sent %d keyframes",
		asked.Round(time.Millisecond), rareKeyframeAge, rareKeyframeAge, rareKeyframeCheck, pub.KeyframesSent.Load())
	if asked < rareKeyframeAge {
		t.Errorf("PLI %v after a keyframe, before %v", asked, rareKeyframeAge)
	}
}
