package rtsp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/transcode"
)

// clipCamera is an RTSP server (gortsplib) with a password that loops a
// 2 s clip in real time: video (H.265 with parameter sets in the SDP only,
// H.264 with B-frames, or M-JPEG) and AAC audio. Access units are sent in
// decoding order, each with its presentation time as RTP timestamp.
type clipCamera struct {
	srv  *gortsplib.Server
	url  string
	stop context.CancelFunc
	done chan struct{}
	// pts of the video access units in sending (decoding) order.
	videoPTS []time.Duration
}

type camEvent struct {
	send  time.Duration // when it is sent (decode time)
	pts   time.Duration // its RTP timestamp
	video bool
	au    [][]byte
}

// Camera video kinds.
const (
	camH265        = "h265"
	camH264BFrames = "h264-bframes"
	camMJPEG       = "mjpeg"
)

func startH265Camera(t *testing.T, user, pass string) *clipCamera {
	t.Helper()
	return startCamera(t, camH265, user, pass)
}

func startCamera(t *testing.T, kind, user, pass string) *clipCamera {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	dir := t.TempDir()
	out := filepath.Join(dir, "clip.ts")
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2"}
	switch kind {
	case camH265:
		args = append(args, "-map", "0:v", "-map", "1:a", "-c:v", "libx265", "-preset", "ultrafast",
			"-x265-params", "bframes=0:keyint=25:log-level=error", "-pix_fmt", "yuv420p")
	case camH264BFrames:
		args = append(args, "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-profile:v", "high", "-preset", "fast",
			"-bf", "2", "-g", "25", "-pix_fmt", "yuv420p")
	case camMJPEG:
		// The JPEG frames in a file of their own, the audio in MPEG-TS.
		args = append(args, "-map", "0:v", "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "5",
			"-f", "mjpeg", "-y", filepath.Join(dir, "clip.mjpeg"), "-map", "1:a")
	}
	args = append(args, "-t", "2", "-c:a", "aac", "-ac", "2", "-f", "mpegts", "-y", out)
	if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
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
	var events []camEvent
	var td mpegts.TimeDecoder
	dur := func(v int64) time.Duration { return time.Duration(v) * time.Second / 90000 }
	var first *int64
	rel := func(v int64) time.Duration {
		v = td.Decode(v)
		if first == nil {
			first = &v
		}
		return dur(v - *first + 90000/5) // 200 ms of room for the decode times before
	}
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
				p := rel(pts)
				events = append(events, camEvent{send: p, pts: p, video: true, au: keep})
				return nil
			})
		case *tscodecs.H264:
			r.OnDataH264(tr, func(pts, dts int64, au [][]byte) error {
				var keep [][]byte
				for _, n := range au {
					switch h264.NALUType(n[0] & 0x1f) {
					case h264.NALUTypeSPS:
						sps = n
					case h264.NALUTypePPS:
						pps = n
					case h264.NALUTypeAccessUnitDelimiter:
					default:
						keep = append(keep, n)
					}
				}
				events = append(events, camEvent{send: rel(dts), pts: rel(pts), video: true, au: keep})
				return nil
			})
		case *tscodecs.MPEG4Audio:
			aacCfg = c
			r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				p := rel(pts)
				for i, au := range aus {
					at := p + time.Duration(i*1024)*time.Second/48000
					events = append(events, camEvent{send: at, pts: at, au: [][]byte{au}})
				}
				return nil
			})
		}
	}
	for r.Read() == nil {
	}
	if kind == camMJPEG {
		b, err := os.ReadFile(filepath.Join(dir, "clip.mjpeg"))
		if err != nil {
			t.Fatal(err)
		}
		// Each JPEG starts with SOI followed by a marker; the entropy-coded
		// data stuffs every 0xFF, so the pattern is found nowhere else.
		soi := []byte{0xFF, 0xD8, 0xFF}
		for i, n := 0, 0; i >= 0; n++ {
			j := bytes.Index(b[i+3:], soi)
			img := b[i:]
			if j >= 0 {
				img = b[i : i+3+j]
				i += 3 + j
			} else {
				i = -1
			}
			p := time.Duration(n)*40*time.Millisecond + 200*time.Millisecond
			events = append(events, camEvent{send: p, pts: p, video: true, au: [][]byte{img}})
		}
	}
	if aacCfg == nil || (kind == camH265 && (vps == nil || sps == nil || pps == nil)) || (kind == camH264BFrames && (sps == nil || pps == nil)) {
		t.Fatal("clip lacks parameter sets or AAC")
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].send < events[j].send })
	cam := &clipCamera{done: make(chan struct{})}
	for _, e := range events {
		if e.video {
			cam.videoPTS = append(cam.videoPTS, e.pts)
		}
	}

	var vf format.Format
	switch kind {
	case camH265:
		vf = &format.H265{PayloadTyp: 96, VPS: vps, SPS: sps, PPS: pps}
	case camH264BFrames:
		vf = &format.H264{PayloadTyp: 96, SPS: sps, PPS: pps, PacketizationMode: 1}
	case camMJPEG:
		vf = &format.MJPEG{}
	}
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
	h := &h265Handler{user: user, pass: pass}
	cam.srv = &gortsplib.Server{Handler: h, RTSPAddress: "127.0.0.1:" + strconv.Itoa(port)}
	if err := cam.srv.Start(); err != nil {
		t.Fatal(err)
	}
	h.stream = &gortsplib.ServerStream{Server: cam.srv, Desc: &description.Session{Medias: []*description.Media{vm, am}}}
	if err := h.stream.Initialize(); err != nil {
		t.Fatal(err)
	}
	var encodeVideo func(au [][]byte) ([]*rtp.Packet, error)
	switch f := vf.(type) {
	case *format.H265:
		enc, err := f.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		encodeVideo = enc.Encode
	case *format.H264:
		enc, err := f.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		encodeVideo = enc.Encode
	case *format.MJPEG:
		enc, err := f.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		encodeVideo = func(au [][]byte) ([]*rtp.Packet, error) { return enc.Encode(au[0]) }
	}
	aenc, err := af.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	var encErrs atomic.Int64
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
				case <-time.After(time.Until(start.Add(loop + e.send))):
				}
				at := loop + e.pts
				if e.video {
					pkts, err := encodeVideo(e.au)
					if err != nil {
						encErrs.Add(1)
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
		if n := encErrs.Load(); n > 0 {
			t.Errorf("camera: %d video frames failed to packetize", n)
		}
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

// An H.265 + AAC camera with a password: the H.265 goes into the stream as
// it is (Codec H265, parameter sets from the SDP in front of every
// keyframe), the AAC through the audio-only ffmpeg. No ffmpeg touches the
// video, and none sees the URL or a secret.
func TestH265Native(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	const pass = "H265-Cam-Pa55"
	cam := startH265Camera(t, "admin", pass)
	t.Setenv("ICEY_SOURCE", cam.url)
	t.Setenv("ICEY_TURN_SECRET", "h265-env-secret")
	transcodes := 0
	src, err := New(Config{URL: cam.url, Transport: TransportTCP, TranscodeAudio: true,
		VideoTranscode: func(feed FeedFunc) (media.Source, error) {
			transcodes++
			return nil, errors.New("no video transcode expected")
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, src)
	tl := r.read(t, 3*time.Second)
	t.Logf("%d AUs %v, %d keyframes, %d Opus packets", tl.aus, tl.videoCodecs, tl.keyframes, tl.audio)
	if tl.aus < 50 || tl.keyframes < 2 || tl.audio < 75 || tl.videoCodecs[media.CodecH265] != tl.aus {
		t.Errorf("got %+v", tl)
	}
	tr := r.st.Tracks()
	if tr.Video == nil || tr.Video.Codec != media.CodecH265 || len(tr.Video.VPS) == 0 || len(tr.Video.SPS) == 0 || len(tr.Video.PPS) == 0 {
		t.Fatalf("video track %+v", tr.Video)
	}
	if tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Fatalf("audio track %+v", tr.Audio)
	}
	if vi := r.st.VideoInfo(); vi.Codec != media.CodecH265 || vi.Width != 320 || vi.Height != 240 {
		t.Errorf("VideoInfo %+v", vi)
	}
	// A keyframe unit carries VPS, SPS, PPS in front of the IRAP picture.
	for _, u := range r.st.Ring().GOP() {
		if u.Kind == media.KindVideo && u.Keyframe {
			if len(u.Payload) < 4 || (u.Payload[0][0]>>1)&0x3f != 32 || (u.Payload[1][0]>>1)&0x3f != 33 || (u.Payload[2][0]>>1)&0x3f != 34 {
				t.Errorf("keyframe does not start with VPS, SPS, PPS")
			}
			break
		}
	}
	w := strings.Join(src.Warnings(), "; ")
	if !strings.Contains(w, "MPEG-4 Audio is transcoded to Opus") || strings.Contains(w, "H265") {
		t.Errorf("warnings %q", w)
	}
	if transcodes != 0 {
		t.Errorf("VideoTranscode called %d times", transcodes)
	}
	var found int
	for _, pid := range childtest.Descendants(os.Getpid()) {
		p, err := childtest.Read(pid)
		if err != nil || p.Exe() != "ffmpeg" {
			continue
		}
		found++
		t.Logf("ffmpeg: %q", p.Cmdline)
		argv := " " + strings.Join(p.Cmdline, " ") + " "
		if !strings.Contains(argv, " -i pipe:0 ") || !strings.Contains(argv, " -map 0:a:0 ") {
			t.Errorf("ffmpeg is not the audio pipe: %q", p.Cmdline)
		}
		for _, bad := range []string{"-c:v", "libx264", "libx265", "hevc"} {
			if strings.Contains(argv, bad) {
				t.Errorf("ffmpeg argv has %q", bad)
			}
		}
		if leaks := p.Leaks(pass, "admin:", "rtsp://", "h265-env-secret", "ICEY_"); len(leaks) > 0 {
			t.Error(leaks)
		}
	}
	if found != 1 {
		t.Errorf("%d ffmpeg children, want 1 (the audio pipe)", found)
	}
}

// An H.265 camera plays without ffmpeg at all when its audio is dropped.
func TestH265NativeWithoutFFmpeg(t *testing.T) {
	checkLeaks(t)
	cam := startH265Camera(t, "admin", "pw")
	src, err := New(Config{URL: cam.url, Transport: TransportTCP}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, src)
	tl := r.read(t, 2*time.Second)
	if tl.aus < 35 || tl.videoCodecs[media.CodecH265] != tl.aus || tl.audio != 0 {
		t.Errorf("got %+v", tl)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "MPEG-4 Audio dropped") {
		t.Errorf("warnings %q", w)
	}
}

// An H.264 camera with B-frames: the access units arrive in decoding order
// with their presentation times (the RTP timestamps), which go backwards
// exactly as the camera's do, and the stream sees the reordering.
func TestH264BFramesCamera(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	cam := startCamera(t, camH264BFrames, "admin", "pw")
	src, err := New(Config{URL: cam.url, Transport: TransportTCP}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, src)
	tl := r.read(t, 3*time.Second)
	if tl.aus < 50 || tl.videoCodecs[media.CodecH264] != tl.aus {
		t.Fatalf("got %+v", tl)
	}
	// The camera's PTS steps (decoding order), from its first keyframe on:
	// the received ones must be a run of them.
	steps := func(pts []time.Duration) []time.Duration {
		var out []time.Duration
		for i := 1; i < len(pts); i++ {
			out = append(out, (pts[i] - pts[i-1]).Round(time.Millisecond))
		}
		return out
	}
	want := steps(append(append([]time.Duration(nil), cam.videoPTS...), cam.videoPTS...)) // it loops
	got := steps(tl.videoPTS)[:40]
	back := 0
	for _, d := range got {
		if d < 0 {
			back++
		}
	}
	if back == 0 {
		t.Fatalf("received PTS never go backwards: %v", got)
	}
	match := false
	for i := 0; i+len(got) <= len(want) && !match; i++ {
		match = slices.Equal(want[i:i+len(got)], got)
	}
	if !match {
		t.Errorf("PTS steps %v are not the camera's %v", got, want[:len(want)/2])
	}
	if vi := r.st.VideoInfo(); !vi.BFrames {
		t.Errorf("VideoInfo %+v, want BFrames", vi)
	}
}

// An M-JPEG + AAC camera with a password: gortsplib pulls it, the server
// writes the JPEG frames and the AAC as Matroska to ffmpeg's stdin, and
// H.264 + Opus come out. ffmpeg's command line and environment hold no
// URL, password or server secret.
func TestMJPEGTranscodedThroughStdin(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	const pass = "MJPEG-Cam-Pa55"
	cam := startCamera(t, camMJPEG, "admin", pass)
	t.Setenv("ICEY_SOURCE", cam.url)
	t.Setenv("ICEY_TURN_SECRET", "mjpeg-env-secret")
	src, err := New(Config{URL: cam.url, Transport: TransportTCP, TranscodeAudio: true,
		VideoTranscode: func(feed FeedFunc) (media.Source, error) {
			return transcode.New(transcode.Config{Input: cam.url, Kind: "rtsp", Feed: feed, FeedFormat: FeedFormat}, nil)
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, src)
	tl := r.read(t, 3*time.Second)
	secs := tl.last.Sub(tl.firstKey).Seconds()
	t.Logf("%d AUs %v, %d keyframes, %d Opus packets in %.2fs", tl.aus, tl.videoCodecs, tl.keyframes, tl.audio, secs)
	if tl.aus < 50 || tl.keyframes < 2 || tl.audio < 75 || tl.videoCodecs[media.CodecH264] != tl.aus {
		t.Errorf("got %+v", tl)
	}
	tr := r.st.Tracks()
	if tr.Video == nil || tr.Video.VideoCodec() != media.CodecH264 || tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Fatalf("tracks %+v", tr)
	}
	if sps := tr.Video.SPS; len(sps) < 3 || sps[1] != 66 {
		t.Errorf("SPS %x is not H.264 Baseline from the transcode", sps)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "M-JPEG is transcoded") || !strings.Contains(w, "MPEG-4 Audio is transcoded") {
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
		if !strings.Contains(strings.Join(p.Cmdline, " "), "-f matroska -i pipe:0") {
			t.Errorf("ffmpeg does not read Matroska on stdin: %q", p.Cmdline)
		}
		if leaks := p.Leaks(pass, "admin:", "rtsp://", "mjpeg-env-secret", "ICEY_"); len(leaks) > 0 {
			t.Error(leaks)
		}
	}
	if found != 1 {
		t.Errorf("%d ffmpeg children, want 1", found)
	}
}
