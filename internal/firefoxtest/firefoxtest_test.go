package firefoxtest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/icey/icey-server/internal/testenv"
)

// TestFirefoxPlaysWHEP: Firefox, on a host of its own, plays VP8 over WHEP
// from a pion PeerConnection served on the test's end of its link.
func TestFirefoxPlaysWHEP(t *testing.T) {
	testenv.LoopbackOnly(t)
	start := time.Now()

	// A 3 s VP8 clip, 320x240 at 30 fps, a keyframe every second.
	clip := filepath.Join(t.TempDir(), "clip.ivf")
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	if out, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", "3", "-c:v", "libvpx", "-deadline", "realtime", "-g", "30", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	ivf, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}

	b := Start(t, Options{})
	t.Logf("%s started in %v on %s", b.Version, time.Since(start).Round(time.Millisecond), b.Host.Addr)

	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "firefoxtest")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); loopIVF(t, ivf, track, stop) }()
	t.Cleanup(func() { close(stop); wg.Wait() })

	// pion gathers the test's end of the browser's link only.
	gw := net.ParseIP(b.Host.Gateway)
	var se webrtc.SettingEngine
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(gw) })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	var (
		mu  sync.Mutex
		pcs []*webrtc.PeerConnection
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, pc := range pcs {
			_ = pc.Close()
		}
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<!doctype html><html><head><title>firefoxtest</title></head><body></body></html>")
	})
	mux.HandleFunc("/whep", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST an SDP offer", http.StatusMethodNotAllowed)
			return
		}
		offer, _ := io.ReadAll(r.Body)
		answer, err := whepAnswer(api, track, string(offer), func(pc *webrtc.PeerConnection) {
			mu.Lock()
			pcs = append(pcs, pc)
			mu.Unlock()
		})
		if err != nil {
			t.Logf("WHEP: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/sdp")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, answer)
	})
	ln, err := net.Listen("tcp4", net.JoinHostPort(b.Host.Gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()

	if err := b.Navigate(base + "/"); err != nil {
		t.Fatalf("%v\n%s", err, b.Logs())
	}
	if err := b.WHEPPlay("/whep"); err != nil {
		t.Fatalf("%v\n%s", err, b.Logs())
	}
	if err := b.Poll(`document.getElementById('firefoxtest').videoWidth > 0`, 15*time.Second); err != nil {
		st, _ := b.VideoStats()
		t.Fatalf("%v (stats %+v)\n%s", err, st, b.Logs())
	}
	t.Logf("playing %v after start", time.Since(start).Round(time.Millisecond))

	s1, err := b.VideoStats()
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	time.Sleep(2 * time.Second)
	s2, err := b.VideoStats()
	if err != nil {
		t.Fatal(err)
	}
	fps := float64(s2.FramesDecoded-s1.FramesDecoded) / time.Since(t1).Seconds()
	t.Logf("stats %+v then %+v: %.1f frames/s decoded", s1, s2, fps)
	if fps < 20 || fps > 40 {
		t.Errorf("Firefox decoded %.1f frames/s, want about 30", fps)
	}
	if s2.Width != 320 || s2.Height != 240 {
		t.Errorf("video is %dx%d, want 320x240", s2.Width, s2.Height)
	}
	if s2.Codec != "" && s2.Codec != "video/VP8" {
		t.Errorf("codec %q, want video/VP8", s2.Codec)
	}

	closeStart := time.Now()
	b.Close()
	t.Logf("closed in %v; total %v", time.Since(closeStart).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// whepAnswer answers a WHEP offer with a PeerConnection sending track; the
// answer carries every candidate.
func whepAnswer(api *webrtc.API, track webrtc.TrackLocal, offer string, keep func(*webrtc.PeerConnection)) (string, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	keep(pc)
	sender, err := pc.AddTrack(track)
	if err != nil {
		return "", err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
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
	return pc.LocalDescription().SDP, nil
}

// loopIVF writes the clip's frames to track at 30 fps, over and over, until
// stop is closed.
func loopIVF(t *testing.T, ivf []byte, track *webrtc.TrackLocalStaticSample, stop <-chan struct{}) {
	const frame = time.Second / 30
	tick := time.NewTicker(frame)
	defer tick.Stop()
	var r *ivfreader.IVFReader
	for {
		if r == nil {
			var err error
			if r, _, err = ivfreader.NewWith(bytes.NewReader(ivf)); err != nil {
				t.Errorf("ivf: %v", err)
				return
			}
		}
		data, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			r = nil
			continue
		}
		if err != nil {
			t.Errorf("ivf: %v", err)
			return
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if err := track.WriteSample(media.Sample{Data: data, Duration: frame}); err != nil {
			t.Errorf("write sample: %v", err)
			return
		}
	}
}
