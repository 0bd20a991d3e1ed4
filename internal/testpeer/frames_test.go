package testpeer

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/icey/icey-server/internal/testenv"
)

const selfTestFPS = 25

// senderClips are elementary streams per mime type, split into frames.
type senderClips map[string][][]byte

var (
	clipsOnce sync.Once
	clips     senderClips
)

func loadSenderClips(t *testing.T) senderClips {
	t.Helper()
	clipsOnce.Do(func() {
		dir := t.TempDir()
		c := senderClips{}
		for _, tc := range []struct{ video, container, mime string }{
			{MediaH264Baseline, "h264", webrtc.MimeTypeH264},
			{MediaH265, "hevc", webrtc.MimeTypeH265},
			{MediaVP8, "ivf", webrtc.MimeTypeVP8},
		} {
			path := MakeMedia(t, dir, MediaOptions{Video: tc.video, Container: tc.container, FPS: selfTestFPS, Seconds: 2})
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.mime {
			case webrtc.MimeTypeH264:
				c[tc.mime] = splitAUs(raw, func(n []byte) bool { return n[0]&0x1f == 9 })
			case webrtc.MimeTypeH265:
				c[tc.mime] = splitAUs(raw, func(n []byte) bool { return (n[0]>>1)&0x3f == 35 })
			case webrtc.MimeTypeVP8:
				r, _, err := ivfreader.NewWith(bytes.NewReader(raw))
				if err != nil {
					t.Fatal(err)
				}
				for {
					f, _, err := r.ParseNextFrame()
					if err != nil {
						break
					}
					c[tc.mime] = append(c[tc.mime], f)
				}
			}
			if n := len(c[tc.mime]); n != 2*selfTestFPS {
				t.Fatalf("%s clip: %d frames, want %d", tc.mime, n, 2*selfTestFPS)
			}
		}
		clips = c
	})
	if clips == nil {
		t.Fatal("sender clips unavailable")
	}
	return clips
}

// splitAUs groups an Annex-B stream into access units, each starting at a
// delimiter NAL unit.
func splitAUs(raw []byte, isAUD func([]byte) bool) [][]byte {
	var out [][]byte
	var cur []byte
	for _, n := range SplitAnnexB(raw) {
		if isAUD(n) && cur != nil {
			out = append(out, cur)
			cur = nil
		}
		cur = append(append(cur, 0, 0, 0, 1), n...)
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}

var rtpmapRe = regexp.MustCompile(`(?m)^a=rtpmap:\d+ ([A-Za-z0-9]+)/90000`)

// whepSender is a minimal WHEP server on loopback: per offer, a pion peer
// sending the clip of the first video codec of the offer it has.
type whepSender struct {
	t     *testing.T
	clips senderClips
	mu    sync.Mutex
	pcs   []*webrtc.PeerConnection
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startWHEPSender(t *testing.T) string {
	s := &whepSender{t: t, clips: loadSenderClips(t), stop: make(chan struct{})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: s}}
	srv.Start()
	t.Cleanup(func() {
		close(s.stop)
		s.wg.Wait()
		s.mu.Lock()
		for _, pc := range s.pcs {
			_ = pc.Close()
		}
		s.mu.Unlock()
		srv.Close()
	})
	return srv.URL + "/whep"
}

func (s *whepSender) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		w.WriteHeader(http.StatusOK)
		return
	}
	offer, _ := io.ReadAll(r.Body)
	var mime string
	for _, m := range rtpmapRe.FindAllStringSubmatch(string(offer), -1) {
		if _, ok := s.clips["video/"+m[1]]; ok {
			mime = "video/" + m[1]
			break
		}
	}
	if mime == "" {
		http.Error(w, "no common video codec", http.StatusNotAcceptable)
		return
	}
	answer, err := s.serve(string(offer), mime)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/1")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

func (s *whepSender) serve(offer, mime string) (string, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return "", err
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(LoopbackSettings()), webrtc.WithMediaEngine(me))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.pcs = append(s.pcs, pc)
	s.mu.Unlock()
	capab := webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000}
	if mime == webrtc.MimeTypeH264 {
		capab.SDPFmtpLine = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
	}
	track, err := webrtc.NewTrackLocalStaticSample(capab, "video", "self-test")
	if err != nil {
		return "", err
	}
	if _, err := pc.AddTrack(track); err != nil {
		return "", err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", err
	}
	<-gathered
	frames := s.clips[mime]
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(time.Second / selfTestFPS)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			_ = track.WriteSample(media.Sample{Data: frames[i%len(frames)], Duration: time.Second / selfTestFPS})
		}
	}()
	return pc.LocalDescription().SDP, nil
}

func TestDecodedFPSPerCodec(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.RequireTool(t, "ffprobe")
	url := startWHEPSender(t)
	for _, tc := range []struct {
		name   string
		offer  []string
		want   string
		absent []string // codecs the offer must not carry
	}{
		{"h264", []string{CodecH264, CodecVP8}, webrtc.MimeTypeH264, []string{"H265"}},
		{"h265", []string{CodecH265, CodecH264}, webrtc.MimeTypeH265, []string{"VP8"}},
		{"vp8-only", []string{CodecVP8}, webrtc.MimeTypeVP8, []string{"H264", "H265"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			v, err := Connect(ctx, url, Options{VideoCodecs: tc.offer, VideoOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			offer := v.pc.LocalDescription().SDP
			for _, c := range tc.absent {
				if strings.Contains(offer, " "+c+"/90000") {
					t.Errorf("offer carries %s:\n%s", c, offer)
				}
			}
			fps, n, err := v.DecodedFPS(ctx, 1500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.VideoCodec(); !strings.EqualFold(got, tc.want) {
				t.Errorf("negotiated %q, want %q", got, tc.want)
			}
			if math.Abs(fps-selfTestFPS) > selfTestFPS*0.1 {
				t.Errorf("decoded %.2f fps (%d frames), want %d ±10%%", fps, n, selfTestFPS)
			}
			if w, h := v.DecodedSize(); w != 320 || h != 240 {
				t.Errorf("decoded size %dx%d, want 320x240", w, h)
			}
			if v.Frames() < uint64(n) || v.KeyframesReceived() < 1 {
				t.Errorf("Frames %d, keyframes %d after decoding %d", v.Frames(), v.KeyframesReceived(), n)
			}
			t.Logf("%s: %.2f fps, %d frames decoded", v.VideoCodec(), fps, n)
		})
	}
}

func TestUnknownVideoCodec(t *testing.T) {
	_, err := Connect(context.Background(), "http://127.0.0.1:1/whep", Options{VideoCodecs: []string{"AV2"}})
	if err == nil || !strings.Contains(err.Error(), "unknown video codec") {
		t.Fatalf("err = %v", err)
	}
}

func TestFrameAssemblerDropsGaps(t *testing.T) {
	a := newFrameAssembler(webrtc.MimeTypeVP8)
	// VP8 payload descriptor: S bit set, PID 0 on the first packet.
	pkt := func(seq uint16, ts uint32, start, marker bool) *rtp.Packet {
		d := byte(0)
		if start {
			d = 0x10
		}
		return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: marker}, Payload: []byte{d, 1, 2, 3}}
	}
	var got int
	for _, p := range []*rtp.Packet{
		pkt(1, 100, true, false), pkt(2, 100, false, true), // whole
		pkt(3, 200, true, false), pkt(5, 200, false, true), // gap: dropped
		pkt(6, 300, true, true),  // whole
		pkt(8, 400, false, true), // no start: dropped
	} {
		if _, _, ok := a.push(p); ok {
			got++
		}
	}
	if got != 2 {
		t.Fatalf("%d frames, want 2", got)
	}
}
