package main

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/icey/icey-server/internal/testpeer"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
)

// accessUnit is one encoded picture: its NAL units (no start codes).
type accessUnit struct {
	nals [][]byte
	idr  bool
}

// annexB returns the access unit with 4-byte start codes, as
// TrackLocalStaticSample expects.
func (au accessUnit) annexB() []byte {
	var b []byte
	for _, n := range au.nals {
		b = append(b, 0, 0, 0, 1)
		b = append(b, n...)
	}
	return b
}

// encodeClip encodes a baseline H.264 test pattern with ffmpeg and splits
// it into access units (one slice per picture, as x264 writes it here).
func encodeClip(t *testing.T, d time.Duration, fps, gop int) []accessUnit {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "clip.h264")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=640x360:rate=%d", fps),
		"-t", fmt.Sprintf("%.3f", d.Seconds()),
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-pix_fmt", "yuv420p",
		"-g", fmt.Sprint(gop), "-keyint_min", fmt.Sprint(gop), "-sc_threshold", "0", "-bf", "0",
		"-x264-params", "sliced-threads=0:slices=1", "-b:v", "1M", "-f", "h264", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := h264reader.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var aus []accessUnit
	var cur accessUnit
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		cur.nals = append(cur.nals, bytes.Clone(nal.Data))
		switch nal.UnitType {
		case h264reader.NalUnitTypeCodedSliceIdr:
			cur.idr = true
			fallthrough
		case h264reader.NalUnitTypeCodedSliceNonIdr:
			aus = append(aus, cur)
			cur = accessUnit{}
		}
	}
	if len(aus) == 0 {
		t.Fatal("ffmpeg produced no access units")
	}
	return aus
}

func loopbackAPI(t *testing.T) *webrtc.API {
	t.Helper()
	se := testpeer.LoopbackSettings()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me))
}

// whepServer is a minimal WHEP server for the tests: one shared H.264
// track (and an Opus track) fed with an ffmpeg clip in a loop, a viewer
// cap answered with 503, and DELETE on the resource URL.
type whepServer struct {
	t        *testing.T
	api      *webrtc.API
	video    *webrtc.TrackLocalStaticSample
	audio    *webrtc.TrackLocalStaticSample
	capacity int
	token    string
	srv      *http.Server
	ln       net.Listener
	url      string
	stop     chan struct{}
	wg       sync.WaitGroup

	mu       sync.Mutex
	pcs      map[string]*webrtc.PeerConnection
	next     int
	deletes  int
	mlines   []int // m= lines per accepted offer
	rejected int
}

func startWHEPServer(t *testing.T, aus []accessUnit, fps, capacity int, token string) *whepServer {
	t.Helper()
	video, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264}, "video", "bench")
	if err != nil {
		t.Fatal(err)
	}
	audio, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "bench")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &whepServer{
		t: t, api: loopbackAPI(t), video: video, audio: audio, capacity: capacity, token: token,
		ln: ln, url: "http://" + ln.Addr().String() + "/whep", stop: make(chan struct{}),
		pcs: map[string]*webrtc.PeerConnection{},
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	s.wg.Go(func() { _ = s.srv.Serve(ln) })
	s.wg.Go(func() { s.feed(aus, fps) })
	return s
}

// feed loops the clip in real time; every viewer shares the same tracks.
func (s *whepServer) feed(aus []accessUnit, fps int) {
	frame := time.Second / time.Duration(fps)
	tk := time.NewTicker(frame)
	defer tk.Stop()
	silence := []byte{0xf8, 0xff, 0xfe} // an Opus DTX/silence frame
	for i := 0; ; i++ {
		select {
		case <-s.stop:
			return
		case <-tk.C:
		}
		_ = s.video.WriteSample(media.Sample{Data: aus[i%len(aus)].annexB(), Duration: frame})
		for range frame / (20 * time.Millisecond) {
			_ = s.audio.WriteSample(media.Sample{Data: silence, Duration: 20 * time.Millisecond})
		}
	}
}

func (s *whepServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/whep":
		s.post(w, r)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/whep/"):
		id := strings.TrimPrefix(r.URL.Path, "/whep/")
		s.mu.Lock()
		pc := s.pcs[id]
		delete(s.pcs, id)
		if pc != nil {
			s.deletes++
		}
		s.mu.Unlock()
		if pc == nil {
			http.NotFound(w, r)
			return
		}
		_ = pc.Close()
		w.WriteHeader(http.StatusOK)
	default:
		http.Error(w, "no", http.StatusMethodNotAllowed)
	}
}

func (s *whepServer) post(w http.ResponseWriter, r *http.Request) {
	offer, err := io.ReadAll(r.Body)
	if err != nil || r.Header.Get("Content-Type") != "application/sdp" {
		http.Error(w, "bad offer", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	if len(s.pcs) >= s.capacity {
		s.rejected++
		s.mu.Unlock()
		http.Error(w, "full", http.StatusServiceUnavailable)
		return
	}
	s.next++
	id := fmt.Sprint(s.next)
	s.mu.Unlock()

	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fail := func(err error) {
		_ = pc.Close()
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		fail(err)
		return
	}
	mlines := strings.Count(string(offer), "\nm=")
	for _, tr := range []*webrtc.TrackLocalStaticSample{s.video, s.audio} {
		if tr == s.audio && mlines < 2 {
			break
		}
		if _, err := pc.AddTrack(tr); err != nil {
			fail(err)
			return
		}
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		fail(err)
		return
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		fail(err)
		return
	}
	<-gathered
	s.mu.Lock()
	s.pcs[id] = pc
	s.mlines = append(s.mlines, mlines)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+id)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, pc.LocalDescription().SDP)
}

func (s *whepServer) close() {
	close(s.stop)
	_ = s.srv.Close()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, pc := range s.pcs {
		_ = pc.Close()
		delete(s.pcs, id)
	}
}
