package signaling

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
)

// Publisher keyframe policy.
const (
	// rareKeyframeCheck is how often a publisher checks whether its
	// keyframes are rare while the stream has viewers.
	rareKeyframeCheck = 2 * time.Second
	// rareKeyframeAge: with viewers and no keyframe for this long, each
	// check sends a PLI (a publisher with a 10 s GOP, or one that only
	// sends keyframes on request, would otherwise leave a joining viewer
	// or one recovering from loss without a picture for long).
	rareKeyframeAge = 4 * time.Second
)

// NewPublisher answers a publisher's offer (WHIP, or a Symple broadcast):
// the offer must send H.264 (packetization-mode=1) video and/or Opus audio
// (sendonly or sendrecv). The path is resolved with Router.Publish after
// admission, like a viewer's; the publisher writes what it receives into
// the path's stream, and releases the path when it ends, so the path's
// viewers keep their sessions and continue with the next publisher.
func (m *Manager) NewPublisher(ctx context.Context, offer string, meta SessionMeta) (*Session, string, error) {
	parsed, err := checkOffer(offer)
	if err != nil {
		return nil, "", err
	}
	sends, err := checkPublishOffer(parsed)
	if err != nil {
		return nil, "", err
	}
	meta.Role = "publisher"
	if meta.Path == "" {
		meta.Path = DefaultPath
	}
	s := m.newSession(parsed, meta)
	s.pub = &publisher{s: s, sends: sends, ready: make(chan struct{}), stopCh: make(chan struct{})}
	if err := m.add(s); err != nil {
		s.cancel()
		return nil, "", err
	}
	st, release, err := m.paths.Publish(ctx, meta.Path, meta.Token)
	if err == nil {
		s.st, s.release = st, release
		var answer string
		if answer, err = s.pub.setup(ctx, offer); err == nil {
			m.total.Add(1)
			s.live.Store(true)
			go s.run()
			return s, answer, nil
		}
	}
	s.abort(err)
	return nil, "", err
}

// offerSends is what a publisher's offer sends.
type offerSends struct{ video, audio bool }

// checkPublishOffer accepts an offer that sends one H.264
// packetization-mode=1 video track and/or one Opus audio track; any other
// sending media section is refused with its reason (a VP8-only browser
// should learn why, not publish silently without video).
func checkPublishOffer(d *sdp.SessionDescription) (offerSends, error) {
	var out offerSends
	for _, md := range d.MediaDescriptions {
		kind := md.MediaName.Media
		if md.MediaName.Port.Value == 0 || (kind != "video" && kind != "audio") {
			continue
		}
		switch mediaDirection(d, md) {
		case "recvonly", "inactive":
			continue
		}
		codecs, h264Mode1, opus := offeredCodecs(md)
		switch kind {
		case "video":
			if out.video {
				return out, fmt.Errorf("%w: offer sends more than one video track", ErrBadOffer)
			}
			if !h264Mode1 {
				return out, fmt.Errorf("%w: video must be H.264 with packetization-mode=1 (offer has %s)", ErrBadOffer, codecList(codecs))
			}
			out.video = true
		case "audio":
			if out.audio {
				return out, fmt.Errorf("%w: offer sends more than one audio track", ErrBadOffer)
			}
			if !opus {
				return out, fmt.Errorf("%w: audio must be Opus (offer has %s)", ErrBadOffer, codecList(codecs))
			}
			out.audio = true
		}
	}
	if !out.video && !out.audio {
		return out, fmt.Errorf("%w: offer sends no audio or video (a WHIP offer is sendonly)", ErrBadOffer)
	}
	return out, nil
}

// mediaDirection is a media section's direction attribute, else the
// session's, else sendrecv (RFC 8866 §6.7).
func mediaDirection(d *sdp.SessionDescription, md *sdp.MediaDescription) string {
	for _, dir := range []string{"sendonly", "recvonly", "sendrecv", "inactive"} {
		if _, ok := md.Attribute(dir); ok {
			return dir
		}
	}
	for _, dir := range []string{"sendonly", "recvonly", "sendrecv", "inactive"} {
		if _, ok := d.Attribute(dir); ok {
			return dir
		}
	}
	return "sendrecv"
}

// offeredCodecs lists a media section's codec names and reports whether
// one is H.264 with packetization-mode=1 and whether one is Opus.
func offeredCodecs(md *sdp.MediaDescription) (names []string, h264Mode1, opus bool) {
	byPT := map[string]string{}
	seen := map[string]bool{}
	for _, a := range md.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		pt, enc, ok := strings.Cut(a.Value, " ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(enc, "/")
		byPT[pt] = name
		if u := strings.ToUpper(name); !seen[u] && u != "RTX" && u != "RED" && u != "ULPFEC" && u != "TELEPHONE-EVENT" && u != "CN" {
			seen[u] = true
			names = append(names, name)
		}
		if strings.EqualFold(name, "opus") {
			opus = true
		}
	}
	for _, a := range md.Attributes {
		if a.Key != "fmtp" {
			continue
		}
		pt, params, ok := strings.Cut(a.Value, " ")
		if !ok || !strings.EqualFold(byPT[pt], "H264") {
			continue
		}
		for _, p := range strings.Split(params, ";") {
			if k, v, _ := strings.Cut(strings.TrimSpace(p), "="); strings.EqualFold(k, "packetization-mode") && v == "1" {
				h264Mode1 = true
			}
		}
	}
	return names, h264Mode1, opus
}

func codecList(names []string) string {
	if len(names) == 0 {
		return "no codec"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// publisher is the receive side of a publisher session: it depacketizes
// what the peer sends and writes it into the path's stream.
type publisher struct {
	s     *Session
	sends offerSends

	videoSSRC atomic.Uint32 // 0 until the video track arrived
	// Counters (for logs and tests).
	plisSent, lostPackets, droppedAUs atomic.Uint64

	// ready is closed by run once the tracks are declared and the
	// timeline marked: track readers write nothing before (their first
	// write would land on the previous publisher's timeline). t0, the
	// origin of this publisher's timeline, is set before.
	ready    chan struct{}
	t0       time.Time
	stopCh   chan struct{} // closed by stop
	stopOnce sync.Once

	// sink is what the track readers write into: the path's stream (a
	// fake in tests).
	sink ingestSink

	mu      sync.Mutex
	stopped bool // no new track reader may start
	readers sync.WaitGroup
	tracks  map[webrtc.RTPCodecType]bool
}

// publisherAPI is the shared API's receive-side twin: the same codecs and
// the same UDP mux, with the interceptors a media receiver needs: receiver
// reports (loss and jitter for the publisher's encoder) and transport-wide
// congestion control feedback, without which a browser publisher that
// negotiated transport-cc holds its bitrate near its start value. It is
// built per publisher (publishers are few; it is cheap).
func (m *Manager) publisherAPI() (*webrtc.API, error) {
	lf := &pionLogFactory{log: m.log}
	me, err := newMediaEngine(false)
	if err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	rr, err := report.NewReceiverInterceptor(report.WithReceiverLoggerFactory(lf))
	if err != nil {
		return nil, err
	}
	reg.Add(rr)
	fb, err := twcc.NewSenderInterceptor(twcc.WithLoggerFactory(lf))
	if err != nil {
		return nil, err
	}
	reg.Add(fb)
	se, err := newSettingEngine(&m.cfg, m.mux, lf)
	if err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// ingestSink is the part of *media.Stream a publisher's track readers use.
type ingestSink interface {
	media.Writer
	RequestKeyframe()
}

// setup creates the peer connection and answers the offer.
func (p *publisher) setup(ctx context.Context, offer string) (string, error) {
	s := p.s
	api, err := s.m.publisherAPI()
	if err != nil {
		return "", fmt.Errorf("signaling: publisher API: %w", err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", fmt.Errorf("signaling: new peer connection: %w", err)
	}
	s.pc = pc
	// Nothing is written to a publisher but RTCP feedback, so there is no
	// write to gate on SRTP: connected is ready.
	s.watchPeer(pc, true)
	pc.OnTrack(p.onTrack)
	gathered, err := s.negotiate(pc, offer)
	if err != nil {
		return "", err
	}
	// pion leaves a section it has no codec for without one: an H.264
	// profile we do not take, say. Refuse rather than publish half.
	var ans sdp.SessionDescription
	if err := ans.UnmarshalString(pc.LocalDescription().SDP); err != nil {
		return "", fmt.Errorf("signaling: parsing our answer: %w", err)
	}
	var gotVideo, gotAudio bool
	for _, md := range ans.MediaDescriptions {
		if md.MediaName.Port.Value == 0 {
			continue
		}
		switch _, h264, opus := offeredCodecs(md); {
		case md.MediaName.Media == "video" && h264:
			gotVideo = true
		case md.MediaName.Media == "audio" && opus:
			gotAudio = true
		}
	}
	if p.sends.video && !gotVideo {
		return "", fmt.Errorf("%w: no H.264 profile in common (offer a constrained baseline, baseline, main or high profile with packetization-mode=1)", ErrBadOffer)
	}
	if p.sends.audio && !gotAudio {
		return "", fmt.Errorf("%w: no Opus format in common", ErrBadOffer)
	}
	return s.awaitAnswer(ctx, gathered)
}

// run is the publisher's part of Session.run once connected: it declares
// the tracks, marks the timeline discontinuity (so the stream's viewers see
// continuous timestamps across publishers), becomes the stream's keyframe
// requester and asks for keyframes while they are rare, until the session
// ends.
func (p *publisher) run() {
	s := p.s
	st := s.st
	var tracks media.Tracks
	if p.sends.video {
		tracks.Video = &media.VideoParams{}
	}
	if p.sends.audio {
		tracks.Audio = &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	}
	st.SetTracks(tracks)
	st.Discontinuity()
	if p.sends.video {
		st.SetKeyframeRequester(p.requestKeyframe)
	}
	p.t0 = time.Now()
	p.sink = st
	close(p.ready)

	tick := time.NewTicker(rareKeyframeCheck)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			if p.sends.video {
				st.SetKeyframeRequester(nil)
			}
			return
		case <-tick.C:
			if !p.sends.video {
				continue
			}
			if stats := st.Stats(); stats.Subscribers > 0 && time.Since(stats.LastKeyframeAt) > rareKeyframeAge {
				p.requestKeyframe()
			}
		}
	}
}

// stop waits for the track readers; the peer connection is closed already
// (its reads fail). Idempotent. After it returns nothing of this publisher
// writes into the stream, so the path may be released.
func (p *publisher) stop() {
	p.stopOnce.Do(func() { close(p.stopCh) })
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.readers.Wait()
}

// requestKeyframe sends a PLI for the video track (a no-op before the
// track arrived). It is the stream's keyframe requester: the stream rate
// limits its own calls.
func (p *publisher) requestKeyframe() {
	ssrc := p.videoSSRC.Load()
	if ssrc == 0 {
		return
	}
	if err := p.s.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err == nil {
		p.plisSent.Add(1)
	}
}

func (p *publisher) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	kind := tr.Kind()
	mime := tr.Codec().MimeType
	p.mu.Lock()
	defer p.mu.Unlock()
	// One reader per kind, for the kinds declared, while the session runs.
	if p.stopped || p.tracks[kind] || p.s.ctx.Err() != nil {
		return
	}
	switch {
	case kind == webrtc.RTPCodecTypeVideo && p.sends.video && strings.EqualFold(mime, webrtc.MimeTypeH264):
	case kind == webrtc.RTPCodecTypeAudio && p.sends.audio && strings.EqualFold(mime, webrtc.MimeTypeOpus):
	default:
		p.s.m.log.Warn("publisher track ignored", "id", p.s.id, "kind", kind.String(), "codec", mime)
		return
	}
	if p.tracks == nil {
		p.tracks = map[webrtc.RTPCodecType]bool{}
	}
	p.tracks[kind] = true
	p.readers.Add(1)
	go p.read(tr)
}

// rtpClock unwraps a track's 32-bit RTP timestamps and maps them onto the
// publisher's timeline: first-packet alignment. Each track's first packet
// is placed at its arrival time since the publisher connected, later ones
// at their RTP distance from it. Audio and video thus share an origin
// within the difference of their first packets' network and encoder
// delays (a few ms on a LAN), with no wait for RTCP sender reports.
type rtpClock struct {
	rate    int64
	started bool
	base    time.Duration // arrival of the first packet since t0
	first   int64
	last    uint32
	ext     int64
}

func (c *rtpClock) pts(ts uint32, arrival time.Duration) time.Duration {
	if !c.started {
		c.started, c.base, c.first, c.last, c.ext = true, arrival, int64(ts), ts, int64(ts)
	}
	c.ext += int64(int32(ts - c.last))
	c.last = ts
	d := c.ext - c.first
	return c.base + time.Duration(d/c.rate)*time.Second + time.Duration(d%c.rate)*time.Second/time.Duration(c.rate)
}

// read depacketizes one track into the stream until the track ends.
func (p *publisher) read(tr *webrtc.TrackRemote) {
	defer p.readers.Done()
	select {
	case <-p.ready:
	case <-p.stopCh:
		return
	}
	t0 := p.t0
	read := func() (*rtp.Packet, error) {
		pkt, _, err := tr.ReadRTP()
		return pkt, err
	}
	if tr.Kind() == webrtc.RTPCodecTypeVideo {
		p.videoSSRC.Store(uint32(tr.SSRC()))
		p.readVideo(read, t0)
	} else {
		p.readAudio(read, t0)
	}
}

func (p *publisher) readAudio(read func() (*rtp.Packet, error), t0 time.Time) {
	st := p.sink
	clock := rtpClock{rate: 48000}
	var lastSeq uint16
	have := false
	for {
		pkt, err := read()
		if err != nil {
			return
		}
		if have && int16(pkt.SequenceNumber-lastSeq) <= 0 {
			continue // duplicate or late
		}
		if have && pkt.SequenceNumber != lastSeq+1 {
			p.lostPackets.Add(uint64(pkt.SequenceNumber - lastSeq - 1))
		}
		have, lastSeq = true, pkt.SequenceNumber
		if len(pkt.Payload) == 0 {
			continue // padding only
		}
		st.WriteAudio(clock.pts(pkt.Timestamp, time.Since(t0)), pkt.Payload)
	}
}

// readVideo reassembles access units with gortsplib's RFC 6184 decoder
// (single NALU, STAP-A, FU-A). A lost packet damages its access unit and
// every picture predicted from it: the unit is dropped, a keyframe is
// requested, and nothing is written until an IDR arrives (viewers freeze
// on the last good picture instead of showing corruption).
func (p *publisher) readVideo(read func() (*rtp.Packet, error), t0 time.Time) {
	st := p.sink
	clock := rtpClock{rate: 90000}
	newDecoder := func() *rtph264.Decoder {
		d := &rtph264.Decoder{PacketizationMode: 1}
		_ = d.Init() // only fails for packetization mode 2
		return d
	}
	dec := newDecoder()
	var lastSeq uint16
	var prevTS uint32 // timestamp of the last packet fed to dec
	fed := false      // dec holds packets of prevTS
	have := false
	waitIDR := false  // after damage: drop until an IDR
	skipping := false // dropping the rest of a damaged access unit
	var skipTS uint32 // its timestamp
	damaged := func() {
		p.droppedAUs.Add(1)
		dec = newDecoder()
		fed = false
		if !waitIDR {
			waitIDR = true
			st.RequestKeyframe()
		}
	}
	for {
		pkt, err := read()
		if err != nil {
			return
		}
		arrival := time.Since(t0)
		if have && int16(pkt.SequenceNumber-lastSeq) <= 0 {
			continue // duplicate or late
		}
		if have && pkt.SequenceNumber != lastSeq+1 {
			p.lostPackets.Add(uint64(pkt.SequenceNumber - lastSeq - 1))
			damaged()
			// The lost packets may have been this unit's first ones.
			skipping, skipTS = true, pkt.Timestamp
		}
		have, lastSeq = true, pkt.SequenceNumber
		if skipping {
			if pkt.Timestamp == skipTS {
				continue
			}
			skipping = false
		}
		if len(pkt.Payload) == 0 {
			continue // padding only
		}
		auTS := pkt.Timestamp
		if fed && pkt.Timestamp != prevTS {
			auTS = prevTS // a unit completed by a timestamp change (no marker)
		}
		au, err := dec.Decode(pkt)
		prevTS, fed = pkt.Timestamp, true
		switch {
		case errors.Is(err, rtph264.ErrMorePacketsNeeded):
			continue
		case errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious):
			fed = false
			continue // joined mid-NALU: wait for the next start
		case err != nil:
			damaged()
			continue
		}
		if pkt.Marker && auTS == pkt.Timestamp {
			fed = false
		}
		if waitIDR {
			if !hasIDR(au) {
				continue
			}
			waitIDR = false
		}
		st.WriteH264(clock.pts(auTS, arrival), au)
	}
}

func hasIDR(au [][]byte) bool {
	for _, n := range au {
		if len(n) > 0 && n[0]&0x1f == 5 {
			return true
		}
	}
	return false
}
