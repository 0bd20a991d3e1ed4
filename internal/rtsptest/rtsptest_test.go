package rtsptest

import (
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/testenv"
)

type received struct {
	mu          sync.Mutex
	aus, idrs   int
	inbandPS    int
	maxPayload  int
	audio       int
	audioFormat format.Format
}

// play reads url for d with a plain gortsplib client and tallies what came.
func play(t *testing.T, url string, transport gortsplib.Transport, srv *Server, d time.Duration) *received {
	t.Helper()
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &transport, TLSConfig: srv.ClientTLSConfig()}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("DESCRIBE: %v", err)
	}
	var h *format.H264
	vm := desc.FindFormat(&h)
	if vm == nil {
		t.Fatal("no H.264 in SDP")
	}
	if string(h.SPS) != string(srv.SDPSPS()) || len(h.PPS) == 0 {
		t.Fatal("SPS/PPS missing from SDP")
	}
	r := &received{}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	dec, _ := h.CreateDecoder()
	c.OnPacketRTPAny(func(m *description.Media, f format.Format, p *rtp.Packet) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if m != vm {
			r.audio++
			r.audioFormat = f
			return
		}
		r.maxPayload = max(r.maxPayload, len(p.Payload))
		au, err := dec.Decode(p)
		if err != nil {
			if err != rtph264.ErrMorePacketsNeeded && err != rtph264.ErrNonStartingPacketAndNoPrevious {
				t.Errorf("decode: %v", err)
			}
			return
		}
		r.aus++
		if h264.IsRandomAccess(au) {
			r.idrs++
		}
		for _, n := range au {
			if typ := h264.NALUType(n[0] & 0x1f); typ == h264.NALUTypeSPS || typ == h264.NALUTypePPS {
				r.inbandPS++
			}
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r
}

func TestServerServes(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		name      string
		opts      Options
		transport gortsplib.Transport
		audio     string
	}{
		{"opus-tcp", Options{Audio: AudioOpus}, gortsplib.TransportTCP, "Opus"},
		{"pcmu-udp", Options{Audio: AudioPCMU, UDP: true}, gortsplib.TransportUDP, "G711"},
		{"aac-tls-auth", Options{Audio: AudioAAC, TLS: true, User: "u", Pass: "p"}, gortsplib.TransportTCP, "MPEG-4 Audio"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := Start(t, tc.opts)
			r := play(t, srv.URL("cam"), tc.transport, srv, 2*time.Second)
			// 25 fps for 2 s: allow for a slow machine.
			if r.aus < 25 || r.idrs < 1 {
				t.Fatalf("got %d AUs, %d IDRs", r.aus, r.idrs)
			}
			if r.inbandPS != 0 {
				t.Errorf("%d in-band SPS/PPS: they should be in the SDP only", r.inbandPS)
			}
			if r.maxPayload <= 1200 {
				t.Errorf("max payload %d: want camera-like payloads above 1200", r.maxPayload)
			}
			if r.audio < 20 || r.audioFormat == nil || r.audioFormat.Codec() != tc.audio {
				t.Errorf("audio: %d packets of %v, want %s", r.audio, r.audioFormat, tc.audio)
			}
		})
	}
}

func TestServerRestartSamePort(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	srv := Start(t, Options{})
	port := srv.Port()
	srv.Restart()
	if srv.Port() != port {
		t.Fatalf("port changed %d -> %d", port, srv.Port())
	}
	r := play(t, srv.URL("x"), gortsplib.TransportTCP, srv, time.Second)
	if r.aus == 0 {
		t.Fatal("no video after restart")
	}
	srv.Stop()
	srv.Stop() // idempotent
}
