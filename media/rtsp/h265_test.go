package rtsp

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/transcode"
)

// h265Camera is an RTSP server (gortsplib) with a password that loops an
// H.265 + AAC clip in real time, parameter sets in the SDP only.
type h265Camera struct {
	srv  *gortsplib.Server
	url  string
	stop context.CancelFunc
	done chan struct{}
}

type h265Event struct {
	t     time.Duration
	video bool
	au    [][]byte
}

func startH265Camera(t *testing.T, user, pass string) *h265Camera {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "h265.ts")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "bframes=0:keyint=25:log-level=error",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-f", "mpegts", "-y", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &mpegts.Reader{R: bufio.NewReader(f)}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	var vps, sps, pps []byte
	var aacCfg *tscodecs.MPEG4Audio
	var events []h265Event
	var td mpegts.TimeDecoder
	dur := func(v int64) time.Duration { return time.Duration(v) * time.Second / 90000 }
	for _, tr := range r.Tracks() {
		switch c := tr.Codec.(type) {
		case *tscodecs.H265:
			r.OnDataH265(tr, func(pts, _ int64, au [][]byte) error {
				var keep [][]byte
				for _, n := range au {
					switch h265.NALUType((n[0] >> 1) & 0b111111) {
					case h265.NALUType_VPS_NUT:
						vps = n
					case h265.NALUType_SPS_NUT:
						sps = n
					case h265.NALUType_PPS_NUT:
						pps = n
					case h265.NALUType_AUD_NUT:
					default:
						keep = append(keep, n) // like a camera: parameter sets out of band
					}
				}
				events = append(events, h265Event{t: dur(td.Decode(pts)), video: true, au: keep})
				return nil
			})
		case *tscodecs.MPEG4Audio:
			aacCfg = c
			r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				p := dur(td.Decode(pts))
				for i, au := range aus {
					events = append(events, h265Event{t: p + time.Duration(i*1024)*time.Second/48000, au: [][]byte{au}})
				}
				return nil
			})
		}
	}
	for r.Read() == nil {
	}
	if vps == nil || sps == nil || pps == nil || aacCfg == nil {
		t.Fatal("clip lacks parameter sets or AAC")
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].t < events[j].t })

	vf := &format.H265{PayloadTyp: 96, VPS: vps, SPS: sps, PPS: pps}
	cfg := aacCfg.Config
	af := &format.MPEG4Audio{PayloadTyp: 97, Config: &cfg, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	vm := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{vf}}
	am := &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{af}}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cam := &h265Camera{done: make(chan struct{})}
	h := &h265Handler{user: user, pass: pass}
	cam.srv = &gortsplib.Server{Handler: h, RTSPAddress: "127.0.0.1:" + strconv.Itoa(port)}
	if err := cam.srv.Start(); err != nil {
		t.Fatal(err)
	}
	h.stream = &gortsplib.ServerStream{Server: cam.srv, Desc: &description.Session{Medias: []*description.Media{vm, am}}}
	if err := h.stream.Initialize(); err != nil {
		t.Fatal(err)
	}
	venc, err := vf.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	aenc, err := af.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cam.stop = cancel
	go func() {
		defer close(cam.done)
		start := time.Now()
		for loop := time.Duration(0); ; loop += 2 * time.Second {
			for _, e := range events {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(start.Add(loop + e.t))):
				}
				at := loop + e.t
				if e.video {
					pkts, err := venc.Encode(e.au)
					if err != nil {
						continue
					}
					for _, p := range pkts {
						p.Timestamp += uint32(int64(at) * 90000 / int64(time.Second))
						_ = h.stream.WritePacketRTP(vm, p)
					}
				} else {
					pkts, err := aenc.Encode(e.au)
					if err != nil {
						continue
					}
					for _, p := range pkts {
						p.Timestamp += uint32(int64(at) * 48000 / int64(time.Second))
						_ = h.stream.WritePacketRTP(am, p)
					}
				}
			}
		}
	}()
	cam.url = "rtsp://" + user + ":" + pass + "@127.0.0.1:" + strconv.Itoa(port) + "/cam"
	t.Cleanup(func() {
		cancel()
		<-cam.done
		h.stream.Close()
		cam.srv.Close()
	})
	return cam
}

type h265Handler struct {
	user, pass string
	stream     *gortsplib.ServerStream
}

func (h *h265Handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if !ctx.Conn.VerifyCredentials(ctx.Request, h.user, h.pass) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	return &base.Response{StatusCode: base.StatusOK}, h.stream, nil
}

func (h *h265Handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if !ctx.Conn.VerifyCredentials(ctx.Request, h.user, h.pass) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	return &base.Response{StatusCode: base.StatusOK}, h.stream, nil
}

func (h *h265Handler) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// An H.265 + AAC camera with a password: gortsplib pulls it, the server
// writes MPEG-TS to ffmpeg's stdin, and H.264 + Opus come out. ffmpeg's
// command line and environment hold no URL, password or server secret.
func TestH265TranscodedThroughStdin(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	const pass = "H265-Cam-Pa55"
	cam := startH265Camera(t, "admin", pass)
	t.Setenv("ICEY_SOURCE", cam.url)
	t.Setenv("ICEY_TURN_SECRET", "h265-env-secret")
	src, err := New(Config{URL: cam.url, Transport: TransportTCP, TranscodeAudio: true,
		VideoTranscode: func(feed FeedFunc) (media.Source, error) {
			return transcode.New(transcode.Config{Input: cam.url, Kind: "rtsp", Feed: feed, FeedFormat: "mpegts"}, nil)
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, src)
	tl := r.read(t, 3*time.Second)
	secs := tl.last.Sub(tl.firstKey).Seconds()
	t.Logf("%d AUs, %d keyframes, %d Opus packets in %.2fs", tl.aus, tl.keyframes, tl.audio, secs)
	if tl.aus < 50 || tl.keyframes < 2 || tl.audio < 75 {
		t.Errorf("got %+v", tl)
	}
	tr := r.st.Tracks()
	if tr.Video == nil || tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Fatalf("tracks %+v", tr)
	}
	if sps := tr.Video.SPS; len(sps) < 3 || sps[1] != 66 {
		t.Errorf("SPS %x is not H.264 Baseline from the transcode", sps)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "H265 is transcoded") {
		t.Errorf("warnings %q", w)
	}
	var found int
	for _, pid := range childtest.Descendants(os.Getpid()) {
		p, err := childtest.Read(pid)
		if err != nil || p.Exe() != "ffmpeg" {
			continue
		}
		found++
		t.Logf("ffmpeg: %q", p.Cmdline)
		if !strings.Contains(strings.Join(p.Cmdline, " "), "-i pipe:0") {
			t.Errorf("ffmpeg does not read stdin: %q", p.Cmdline)
		}
		if leaks := p.Leaks(pass, "admin:", "rtsp://", "h265-env-secret", "ICEY_"); len(leaks) > 0 {
			t.Error(leaks)
		}
	}
	if found != 1 {
		t.Errorf("%d ffmpeg children, want 1", found)
	}
}
