package testpeer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// Clip is what a Publisher sends, looped: H.264 access units (NALUs without
// start codes, decoding order, SPS/PPS in front of each IDR) at FPS and,
// optionally, 20 ms Opus packets.
type Clip struct {
	AUs  [][][]byte
	FPS  int
	Opus [][]byte
	// SPS and PPS are the clip's parameter sets and IsIDR marks the access
	// units that start with an IDR (MakeClip fills them).
	SPS, PPS []byte
	IsIDR    []bool
}

// PublishOptions for Publish.
type PublishOptions struct {
	Token string // sent as Authorization: Bearer
	// VideoOnly / AudioOnly send one kind only.
	VideoOnly, AudioOnly bool
	// StartFrame is the index of the first access unit sent (default 0,
	// the clip's first IDR). A non-IDR start leaves the receiver without
	// a keyframe until the clip's next IDR or a PLI.
	StartFrame int
	// OnlyRequestedKeyframes sends the clip's IDRs only when asked (the
	// first one, and after a PLI): an encoder with an endless GOP. Give it
	// a clip with one IDR that does not loop while it matters: the frames
	// after a skipped IDR reference a picture the receiver never got,
	// which the server sees as a lost reference (and asks for a keyframe).
	OnlyRequestedKeyframes bool
	Timeout                time.Duration // for connecting; default 10 s
}

// Publisher is a WHIP client like OBS's: a pion PeerConnection on
// loopback with sendonly H.264 (packetization-mode=1, constrained
// baseline) and Opus tracks, fed from a Clip in real time. It answers a
// PLI (or FIR) by sending the clip's next keyframe at the next frame time
// (skipping the frames before it) and counts the PLIs it received.
type Publisher struct {
	pc       *webrtc.PeerConnection
	location string
	etag     string
	answer   string
	token    string
	client   *http.Client

	PLIs          atomic.Uint64 // PLI/FIR received
	Reports       atomic.Uint64 // RTCP receiver reports received
	CCFeedback    atomic.Uint64 // transport-wide congestion control feedback received
	FramesSent    atomic.Uint64
	KeyframesSent atomic.Uint64
	AudioSent     atomic.Uint64

	keyframeWanted atomic.Bool
	lastFrame      atomic.Int64 // unix nanos of the latest frame sent
	connected      chan struct{}
	once           sync.Once
	stop           chan struct{}
	stopOnce       sync.Once
	wg             sync.WaitGroup
}

// SendOffer builds a loopback peer connection with sendonly H.264 and/or
// Opus tracks and returns its complete offer (for error tests that never
// connect). Close the peer connection when done.
func SendOffer(video, audio bool) (*webrtc.PeerConnection, string, error) {
	pc, _, _, err := newPublisherPC(video, audio)
	if err != nil {
		return nil, "", err
	}
	offer, err := completeOffer(pc)
	if err != nil {
		_ = pc.Close()
		return nil, "", err
	}
	return pc, offer, nil
}

func newPublisherPC(video, audio bool) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticSample, *webrtc.TrackLocalStaticSample, error) {
	me := &webrtc.MediaEngine{}
	h264 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}}
	opus := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
		SDPFmtpLine: "minptime=10;useinbandfec=1"}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: h264, PayloadType: 102}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, nil, nil, err
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: opus, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, nil, nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		return nil, nil, nil, err
	}
	// Stamp transport-wide sequence numbers on what we send, as browsers
	// do, so the server's congestion control feedback has input.
	tw, err := twcc.NewHeaderExtensionInterceptor()
	if err != nil {
		return nil, nil, nil, err
	}
	reg.Add(tw)
	api := webrtc.NewAPI(webrtc.WithSettingEngine(LoopbackSettings()), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, nil, nil, err
	}
	var vt, at *webrtc.TrackLocalStaticSample
	add := func(c webrtc.RTPCodecCapability, id string) (*webrtc.TrackLocalStaticSample, error) {
		t, err := webrtc.NewTrackLocalStaticSample(c, id, "testpeer")
		if err != nil {
			return nil, err
		}
		if _, err := pc.AddTransceiverFromTrack(t, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			return nil, err
		}
		return t, nil
	}
	if video {
		if vt, err = add(h264, "video"); err != nil {
			_ = pc.Close()
			return nil, nil, nil, err
		}
	}
	if audio {
		if at, err = add(opus, "audio"); err != nil {
			_ = pc.Close()
			return nil, nil, nil, err
		}
	}
	return pc, vt, at, nil
}

func completeOffer(pc *webrtc.PeerConnection) (string, error) {
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

// Publish posts a WHIP offer to whipURL (e.g. http://127.0.0.1:4500/whip),
// waits until ICE/DTLS connected and starts sending clip.
func Publish(ctx context.Context, whipURL string, clip *Clip, o PublishOptions) (*Publisher, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if clip == nil || len(clip.AUs) == 0 || clip.FPS <= 0 {
		return nil, errors.New("testpeer: empty clip")
	}
	video := !o.AudioOnly
	audio := !o.VideoOnly && len(clip.Opus) > 0
	pc, vt, at, err := newPublisherPC(video, audio)
	if err != nil {
		return nil, err
	}
	p := &Publisher{pc: pc, token: o.Token, client: &http.Client{Transport: &http.Transport{}},
		connected: make(chan struct{}), stop: make(chan struct{})}
	fail := func(err error) (*Publisher, error) {
		_ = pc.Close()
		p.client.CloseIdleConnections()
		return nil, err
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			p.once.Do(func() { close(p.connected) })
		}
	})
	// Read RTCP on every sender: PLIs and FIRs on the video one, and the
	// interceptors (NACK responder, reports) only see what is read.
	for _, tr := range pc.GetTransceivers() {
		snd := tr.Sender()
		if snd == nil {
			continue
		}
		p.wg.Add(1)
		go p.readRTCP(snd)
	}
	offer, err := completeOffer(pc)
	if err != nil {
		return fail(err)
	}
	p.answer, p.etag, p.location, err = postOffer(ctx, p.client, whipURL, o.Token, offer)
	if err != nil {
		return fail(err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: p.answer}); err != nil {
		return fail(err)
	}
	select {
	case <-p.connected:
	case <-time.After(o.Timeout):
		return fail(errors.New("testpeer: publisher not connected in time"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	p.wg.Add(1)
	go p.send(clip, vt, at, o.StartFrame, o.OnlyRequestedKeyframes)
	return p, nil
}

func (p *Publisher) readRTCP(snd *webrtc.RTPSender) {
	defer p.wg.Done()
	for {
		pkts, _, err := snd.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.PLIs.Add(1)
				p.keyframeWanted.Store(true)
			case *rtcp.ReceiverReport:
				p.Reports.Add(1)
			case *rtcp.TransportLayerCC:
				p.CCFeedback.Add(1)
			}
		}
	}
}

// send plays the clip in real time, looped, until Close.
func (p *Publisher) send(c *Clip, vt, at *webrtc.TrackLocalStaticSample, startFrame int, onlyRequested bool) {
	defer p.wg.Done()
	frameDur := time.Second / time.Duration(c.FPS)
	const audioDur = 20 * time.Millisecond
	isIDR := make([]bool, len(c.AUs))
	for i, au := range c.AUs {
		for _, n := range au {
			isIDR[i] = isIDR[i] || len(n) > 0 && n[0]&0x1f == 5
		}
	}
	vi := startFrame % len(c.AUs)
	var vn, an int // frames and audio packets sent
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var annexb []byte
	for {
		vpts := time.Duration(vn) * frameDur
		apts := time.Duration(an) * audioDur
		if vt == nil {
			vpts = 1<<62 - 1
		}
		if at == nil {
			apts = 1<<62 - 1
		}
		next := min(vpts, apts)
		if d := time.Until(start.Add(next)); d > 0 {
			timer.Reset(d)
			select {
			case <-p.stop:
				return
			case <-timer.C:
			}
		} else {
			select {
			case <-p.stop:
				return
			default:
			}
		}
		if vpts <= apts {
			switch {
			case p.keyframeWanted.Swap(false) && !isIDR[vi]:
				// Answer the PLI with the next keyframe now.
				for !isIDR[vi] {
					vi = (vi + 1) % len(c.AUs)
				}
			case onlyRequested && vn > 0 && isIDR[vi]:
				// Not asked for: the frame after it instead.
				for isIDR[vi] {
					vi = (vi + 1) % len(c.AUs)
				}
			}
			annexb = annexb[:0]
			for _, n := range c.AUs[vi] {
				annexb = append(annexb, 0, 0, 0, 1)
				annexb = append(annexb, n...)
			}
			if err := vt.WriteSample(media.Sample{Data: annexb, Duration: frameDur}); err == nil {
				p.FramesSent.Add(1)
				if isIDR[vi] {
					p.KeyframesSent.Add(1)
				}
				p.lastFrame.Store(time.Now().UnixNano())
			}
			vi = (vi + 1) % len(c.AUs)
			vn++
		} else {
			if err := at.WriteSample(media.Sample{Data: c.Opus[an%len(c.Opus)], Duration: audioDur}); err == nil {
				p.AudioSent.Add(1)
			}
			an++
		}
	}
}

// Location is the absolute URL of the publisher's WHIP resource.
func (p *Publisher) Location() string { return p.location }

// ETag is the 201's ETag, for PATCH If-Match.
func (p *Publisher) ETag() string { return p.etag }

// Answer is the server's SDP answer.
func (p *Publisher) Answer() string { return p.answer }

// Client is the HTTP client the publisher uses.
func (p *Publisher) Client() *http.Client { return p.client }

// LastFrameAt is when the latest video frame was sent (zero before any).
func (p *Publisher) LastFrameAt() time.Time {
	if n := p.lastFrame.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Stop stops sending media (the peer connection stays up: a publisher
// that went silent).
func (p *Publisher) Stop() {
	p.stopOnce.Do(func() { close(p.stop) })
}

// Delete stops sending and sends the WHIP DELETE; it returns the status
// (the peer connection stays open until Close).
func (p *Publisher) Delete() (int, error) {
	p.Stop()
	req, err := http.NewRequest(http.MethodDelete, p.location, nil)
	if err != nil {
		return 0, err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Disconnect stops sending and closes the peer connection without the
// WHIP DELETE (a client that crashed or lost its network).
func (p *Publisher) Disconnect() {
	p.Stop()
	_ = p.pc.Close()
	p.wg.Wait()
}

// Close sends the WHIP DELETE and closes the peer connection.
func (p *Publisher) Close() {
	_, _ = p.Delete()
	_ = p.pc.Close()
	p.wg.Wait()
	p.client.CloseIdleConnections()
}
