package signaling

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/renditions"
)

func TestOfferedVideo(t *testing.T) {
	offer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=recvonly\r\n" +
		"a=rtpmap:96 VP8/90000\r\n" +
		"a=rtpmap:97 H264/90000\r\na=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\n" +
		"a=rtpmap:98 AV1/90000\r\n" +
		"a=rtpmap:99 H265/90000\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
	var d sdp.SessionDescription
	if err := d.UnmarshalString(offer); err != nil {
		t.Fatal(err)
	}
	got := offeredVideo(&d)
	if !got[media.CodecVP8] || !got[media.CodecH265] || got[media.CodecH264] || len(got) != 2 {
		t.Fatalf("offered %v: want VP8 and H265 (H.264 packetization-mode 0 cannot carry FU-A)", got)
	}
}

// codecPC is a client that offers only the given video codecs (and Opus).
func codecPC(t *testing.T, mimes ...string) *webrtc.PeerConnection {
	t.Helper()
	me := &webrtc.MediaEngine{}
	for i, mime := range mimes {
		c := webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000,
			RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}}, PayloadType: webrtc.PayloadType(100 + i)}
		if mime == webrtc.MimeTypeH264 {
			c.SDPFmtpLine = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
		}
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			t.Fatal(err)
		}
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus,
		ClockRate: 48000, Channels: 2}, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(loopbackSettings()))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.GracefulClose() })
	return pc
}

// A viewer that offers only VP8 for an H.264 path: without renditions it
// is refused with 406 and a reason naming both sides, never answered with
// a session that plays nothing.
func TestWHEPNoCommonCodecIs406(t *testing.T) {
	h := newHarness(t, makeClip(t, "320x240", "500k"), Config{}, nil)
	waitFor(t, "tracks", 5*time.Second, func() bool { return h.st.Tracks().Video != nil })
	pc := codecPC(t, webrtc.MimeTypeVP8)
	offer, err := testpeer.RecvOffer(pc)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := h.do(http.MethodPost, "/whep", "application/sdp", offer)
	if resp.StatusCode != http.StatusNotAcceptable || !strings.Contains(body, "H.264") || !strings.Contains(body, "transcod") {
		t.Fatalf("POST /whep: %d %q, want 406 naming H.264 and the missing transcode", resp.StatusCode, body)
	}
	if n, _ := h.m.Counts(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

// renditionRouter is OneStream with renditions, as package paths has them.
type renditionRouter struct {
	Router
	set *renditions.Set
}

func (r renditionRouter) Rendition(ctx context.Context, _ string, _ *media.Stream, codec string) (*media.Stream, func(), error) {
	return r.set.Acquire(ctx, codec)
}

// A VP8-only viewer of an H.264 path gets the VP8 rendition: VP8 frames at
// the source's rate and the source's Opus audio; an H.264 viewer of the same
// path gets the source itself, and the answer lists only the codec sent.
func TestWHEPViewerGetsRendition(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	c := makeClip(t, "320x240", "500k")
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "test"}, nil)
	feed := startFeeder(c, st, nil)
	defer func() { feed.stop(); st.Close() }()
	set := renditions.New("main", st, renditions.Config{}, nil)
	defer set.Close()
	m, err := NewManager(Config{UDPConn: conn, LoopbackOnly: true}, renditionRouter{OneStream(st, true, false), set}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	defer m.Close("shutdown")
	waitFor(t, "tracks", 5*time.Second, func() bool { return st.Tracks().Video != nil })

	for _, tc := range []struct {
		mime      string
		rendition bool
	}{{webrtc.MimeTypeVP8, true}, {webrtc.MimeTypeH264, false}} {
		pc := codecPC(t, tc.mime)
		var frames, audio atomic.Int64
		var tsMu sync.Mutex
		var stamps []uint32 // RTP timestamps of the frames (marker packets)
		var gotMime atomic.Value
		var wg sync.WaitGroup
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if tr.Kind() == webrtc.RTPCodecTypeVideo {
					gotMime.Store(tr.Codec().MimeType)
				}
				for {
					p, _, err := tr.ReadRTP()
					if err != nil {
						return
					}
					if tr.Kind() == webrtc.RTPCodecTypeAudio {
						audio.Add(1)
					} else if p.Marker {
						frames.Add(1)
						tsMu.Lock()
						stamps = append(stamps, p.Timestamp)
						tsMu.Unlock()
					}
				}
			}()
		})
		offer, err := testpeer.RecvOffer(pc)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(srv.URL+"/whep", "application/sdp", strings.NewReader(offer))
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = ioCopy(&b, resp)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s: POST /whep %d %s", tc.mime, resp.StatusCode, b.String())
		}
		answer := b.String()
		if strings.Contains(answer, "H264") == (tc.mime == webrtc.MimeTypeVP8) || strings.Contains(answer, "H265") {
			t.Fatalf("%s: answer lists other codecs:\n%s", tc.mime, answer)
		}
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tc.mime+" frames", 10*time.Second, func() bool { return frames.Load() > 5 })
		time.Sleep(time.Second) // past the cached GOP, sent faster than real time
		tsMu.Lock()
		f0 := len(stamps)
		tsMu.Unlock()
		time.Sleep(2 * time.Second)
		// Frames per second of media (RTP time), so that a loaded machine
		// delivering late does not read as frames missing.
		tsMu.Lock()
		win := stamps[f0:]
		fps := float64(len(win)-1) / (float64(win[len(win)-1]-win[0]) / 90000)
		tsMu.Unlock()
		t.Logf("%s viewer: %.1f frames/s, %d audio packets, codec %v", tc.mime, fps, audio.Load(), gotMime.Load())
		if fps < clipFPS*0.9 || fps > clipFPS*1.1 || audio.Load() < 50 || !strings.EqualFold(gotMime.Load().(string), tc.mime) {
			t.Fatalf("%s viewer: %.1f fps, %d audio packets, codec %v", tc.mime, fps, audio.Load(), gotMime.Load())
		}
		if got := len(set.Stats()); got != map[bool]int{true: 1, false: 1}[tc.rendition] {
			t.Fatalf("%d renditions running", got)
		}
		_ = pc.GracefulClose()
		wg.Wait()
	}
}

func ioCopy(b *strings.Builder, resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		n += int64(k)
		if err != nil {
			return n, nil
		}
	}
}
