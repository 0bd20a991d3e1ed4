package rtspserve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/signaling"
)

var (
	clipOnce sync.Once
	theClip  *testpeer.Clip
)

func clip(t *testing.T) *testpeer.Clip {
	clipOnce.Do(func() { theClip = testpeer.MakeClip(t, testpeer.ClipOptions{GOP: 30}) })
	if theClip == nil {
		t.Fatal("no clip")
	}
	return theClip
}

// countingRouter wraps OneStream and counts views and releases.
type countingRouter struct {
	signaling.Router
	views, releases atomic.Int64
}

func (r *countingRouter) View(ctx context.Context, path string) (*media.Stream, func(), error) {
	st, rel, err := r.Router.View(ctx, path)
	if err != nil {
		return nil, nil, err
	}
	r.views.Add(1)
	var once sync.Once
	return st, func() { once.Do(func() { r.releases.Add(1); rel() }) }, nil
}

type fixture struct {
	st     *media.Stream
	router *countingRouter
	srv    *Server
	url    string
}

// setup feeds a stream from the clip in real time (looping) and serves it.
func setup(t *testing.T, token string) *fixture {
	t.Helper()
	c := clip(t)
	log := slog.New(slog.DiscardHandler)
	st := media.NewStream(media.StreamConfig{Name: "main"}, log)
	st.SetTracks(media.Tracks{Video: &media.VideoParams{SPS: c.SPS, PPS: c.PPS},
		Audio: &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}})
	ctx, cancel := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		frame := time.Second / time.Duration(c.FPS)
		start := time.Now()
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		vi, ai := 0, 0 // absolute counters
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			now := time.Since(start)
			for {
				vpts := time.Duration(vi) * frame
				apts := time.Duration(ai) * 20 * time.Millisecond
				if vpts > now && apts > now {
					break
				}
				if vpts <= apts {
					st.WriteH264(vpts, c.AUs[vi%len(c.AUs)])
					vi++
				} else {
					st.WriteAudio(apts, c.Opus[ai%len(c.Opus)])
					ai++
				}
			}
		}
	}()
	router := &countingRouter{Router: signaling.OneStream(st, true, false)}
	srv, err := New(Config{Addr: "127.0.0.1:0", Router: router, Token: token, DescribeTimeout: 3 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-fed
		st.Close()
	})
	return &fixture{st: st, router: router, srv: srv, url: "rtsp://" + srv.Addr() + "/main"}
}

type reader struct {
	c          *gortsplib.Client
	mu         sync.Mutex
	aus, opus  int
	idrWithSPS int
	idrNoSPS   int
	decodeErrs int
}

// play reads rawURL over TCP until closed.
func play(t *testing.T, rawURL string) (*reader, error) {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	r := &reader{c: &gortsplib.Client{Transport: &tcp}}
	if err := r.c.Start(u.Scheme, u.Host); err != nil {
		return nil, err
	}
	desc, _, err := r.c.Describe(u)
	if err != nil {
		r.c.Close()
		return nil, err
	}
	var h264 *format.H264
	vm := desc.FindFormat(&h264)
	var opus *format.Opus
	am := desc.FindFormat(&opus)
	if vm == nil || am == nil {
		r.c.Close()
		return nil, fmt.Errorf("description lacks h264 or opus: %v", desc.Medias)
	}
	if h264.SPS == nil || h264.PPS == nil {
		t.Errorf("no sprop-parameter-sets in the SDP")
	}
	dec, err := h264.CreateDecoder()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.c.SetupAll(desc.BaseURL, []*description.Media{vm, am}); err != nil {
		r.c.Close()
		return nil, err
	}
	started := false
	r.c.OnPacketRTP(vm, h264, func(p *rtp.Packet) {
		au, err := dec.Decode(p)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && started {
				r.decodeErrs++
			}
			return
		}
		idr, sps, pps := false, false, false
		for _, n := range au {
			switch n[0] & 0x1f {
			case 5:
				idr = true
			case 7:
				sps = true
			case 8:
				pps = true
			}
		}
		if idr {
			started = true
			if sps && pps {
				r.idrWithSPS++
			} else {
				r.idrNoSPS++
			}
		}
		if started {
			r.aus++
		}
	})
	r.c.OnPacketRTP(am, opus, func(p *rtp.Packet) {
		r.mu.Lock()
		if len(p.Payload) > 0 {
			r.opus++
		}
		r.mu.Unlock()
	})
	if _, err := r.c.Play(nil); err != nil {
		r.c.Close()
		return nil, err
	}
	return r, nil
}

func (r *reader) counts() (aus, opus, idr, idrNoSPS, errs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.aus, r.opus, r.idrWithSPS, r.idrNoSPS, r.decodeErrs
}

func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func statusCode(err error) base.StatusCode {
	var e liberrors.ErrClientBadStatusCode
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestPlayTCP(t *testing.T) {
	leaktest.Check(t)
	f := setup(t, "")
	r, err := play(t, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.c.Close()
	waitFor(t, 8*time.Second, "45 AUs and 50 Opus packets", func() bool {
		aus, opus, _, _, _ := r.counts()
		return aus >= 45 && opus >= 50
	})
	aus, opus, idr, noSPS, errs := r.counts()
	t.Logf("aus %d opus %d idr %d idr-without-sps %d decode errors %d", aus, opus, idr, noSPS, errs)
	if idr < 1 || noSPS != 0 || errs != 0 {
		t.Fatalf("idr with sps %d, without %d, decode errors %d", idr, noSPS, errs)
	}
	if s := f.srv.Stats(); s.Readers != 1 || s.ReadersByPath["main"] != 1 || s.SessionsTotal != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestFFprobe(t *testing.T) {
	leaktest.Check(t)
	f := setup(t, "")
	bin := testenv.RequireTool(t, "ffprobe")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-v", "error", "-rtsp_transport", "tcp", "-of", "json",
		"-show_streams", f.url).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v %s", err, out)
	}
	var res struct {
		Streams []struct {
			CodecType string `json:"codec_type"`
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range res.Streams {
		got[s.CodecType] = s.CodecName
	}
	if got["video"] != "h264" || got["audio"] != "opus" {
		t.Fatalf("ffprobe streams %s", out)
	}
	waitFor(t, 5*time.Second, "path closed after ffprobe", func() bool {
		return f.router.releases.Load() == f.router.views.Load() && f.st.Stats().Subscribers == 0
	})
}

func TestAuth(t *testing.T) {
	leaktest.Check(t)
	f := setup(t, "s3cret")
	base := "rtsp://" + f.srv.Addr() + "/main"
	if _, err := play(t, base); statusCode(err) != base2(401) {
		t.Fatalf("no credentials: %v", err)
	}
	if _, err := play(t, "rtsp://viewer:wrong@"+f.srv.Addr()+"/main"); statusCode(err) != base2(401) {
		t.Fatalf("wrong password: %v", err)
	}
	r, err := play(t, "rtsp://anyone:s3cret@"+f.srv.Addr()+"/main")
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	defer r.c.Close()
	waitFor(t, 8*time.Second, "media with the right password", func() bool {
		aus, opus, _, _, _ := r.counts()
		return aus > 5 && opus > 5
	})
	if s := f.srv.Stats(); s.AuthFailures < 1 {
		t.Errorf("auth failures %d", s.AuthFailures)
	}
}

func base2(c int) base.StatusCode { return base.StatusCode(c) }

func TestNotFound(t *testing.T) {
	leaktest.Check(t)
	f := setup(t, "")
	if _, err := play(t, "rtsp://"+f.srv.Addr()+"/nope"); statusCode(err) != base.StatusNotFound {
		t.Fatalf("unknown path: %v", err)
	}
}

func TestSharedSubscriberAndRelease(t *testing.T) {
	leaktest.Check(t)
	f := setup(t, "")
	r1, err := play(t, f.url)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := play(t, f.url)
	if err != nil {
		r1.c.Close()
		t.Fatal(err)
	}
	waitFor(t, 8*time.Second, "both readers get media", func() bool {
		a1, _, _, _, _ := r1.counts()
		a2, _, _, _, _ := r2.counts()
		return a1 > 5 && a2 > 5
	})
	if n := f.st.Stats().Subscribers; n != 1 {
		t.Errorf("hub subscribers %d, want 1", n)
	}
	if s := f.srv.Stats(); s.ReadersByPath["main"] != 2 {
		t.Errorf("stats %+v", s)
	}
	if v := f.router.views.Load(); v != 1 {
		t.Errorf("Router.View called %d times, want 1", v)
	}
	r1.c.Close()
	time.Sleep(300 * time.Millisecond)
	if n := f.st.Stats().Subscribers; n != 1 || f.router.releases.Load() != 0 {
		t.Errorf("after one reader left: subscribers %d releases %d", n, f.router.releases.Load())
	}
	r2.c.Close()
	waitFor(t, 5*time.Second, "subscriber closed and release called", func() bool {
		return f.st.Stats().Subscribers == 0 && f.router.releases.Load() == 1
	})
	if s := f.srv.Stats(); s.Readers != 0 || s.SessionsTotal != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestBindErrorAndCloseIdempotent(t *testing.T) {
	leaktest.Check(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := media.NewStream(media.StreamConfig{Name: "main"}, nil)
	defer st.Close()
	srv, err := New(Config{Addr: l.Addr().String(), Router: signaling.OneStream(st, true, false)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("bind error %v", err)
	}
	srv.Close()
	srv.Close()
	if _, err := New(Config{Addr: "127.0.0.1:0"}, nil); err == nil {
		t.Error("no Router accepted")
	}
}

// freeUDPPair finds an even RTP port and the next one free on loopback.
func freeUDPPair(t *testing.T) (string, string) {
	for i := 0; i < 100; i++ {
		a, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		if p%2 != 0 || p >= 65534 {
			a.Close()
			continue
		}
		b, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", p+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.1:%d", p+1)
	}
	t.Fatal("no UDP pair")
	return "", ""
}

func TestPlayUDP(t *testing.T) {
	leaktest.Check(t)
	f := setup(t, "")
	f.srv.Close() // replace it with a UDP-enabled one on the same stream
	rtpAddr, rtcpAddr := freeUDPPair(t)
	srv, err := New(Config{Addr: "127.0.0.1:0", UDP: true, UDPRTPAddress: rtpAddr, UDPRTCPAddress: rtcpAddr,
		Router: f.router}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	u, _ := base.ParseURL("rtsp://" + srv.Addr() + "/main")
	udp := gortsplib.TransportUDP
	c := &gortsplib.Client{Transport: &udp}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) { n.Add(1) })
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "RTP over UDP", func() bool { return n.Load() > 50 })
}

// A track change closes the path's ServerStream: readers are disconnected
// (they reconnect and DESCRIBE the new tracks) and the path is released.
func TestTrackChangeClosesReaders(t *testing.T) {
	leaktest.Check(t)
	f := setup(t, "")
	r, err := play(t, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.c.Close()
	waitFor(t, 8*time.Second, "media", func() bool { aus, _, _, _, _ := r.counts(); return aus > 3 })
	c := clip(t)
	f.st.SetTracks(media.Tracks{Video: &media.VideoParams{SPS: c.SPS, PPS: c.PPS},
		Audio: &media.AudioParams{Codec: media.CodecPCMU, ClockRate: 8000, Channels: 1}})
	waitFor(t, 5*time.Second, "readers closed and path released", func() bool {
		return f.srv.Stats().Readers == 0 && f.router.releases.Load() == 1 && f.st.Stats().Subscribers == 0
	})
	if err := r.c.Wait(); err == nil {
		t.Error("reader not disconnected")
	}
	// A new reader gets the new description.
	u, _ := base.ParseURL(f.url)
	tcp := gortsplib.TransportTCP
	c2 := &gortsplib.Client{Transport: &tcp}
	if err := c2.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	desc, _, err := c2.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	var g711 *format.G711
	if desc.FindFormat(&g711) == nil || !g711.MULaw {
		t.Fatalf("new description %v", desc.Medias)
	}
}
