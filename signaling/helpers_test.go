package signaling

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
)

// ---------------------------------------------------------------------------
// Media fixture: a real H.264 + Opus clip made by ffmpeg, played into a
// media.Stream in real time, looped.

const (
	clipFPS     = 30
	clipGOP     = 60 // frames: a 2 s GOP, so a late joiner lands mid-GOP
	clipSeconds = 4
)

type clip struct {
	aus   [][][]byte // access units (NALUs without start codes)
	sps   []byte
	pps   []byte
	opus  [][]byte // 20 ms Opus packets
	isIDR []bool
}

func makeClip(t *testing.T, size, bitrate string) *clip {
	t.Helper()
	c := testpeer.MakeClip(t, testpeer.ClipOptions{Size: size, Bitrate: bitrate, FPS: clipFPS, GOP: clipGOP, Seconds: clipSeconds})
	return &clip{aus: c.AUs, sps: c.SPS, pps: c.PPS, opus: c.Opus, isIDR: c.IsIDR}
}

// feeder plays a clip into a stream in real time, looping, until stopped.
type feeder struct {
	st     *media.Stream
	cancel context.CancelFunc
	done   chan struct{}
	// onIDR, when set before start, is called after each IDR is written.
	onIDR func()
}

func startFeeder(c *clip, st *media.Stream, onIDR func()) *feeder {
	ctx, cancel := context.WithCancel(context.Background())
	f := &feeder{st: st, cancel: cancel, done: make(chan struct{}), onIDR: onIDR}
	st.SetTracks(media.Tracks{
		Video: &media.VideoParams{SPS: c.sps, PPS: c.pps},
		Audio: &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2},
	})
	go f.run(ctx, c)
	return f
}

func (f *feeder) run(ctx context.Context, c *clip) {
	defer close(f.done)
	const frameDur = time.Second / clipFPS
	const audioDur = 20 * time.Millisecond
	clipDur := time.Duration(len(c.aus)) * frameDur
	start := time.Now()
	vi, ai := 0, 0 // absolute indexes across loops
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		vpts := time.Duration(vi/len(c.aus))*clipDur + time.Duration(vi%len(c.aus))*frameDur
		apts := time.Duration(ai) * audioDur
		next := min(vpts, apts)
		if d := time.Until(start.Add(next)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		if vpts <= apts {
			k := vi % len(c.aus)
			f.st.WriteH264(vpts, c.aus[k])
			if c.isIDR[k] && f.onIDR != nil {
				f.onIDR()
			}
			vi++
		} else {
			f.st.WriteAudio(apts, c.opus[ai%len(c.opus)])
			ai++
		}
	}
}

func (f *feeder) stop() {
	f.cancel()
	<-f.done
}

// ---------------------------------------------------------------------------
// Server harness.

type harness struct {
	t         *testing.T
	closeOnce sync.Once
	m         *Manager
	st        *media.Stream
	feed      *feeder
	srv       *httptest.Server
	client    *http.Client
	// baseURL overrides srv.URL (a client-only harness in another process).
	baseURL string
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newHarness starts a manager on a loopback UDP socket with its handler on
// an httptest server. With c nil the stream never gets tracks.
func newHarness(t *testing.T, c *clip, cfg Config, onIDR func()) *harness {
	t.Helper()
	return newHarnessRoles(t, c, cfg, onIDR, true, false)
}

// newHarnessRoles is newHarness with the default path's policy: read
// (viewers accepted) and publish (one publisher accepted).
func newHarnessRoles(t *testing.T, c *clip, cfg Config, onIDR func(), read, publish bool) *harness {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "test"}, nil)
	cfg.UDPConn = conn
	cfg.LoopbackOnly = true
	m, err := NewManager(cfg, OneStream(st, read, publish), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, m: m, st: st, srv: httptest.NewServer(m.Handler()),
		client: &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}}
	if c != nil {
		h.feed = startFeeder(c, st, onIDR)
	}
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	h.closeOnce.Do(func() {
		h.m.Close("shutdown")
		h.srv.Close()
		h.client.CloseIdleConnections()
		if h.feed != nil {
			h.feed.stop()
		}
		h.st.Close()
	})
}

func (h *harness) do(method, path, ctype string, body string, hdr ...string) (*http.Response, string) {
	h.t.Helper()
	base := h.baseURL
	if base == "" {
		base = h.srv.URL
	}
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// ---------------------------------------------------------------------------
// A pion viewer: recvonly video+audio, reassembles H.264 frames.

type frame struct {
	at        time.Time
	ts        uint32
	nalTypes  []byte
	idr, sps  bool
	pps       bool
	truncated bool // a packet of the frame was missing
}

type testViewer struct {
	pc        *webrtc.PeerConnection
	location  string
	etag      string
	connected chan struct{}
	ended     chan struct{} // peer connection closed, failed or disconnected
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu         sync.Mutex
	frames     []frame
	maxPayload int
	audioPkts  int
	posted     time.Time
	firstFrame chan struct{}
	frameOnce  sync.Once
	gotFrames  atomic.Int64
}

func loopbackSettings() webrtc.SettingEngine { return testpeer.LoopbackSettings() }

func newClientPC(t *testing.T) *webrtc.PeerConnection {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg),
		webrtc.WithSettingEngine(loopbackSettings()))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// newOfferPC returns a client peer connection with recvonly transceivers and
// its complete offer (candidates included).
func newOfferPC(t *testing.T, kinds ...webrtc.RTPCodecType) (*webrtc.PeerConnection, string) {
	t.Helper()
	pc := newClientPC(t)
	offer, err := testpeer.RecvOffer(pc, kinds...)
	if err != nil {
		t.Fatal(err)
	}
	return pc, offer
}

// postWHEP sends pc's recvonly offer to POST /whep and applies the answer.
func (h *harness) postWHEP(t *testing.T, pc *webrtc.PeerConnection) {
	t.Helper()
	offer, err := testpeer.RecvOffer(pc)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := h.do(http.MethodPost, "/whep", "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /whep: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		t.Fatal(err)
	}
}

// startViewer connects a viewer through POST /whep and starts reading media.
func startViewer(t *testing.T, h *harness) *testViewer {
	t.Helper()
	v, err := tryViewer(t, h)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func tryViewer(t *testing.T, h *harness, kinds ...webrtc.RTPCodecType) (*testViewer, error) {
	t.Helper()
	pc := newClientPC(t)
	v := &testViewer{pc: pc, connected: make(chan struct{}), ended: make(chan struct{}), firstFrame: make(chan struct{})}
	var connOnce, endOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			connOnce.Do(func() { close(v.connected) })
		case webrtc.PeerConnectionStateClosed, webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateDisconnected:
			endOnce.Do(func() { close(v.ended) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.wg.Add(1)
		go v.read(tr)
	})
	offer, err := testpeer.RecvOffer(pc, kinds...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.close)
	v.posted = time.Now()
	resp, body := h.do(http.MethodPost, "/whep", "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		return v, fmt.Errorf("POST /whep: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("answer Content-Type %q", ct)
	}
	v.location, v.etag = resp.Header.Get("Location"), resp.Header.Get("ETag")
	if !strings.HasPrefix(v.location, "/whep/") || v.etag == "" {
		t.Errorf("Location %q ETag %q", v.location, v.etag)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		t.Fatalf("set answer: %v\n%s", err, body)
	}
	return v, nil
}

func (v *testViewer) close() {
	v.closeOnce.Do(func() {
		_ = v.pc.GracefulClose()
		v.wg.Wait()
	})
}

func (v *testViewer) read(tr *webrtc.TrackRemote) {
	defer v.wg.Done()
	if tr.Kind() == webrtc.RTPCodecTypeAudio {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			v.mu.Lock()
			v.audioPkts++
			v.mu.Unlock()
		}
	}
	var depack codecs.H264Packet
	var annexb []byte
	var curTS uint32
	var lastSeq uint16
	started, truncated := false, false
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		v.mu.Lock()
		v.maxPayload = max(v.maxPayload, len(p.Payload))
		v.mu.Unlock()
		if started && p.SequenceNumber != lastSeq+1 {
			truncated = true
		}
		if started && p.Timestamp != curTS && annexb != nil {
			annexb = nil // the previous frame lost its last packet
		}
		started, curTS, lastSeq = true, p.Timestamp, p.SequenceNumber
		out, err := depack.Unmarshal(p.Payload)
		if err == nil {
			annexb = append(annexb, out...)
		}
		if !p.Marker {
			continue
		}
		f := frame{at: time.Now(), ts: p.Timestamp, truncated: truncated}
		for _, n := range testpeer.SplitAnnexB(annexb) {
			typ := n[0] & 0x1f
			f.nalTypes = append(f.nalTypes, typ)
			f.idr = f.idr || typ == 5
			f.sps = f.sps || typ == 7
			f.pps = f.pps || typ == 8
		}
		annexb, truncated = nil, false
		v.mu.Lock()
		v.frames = append(v.frames, f)
		v.mu.Unlock()
		v.gotFrames.Add(1)
		v.frameOnce.Do(func() { close(v.firstFrame) })
	}
}

func (v *testViewer) snapshot() (frames []frame, maxPayload, audio int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]frame(nil), v.frames...), v.maxPayload, v.audioPkts
}

// waitFrames waits until the viewer reassembled n video frames.
func (v *testViewer) waitFrames(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for v.gotFrames.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("viewer got %d/%d frames in %v", v.gotFrames.Load(), n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitChan(t *testing.T, what string, ch <-chan struct{}, timeout time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// checkGoroutines: see testenv.WaitGoroutines.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	testenv.WaitGoroutines(t, base, 15*time.Second)
}
