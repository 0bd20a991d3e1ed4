// Package testpeer is a WHEP viewer for tests: a real pion PeerConnection,
// confined to loopback, that counts what it receives. It lets black-box
// tests prove that video and audio reach a viewer.
//
// A viewer can offer chosen video codecs and prove that what it receives
// decodes, at which rate and size:
//
//	v, err := testpeer.Connect(ctx, whepURL, testpeer.Options{VideoCodecs: []string{"VP8"}})
//	...
//	fps, n, err := v.DecodedFPS(ctx, 2*time.Second) // ffprobe-decoded frames per RTP second
//	w, h := v.DecodedSize()
//	codec := v.VideoCodec() // "video/VP8"
//
// MakeMedia writes test files (H.264 baseline or High with B-frames,
// H.265, VP8, M-JPEG; Opus, AAC, PCMU) with ffmpeg.
package testpeer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Viewer is one connected WHEP viewer.
type Viewer struct {
	pc       *webrtc.PeerConnection
	location string
	etag     string
	answer   string
	token    string
	base     string
	client   *http.Client
	mux      ice.UDPMux // own ICE socket (Options.LocalIP), closed by Close

	VideoPackets atomic.Uint64
	AudioPackets atomic.Uint64
	Keyframes    atomic.Uint64 // H.264 packets that start an IDR (or carry SPS); see KeyframesReceived for any codec
	MaxPayload   atomic.Int64
	Joined       time.Time
	firstIDR     atomic.Int64           // ns since Joined, 0 = none yet
	sps          atomic.Pointer[[]byte] // the latest SPS received
	onVideo      func(*rtp.Packet, time.Time)
	frames       atomic.Uint64
	videoMime    atomic.Pointer[string]
	audioMime    atomic.Pointer[string]
	videoSSRC    atomic.Uint32
	recMu        sync.Mutex // guards the frame recorder below
	rec          *recording
	params       paramSets
	keyFrames    int
	vp8W, vp8H   int // latest VP8 keyframe size
	decW, decH   int // latest decoded size
	connected    chan struct{}
	once         sync.Once
	mu           sync.Mutex // guards closed and wg.Add against Close's Wait
	closed       bool
	wg           sync.WaitGroup
}

// Options for Connect.
type Options struct {
	Token     string
	VideoOnly bool
	Timeout   time.Duration // for connecting; default 10 s
	// OnVideo, when set, sees every video RTP packet as it arrives (from
	// the track's reader goroutine; it must not block or keep p).
	OnVideo func(p *rtp.Packet, at time.Time)
	// LocalIP, when set (a loopback address such as 127.0.0.2), is the
	// viewer's address for both HTTP (the WHEP requests) and ICE (its
	// only host candidate), so a server sees it as a distinct client.
	LocalIP net.IP
	// VideoCodecs, when set, are the only video codecs the viewer offers,
	// in order of preference: "H264" (pion's H.264 profiles, both
	// packetization modes, plus 640c1f), "H265", "VP8". Audio is then
	// pion's default set (Opus, G722, PCMU, PCMA). Empty offers pion's
	// default codecs.
	VideoCodecs []string
}

// Connect posts a WHEP offer to whepURL (e.g. http://127.0.0.1:4500/whep)
// and waits until ICE/DTLS connected.
func Connect(ctx context.Context, whepURL string, o Options) (*Viewer, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	se := LoopbackSettings()
	client := http.DefaultClient
	var mux ice.UDPMux
	if o.LocalIP != nil {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: o.LocalIP})
		if err != nil {
			return nil, err
		}
		mux = webrtc.NewICEUDPMux(nil, conn)
		se.SetICEUDPMux(mux)
		se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(o.LocalIP) })
		client = &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: o.LocalIP}, Timeout: 10 * time.Second}).DialContext}}
	}
	closeMux := func() {
		if mux != nil {
			_ = mux.Close()
		}
	}
	me, err := newMediaEngine(o.VideoCodecs)
	if err != nil {
		closeMux()
		return nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		closeMux()
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		closeMux()
		return nil, err
	}
	v := &Viewer{pc: pc, token: o.Token, client: client, mux: mux, connected: make(chan struct{}), onVideo: o.OnVideo}
	fail := func(err error) (*Viewer, error) { _ = pc.Close(); closeMux(); return nil, err }
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		mime := tr.Codec().MimeType
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			v.videoMime.Store(&mime)
			v.videoSSRC.Store(uint32(tr.SSRC()))
		} else {
			v.audioMime.Store(&mime)
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.closed {
			return
		}
		v.wg.Add(1)
		go v.read(tr)
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			v.once.Do(func() { close(v.connected) })
		}
	})
	kinds := []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo}
	if !o.VideoOnly {
		kinds = append(kinds, webrtc.RTPCodecTypeAudio)
	}
	offer, err := RecvOffer(pc, kinds...)
	if err != nil {
		return fail(err)
	}
	v.Joined = time.Now()
	v.answer, v.etag, v.location, err = postOffer(ctx, client, whepURL, o.Token, offer)
	if err != nil {
		return fail(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: v.answer}); err != nil {
		return fail(err)
	}
	select {
	case <-v.connected:
	case <-time.After(o.Timeout):
		return fail(errors.New("testpeer: not connected in time"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	return v, nil
}

// postOffer POSTs an SDP offer (WHEP or WHIP) and returns the answer, the
// ETag and the absolute Location of the 201; another status is a
// *StatusError.
func postOffer(ctx context.Context, client *http.Client, url, token, offer string) (answer, etag, location string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(offer))
	if err != nil {
		return "", "", "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", "", "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", "", "", &StatusError{Code: resp.StatusCode, Body: string(body)}
	}
	location = resp.Header.Get("Location")
	if u, err := resp.Request.URL.Parse(location); err == nil {
		location = u.String()
	}
	return string(body), resp.Header.Get("ETag"), location, nil
}

// LoopbackSettings confines a pion peer to loopback: loopback host
// candidates over UDP4 only, no mDNS (which would send multicast).
func LoopbackSettings() webrtc.SettingEngine {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return se
}

// NewPeerConnection is a bare pion PeerConnection on loopback
// (LoopbackSettings) with pion's default codecs and interceptors (NACK,
// RTCP reports, TWCC), for tests that drive the signalling themselves.
func NewPeerConnection() (*webrtc.PeerConnection, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(LoopbackSettings()), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg))
	return api.NewPeerConnection(webrtc.Configuration{})
}

// RecvOffer adds a recvonly transceiver per kind (video and audio when none
// are given) and returns the complete offer, candidates included (the
// non-trickle form WHEP servers answer in one round trip).
func RecvOffer(pc *webrtc.PeerConnection, kinds ...webrtc.RTPCodecType) (string, error) {
	if len(kinds) == 0 {
		kinds = []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio}
	}
	for _, k := range kinds {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return "", err
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return "", err
	}
	<-gathered
	return pc.LocalDescription().SDP, nil
}

// StatusError is a non-201 WHEP answer.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("WHEP answered %d: %s", e.Code, e.Body) }

func (v *Viewer) read(tr *webrtc.TrackRemote) {
	defer v.wg.Done()
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	var asm *frameAssembler
	if video {
		asm = newFrameAssembler(tr.Codec().MimeType)
	}
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		if int64(len(p.Payload)) > v.MaxPayload.Load() {
			v.MaxPayload.Store(int64(len(p.Payload)))
		}
		if !video {
			v.AudioPackets.Add(1)
			continue
		}
		v.VideoPackets.Add(1)
		if v.onVideo != nil {
			v.onVideo(p, time.Now())
		}
		if asm != nil {
			if f, ts, ok := asm.push(p); ok {
				v.onFrame(asm.mime, f, ts, time.Now())
			}
		}
		if sps := findSPS(p.Payload); sps != nil {
			v.sps.Store(&sps)
		}
		if StartsKeyframe(p.Payload) {
			if v.Keyframes.Add(1) == 1 {
				v.firstIDR.Store(int64(time.Since(v.Joined)))
			}
		}
	}
}

// StartsKeyframe reports whether an H.264 RTP payload starts an IDR access
// unit (SPS, IDR, or a STAP-A/FU-A start carrying one).
func StartsKeyframe(p []byte) bool {
	if len(p) < 2 {
		return false
	}
	switch t := p[0] & 0x1f; t {
	case 5, 7:
		return true
	case 24: // STAP-A: first aggregated NALU
		if len(p) > 3 {
			nt := p[3] & 0x1f
			return nt == 5 || nt == 7
		}
	case 28: // FU-A start fragment
		return p[1]&0x80 != 0 && (p[1]&0x1f == 5 || p[1]&0x1f == 7)
	}
	return false
}

// findSPS returns a copy of the SPS an H.264 RTP payload carries (as a
// single NAL unit or inside a STAP-A), or nil.
func findSPS(p []byte) []byte {
	if len(p) < 2 {
		return nil
	}
	switch p[0] & 0x1f {
	case 7:
		return append([]byte(nil), p...)
	case 24: // STAP-A (RFC 6184 §5.7.1): 16-bit size, NALU, ...
		for b := p[1:]; len(b) > 2; {
			n := int(b[0])<<8 | int(b[1])
			if n == 0 || len(b) < 2+n {
				return nil
			}
			if b[2]&0x1f == 7 {
				return append([]byte(nil), b[2:2+n]...)
			}
			b = b[2+n:]
		}
	}
	return nil
}

// SPS is the latest H.264 sequence parameter set received (nil before the
// first keyframe): tests read the picture size from it to tell streams
// apart.
func (v *Viewer) SPS() []byte {
	if p := v.sps.Load(); p != nil {
		return *p
	}
	return nil
}

// Location is the absolute URL of the viewer's WHEP resource (the 201's
// Location): the capability that PATCH and DELETE need.
func (v *Viewer) Location() string { return v.location }

// ETag is the 201's ETag (the ICE session), for PATCH If-Match.
func (v *Viewer) ETag() string { return v.etag }

// Answer is the server's SDP answer.
func (v *Viewer) Answer() string { return v.answer }

// Client is the HTTP client the viewer uses (bound to Options.LocalIP).
func (v *Viewer) Client() *http.Client { return v.client }

// FirstKeyframe is join->first keyframe, or 0 if none arrived yet.
func (v *Viewer) FirstKeyframe() time.Duration { return time.Duration(v.firstIDR.Load()) }

// WaitVideo waits until n video packets arrived.
func (v *Viewer) WaitVideo(n uint64, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if v.VideoPackets.Load() >= n {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("testpeer: %d video packets after %s, want %d", v.VideoPackets.Load(), d, n)
}

// Close sends the WHEP DELETE and closes the peer connection.
func (v *Viewer) Close() {
	if v.location != "" {
		req, _ := http.NewRequest(http.MethodDelete, v.location, nil)
		if v.token != "" {
			req.Header.Set("Authorization", "Bearer "+v.token)
		}
		if resp, err := v.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	_ = v.pc.Close()
	v.wg.Wait()
	if v.mux != nil {
		_ = v.mux.Close()
	}
	if v.client != http.DefaultClient {
		v.client.CloseIdleConnections()
	}
}
