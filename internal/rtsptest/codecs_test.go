package rtsptest

import (
	"bytes"
	"image/jpeg"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmjpeg"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/testenv"
)

// frameTally is what playVideo saw of the video (whole frames) and audio.
type frameTally struct {
	mu         sync.Mutex
	format     format.Format
	frames     int
	keyframes  int
	timestamps []uint32 // RTP timestamps of the frames, in arrival order
	first      time.Time
	last       time.Time
	inbandPS   int
	width      int
	height     int
	audio      int
	audioCodec string
	errs       []error
	jpegs      [][]byte
	maxGap     time.Duration
	gapAt      int
	stopped    bool
}

// playVideo reads srv's stream for d with a gortsplib client and decodes
// the video into whole frames with gortsplib's depacketizers.
func playVideo(t *testing.T, srv *Server, d time.Duration) *frameTally {
	t.Helper()
	u, err := base.ParseURL(srv.URL("cam"))
	if err != nil {
		t.Fatal(err)
	}
	transport := gortsplib.TransportTCP
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &transport}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	closeClient := sync.OnceFunc(c.Close)
	defer closeClient()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("DESCRIBE: %v", err)
	}
	var vm *description.Media
	for _, m := range desc.Medias {
		if m.Type == description.MediaTypeVideo {
			vm = m
		}
	}
	if vm == nil {
		t.Fatal("no video media in the SDP")
	}
	r := &frameTally{format: vm.Formats[0]}
	var decode func(p *rtp.Packet) (any, error)
	switch f := r.format.(type) {
	case *format.H264:
		dec, err := f.CreateDecoder()
		if err != nil {
			t.Fatal(err)
		}
		decode = func(p *rtp.Packet) (any, error) { return dec.Decode(p) }
	case *format.H265:
		dec, err := f.CreateDecoder()
		if err != nil {
			t.Fatal(err)
		}
		decode = func(p *rtp.Packet) (any, error) { return dec.Decode(p) }
	case *format.MJPEG:
		dec, err := f.CreateDecoder()
		if err != nil {
			t.Fatal(err)
		}
		decode = func(p *rtp.Packet) (any, error) { return dec.Decode(p) }
	default:
		t.Fatalf("unexpected video format %T", f)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	c.OnPacketRTPAny(func(m *description.Media, f format.Format, p *rtp.Packet) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopped {
			return
		}
		if m != vm {
			r.audio++
			r.audioCodec = f.Codec()
			return
		}
		out, err := decode(p)
		switch err {
		case nil:
		case rtph264.ErrMorePacketsNeeded, rtph264.ErrNonStartingPacketAndNoPrevious,
			rtph265.ErrMorePacketsNeeded, rtph265.ErrNonStartingPacketAndNoPrevious,
			rtpmjpeg.ErrMorePacketsNeeded, rtpmjpeg.ErrNonStartingPacketAndNoPrevious:
			return
		default:
			r.errs = append(r.errs, err)
			return
		}
		now := time.Now()
		if r.frames > 0 && now.Sub(r.last) > r.maxGap {
			r.maxGap = now.Sub(r.last)
			r.gapAt = r.frames
		}
		if r.frames == 0 {
			r.first = now
		}
		r.last = now
		r.frames++
		r.timestamps = append(r.timestamps, p.Timestamp)
		switch v := out.(type) {
		case [][]byte:
			if _, ok := r.format.(*format.H265); ok {
				if h265.IsRandomAccess(v) {
					r.keyframes++
				}
				for _, n := range v {
					if typ := h265.NALUType((n[0] >> 1) & 0x3f); typ >= h265.NALUType_VPS_NUT && typ <= h265.NALUType_PPS_NUT {
						r.inbandPS++
					}
				}
			} else {
				if h264.IsRandomAccess(v) {
					r.keyframes++
				}
				for _, n := range v {
					if typ := h264.NALUType(n[0] & 0x1f); typ == h264.NALUTypeSPS || typ == h264.NALUTypePPS {
						r.inbandPS++
					}
				}
			}
		case []byte: // a JPEG image, decoded at the end (not to slow the reader)
			r.keyframes++
			r.jpegs = append(r.jpegs, v)
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	closeClient()
	for _, img := range r.jpegs {
		cfg, err := jpeg.Decode(bytes.NewReader(img))
		if err != nil {
			r.errs = append(r.errs, err)
			continue
		}
		r.width, r.height = cfg.Bounds().Dx(), cfg.Bounds().Dy()
	}
	return r
}

func TestServerVideoCodecs(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		name      string
		opts      Options
		codec     string // format.Codec()
		audio     string
		bframes   bool
		checkSize bool
	}{
		{"h264-bframes-aac", Options{Video: VideoH264BFrames, Audio: AudioAAC}, "H264", "MPEG-4 Audio", true, false},
		{"h265-pcmu", Options{Video: VideoH265, Audio: AudioPCMU}, "H265", "G711", false, false},
		{"h265-aac", Options{Video: VideoH265, Audio: AudioAAC, FPS: 30}, "H265", "MPEG-4 Audio", false, false},
		{"mjpeg-frames-opus", Options{Video: VideoMJPEGFrames, Audio: AudioOpus}, "M-JPEG", "Opus", false, true},
		{"mjpeg-frames-pcmu", Options{Video: VideoMJPEGFrames, Audio: AudioPCMU}, "M-JPEG", "G711", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := Start(t, tc.opts)
			fps := tc.opts.FPS
			if fps == 0 {
				fps = 25
			}
			r := playVideo(t, srv, 2500*time.Millisecond)
			if got := r.format.Codec(); got != tc.codec {
				t.Fatalf("SDP video format %s, want %s", got, tc.codec)
			}
			for _, err := range r.errs {
				t.Errorf("decode: %v", err)
			}
			if r.frames < 2*fps || r.keyframes < 1 {
				t.Fatalf("%d frames (%d keyframes) in 2.5 s at %d fps", r.frames, r.keyframes, fps)
			}
			// Arrival rate, and the rate the RTP timestamps describe.
			arrival := float64(r.frames-1) / r.last.Sub(r.first).Seconds()
			lo, hi := r.timestamps[0], r.timestamps[0]
			monotonic := true
			for i, ts := range r.timestamps {
				if int32(ts-lo) < 0 {
					lo = ts
				}
				if int32(ts-hi) > 0 {
					hi = ts
				}
				if i > 0 && int32(ts-r.timestamps[i-1]) <= 0 {
					monotonic = false
				}
			}
			rtpRate := float64(r.frames-1) / (float64(hi-lo) / 90000)
			for what, got := range map[string]float64{"arrival": arrival, "RTP timestamp": rtpRate} {
				if math.Abs(got-float64(fps)) > 0.1*float64(fps) {
					t.Errorf("%s rate %.2f fps, want %d ±10%% (longest gap %s)", what, got, fps, r.maxGap)
				}
			}
			if tc.bframes == monotonic {
				t.Errorf("timestamps monotonic = %v, want %v (B-frames: %v)", monotonic, !tc.bframes, tc.bframes)
			}
			if r.inbandPS != 0 {
				t.Errorf("%d in-band parameter sets: they belong in the SDP only", r.inbandPS)
			}
			if tc.checkSize && (r.width != 320 || r.height != 240) {
				t.Errorf("JPEG size %dx%d, want 320x240", r.width, r.height)
			}
			if r.audio < 20 || r.audioCodec != tc.audio {
				t.Errorf("audio: %d packets of %s, want %s", r.audio, r.audioCodec, tc.audio)
			}
			t.Logf("%s: %d frames, %d keyframes, arrival %.2f fps, RTP %.2f fps, monotonic %v, audio %d %s, longest gap %s before frame %d",
				tc.codec, r.frames, r.keyframes, arrival, rtpRate, monotonic, r.audio, r.audioCodec, r.maxGap, r.gapAt)
		})
	}
	t.Run("h264-bframes-sdp", func(t *testing.T) {
		srv := Start(t, Options{Video: VideoH264BFrames})
		var sps h264.SPS
		if err := sps.Unmarshal(srv.SDPSPS()); err != nil {
			t.Fatal(err)
		}
		if sps.ProfileIdc != 100 {
			t.Errorf("profile_idc %d, want 100 (High)", sps.ProfileIdc)
		}
	})
}
