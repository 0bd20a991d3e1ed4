package media

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icey/icey-server/internal/logging"
)

// Defaults of StreamConfig and SubscribeOptions.
const (
	DefaultMaxPayload        = 1200
	DefaultGOPCacheMaxBytes  = 8 << 20
	DefaultQueuePackets      = 1024
	DefaultRetransmitPackets = 4096

	// minMaxPayload keeps FU-A fragments meaningful (2 header bytes + data).
	minMaxPayload = 64
)

// RTP payload types the hub stamps on its packets. The session layer
// rewrites them to whatever was negotiated (pion's TrackLocalStaticRTP does).
const (
	PayloadTypeH264 = 96
	PayloadTypeVP8  = 97
	PayloadTypeH265 = 98
	PayloadTypeOpus = 111
	PayloadTypePCMU = 0
	PayloadTypePCMA = 8
)

// StreamConfig configures a Stream. The zero value is usable.
type StreamConfig struct {
	// Name identifies the stream in logs and stats.
	Name string
	// MaxPayload bounds every RTP payload in bytes (default 1200): with the
	// RTP, SRTP, UDP and IP headers this stays below common path MTUs, which
	// browsers need (they drop nothing, but larger packets get fragmented or
	// lost on tunnels).
	MaxPayload int
	// GOPCacheMaxBytes bounds the payload bytes of the cached GOP (default
	// 8 MiB). A GOP that grows past it is dropped from the cache until the
	// next keyframe, so new subscribers then wait for a live keyframe.
	GOPCacheMaxBytes int
	// RetransmitPackets is how many of the latest video packets the stream
	// keeps for answering viewers' NACKs (default 4096, rounded up to a
	// power of two, max 32768). Every viewer is sent the same packets, so
	// one history per stream serves them all (RecentVideo); it must hold a
	// cached GOP burst: a 4 s GOP at 2 Mb/s is ~900 packets.
	RetransmitPackets int
	// RingDuration is how much history of published units the stream's Ring
	// keeps (default 10 s): the pre-roll a recorder or a clip can start
	// with. The ring evicts whole GOPs, so it holds between RingDuration and
	// RingDuration plus one GOP, and always the latest GOP (for new
	// subscribers) whatever its age. See Ring.
	RingDuration time.Duration
	// RingMaxBytes bounds the memory of the Ring (default 32 MiB, at least
	// GOPCacheMaxBytes): the bytes of the held units' buffers, i.e. their RTP
	// payloads plus the copies of NALUs too large for one packet (a 2 Mb/s
	// stream takes ~5 MB for 10 s). Past it the oldest GOP goes first.
	RingMaxBytes int
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxPayload < minMaxPayload {
		c.MaxPayload = minMaxPayload
	}
	if c.GOPCacheMaxBytes <= 0 {
		c.GOPCacheMaxBytes = DefaultGOPCacheMaxBytes
	}
	if c.RetransmitPackets <= 0 {
		c.RetransmitPackets = DefaultRetransmitPackets
	}
	c.RetransmitPackets = pow2(min(c.RetransmitPackets, 1<<15))
	if c.RingDuration <= 0 {
		c.RingDuration = DefaultRingDuration
	}
	if c.RingMaxBytes <= 0 {
		c.RingMaxBytes = DefaultRingMaxBytes
	}
	c.RingMaxBytes = max(c.RingMaxBytes, c.GOPCacheMaxBytes)
	return c
}

// Stream is the hub of one source: the source writes access units and audio
// frames, the Stream normalizes and packetizes them once and hands the shared
// Unit (payload and packets) to its Ring and to every subscriber's bounded
// queue without blocking. It owns no goroutine. Write* are meant to be called from one source goroutine at a
// time; everything else is safe for concurrent use.
type Stream struct {
	cfg StreamConfig
	log *slog.Logger
	now func() time.Time // injectable clock for the FPS window

	sup atomic.Pointer[Supervisor] // set by NewSupervisor, for Stats

	mu          sync.Mutex
	closed      bool
	done        chan struct{} // closed by Close
	tracksReady chan struct{} // closed by the first SetTracks
	tracksSet   bool
	tracks      Tracks // Video.SPS/PPS are kept equal to sps/pps
	sps, pps    []byte
	vps         []byte // H.265

	// What the bitstream says of the video (VideoInfo).
	info        VideoInfo
	infoStale   bool // sps changed since info was computed
	reorderSeen bool // a pts went backwards within a run

	// Timeline: output media time = pts + offset, one offset for both
	// kinds so that A/V sync survives Discontinuity.
	timeInit  bool
	rebase    bool
	offset    time.Duration
	vLastOut  time.Duration // media time of the latest video published
	aLastOut  time.Duration // media time of the latest audio published
	vOut      bool          // some video was published
	aOut      bool          // some audio was published
	vLastPTS  time.Duration
	aLastPTS  time.Duration
	vHavePTS  bool
	aHavePTS  bool
	vFrameDur time.Duration // measured spacing of access units
	aFrameDur time.Duration // measured spacing of audio frames
	waitIDR   bool          // drop video until an IDR (start, after Discontinuity)

	vSeq, aSeq       uint16
	vSSRC, aSSRC     uint32
	vTSBase, aTSBase uint32

	// ring is the history of published units: GOP cache, NACK history by
	// sequence number, pre-roll. Pushed to under mu.
	ring *Ring

	subs []*Subscriber
	// unitSeq numbers published units (Unit.Seq).
	unitSeq uint64
	// clocks map each kind's RTP timestamps to wall-clock time: the latest
	// unit's first timestamp and when it was published (RTPClock).
	clocks [2]rtpClock

	// Keyframe requests (a publisher's PLI), rate limited; no lock.
	kfReq  atomic.Pointer[func()]
	kfLast atomic.Int64 // s.now() in unix nanos of the latest request sent

	// Scratch reused across writes so that the hot path does not allocate
	// beyond the units themselves.
	nalus [][]byte
	plan  []segment

	mediaCh chan struct{} // closed at the next publish (supervisor's "up" signal)

	packetsIn   uint64
	bytesIn     uint64
	lastMediaAt time.Time
	lastKeyAt   time.Time
	auTimes     [128]int64 // unix nanos of recent video AUs, ring
	auNext      int
	auCount     int

	skipNoParams rateWarn

	// check follows H.264 parameter sets and the reference chain, so that
	// only decodable access units are forwarded (h264check.go).
	check         h264Check
	invalidVideo  uint64 // access units dropped as not decodable
	lastInvalid   string
	lastInvalidAt time.Time
	invalidWarn   rateWarn
}

// NewStream returns an empty stream. log may be nil.
func NewStream(cfg StreamConfig, log *slog.Logger) *Stream {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Stream{
		cfg:         cfg,
		log:         log.With("module", "media", "stream", cfg.Name),
		now:         time.Now,
		done:        make(chan struct{}),
		tracksReady: make(chan struct{}),
		waitIDR:     true,
		vSeq:        uint16(rand.Uint32()),
		aSeq:        uint16(rand.Uint32()),
		vSSRC:       rand.Uint32(),
		aSSRC:       rand.Uint32(),
		vTSBase:     rand.Uint32(),
		aTSBase:     rand.Uint32(),
		ring:        newRing(cfg),
	}
	return s
}

// Name returns the configured stream name.
func (s *Stream) Name() string { return s.cfg.Name }

// Config returns the effective configuration (defaults applied).
func (s *Stream) Config() StreamConfig { return s.cfg }

// SetTracks declares what the source carries. Sources call it at the start
// of each run; SPS/PPS given here seed the parameter sets (in-band ones
// override them later).
func (s *Stream) SetTracks(t Tracks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	prev := s.tracks.Video.VideoCodec()
	s.tracks = Tracks{}
	if t.Video != nil {
		if t.Video.VideoCodec() != prev {
			// Another codec: the old parameter sets mean nothing to it.
			s.sps, s.pps, s.vps = nil, nil, nil
			s.info = VideoInfo{}
		}
		s.paramsChangedLocked()
		if len(t.Video.VPS) > 0 {
			s.vps = clone(t.Video.VPS)
		}
		if len(t.Video.SPS) > 0 {
			s.sps = clone(t.Video.SPS)
		}
		if len(t.Video.PPS) > 0 {
			s.pps = clone(t.Video.PPS)
		}
		if t.Video.VideoCodec() == CodecH264 {
			// Out-of-band parameter sets (SDP, avcC) are the ones in use; a
			// bad one is reported by the slices that need it.
			s.check.commitParams(s.sps, s.pps)
		}
		s.tracks.Video = &VideoParams{Codec: t.Video.VideoCodec(), SPS: s.sps, PPS: s.pps, VPS: s.vps}
	} else {
		// No video in this run (an audio-only publisher): what was known
		// of an earlier one's video is not this run's.
		s.sps, s.pps, s.vps = nil, nil, nil
		s.info = VideoInfo{}
		s.infoStale = false
	}
	if t.Audio != nil {
		a := *t.Audio
		s.tracks.Audio = &a
	}
	if !s.tracksSet {
		s.tracksSet = true
		close(s.tracksReady)
	}
}

// Tracks returns a copy of the declared tracks (zero until SetTracks); the
// video SPS/PPS are the latest known, including ones learned in-band.
func (s *Stream) Tracks() Tracks {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tracksCopyLocked()
}

func (s *Stream) tracksCopyLocked() Tracks {
	var t Tracks
	if s.tracks.Video != nil {
		t.Video = &VideoParams{Codec: s.tracks.Video.Codec, SPS: clone(s.sps), PPS: clone(s.pps), VPS: clone(s.vps)}
	}
	if s.tracks.Audio != nil {
		a := *s.tracks.Audio
		t.Audio = &a
	}
	return t
}

// WaitTracks blocks until the source declared its tracks, ctx is done
// (ctx.Err()) or the stream closed (ErrClosed).
func (s *Stream) WaitTracks(ctx context.Context) (Tracks, error) {
	select {
	case <-s.tracksReady:
		return s.Tracks(), nil
	default:
	}
	select {
	case <-s.tracksReady:
		return s.Tracks(), nil
	case <-s.done:
		return Tracks{}, ErrClosed
	case <-ctx.Done():
		return Tracks{}, ctx.Err()
	}
}

// Discontinuity tells the stream that the next pts values start a new
// timeline (source restarted, file looped). Output RTP timestamps continue
// one frame duration after the last published frame (of the track that
// ended last), with one offset shared by audio and video so that A/V sync
// holds; sequence numbers just
// continue. Video resumes at the next IDR and the GOP cache is dropped (its
// pictures belong to the old run).
func (s *Stream) Discontinuity() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timeInit {
		s.rebase = true
	}
	s.vHavePTS, s.aHavePTS = false, false
	s.waitIDR = true
	s.check.reset()
	s.ring.dropGOP()
}

// invalidVideoLocked drops video until the next IDR after an access unit
// that is not decodable, and counts it.
func (s *Stream) invalidVideoLocked(err error) {
	now := s.now()
	s.invalidVideo++
	s.lastInvalid, s.lastInvalidAt = err.Error(), now
	s.waitIDR = true
	s.check.reset()
	s.invalidWarn.hit(s.log, "video dropped until the next keyframe: "+err.Error(), now)
}

// mediaTimeLocked maps a source pts onto the stream's continuous timeline.
func (s *Stream) mediaTimeLocked(pts time.Duration) time.Duration {
	switch {
	case !s.timeInit:
		s.timeInit = true
		s.offset = -pts
	case s.rebase:
		s.rebase = false
		s.offset = s.resumeAtLocked() - pts
	}
	return pts + s.offset
}

// resumeAtLocked is where the new timeline starts after a Discontinuity:
// one frame after the last frame of each track, whichever is later, so
// that no track's timestamps overlap the previous run's.
func (s *Stream) resumeAtLocked() time.Duration {
	var at time.Duration
	if s.vOut {
		at = s.vLastOut + orDefault(s.vFrameDur, time.Second/30)
	}
	if s.aOut {
		at = max(at, s.aLastOut+orDefault(s.aFrameDur, 20*time.Millisecond))
	}
	return at
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// WriteAudio publishes one encoded audio frame as one RTP packet. Frames
// written before SetTracks declared an audio track are dropped.
func (s *Stream) WriteAudio(pts time.Duration, frame []byte) {
	if len(frame) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.tracks.Audio == nil {
		return
	}
	a := s.tracks.Audio
	rate := a.ClockRate
	if rate == 0 {
		rate = defaultClockRate(a.Codec)
	}
	if s.aHavePTS {
		if d := pts - s.aLastPTS; d > 0 && d < time.Second {
			s.aFrameDur = d
		}
	}
	s.aLastPTS, s.aHavePTS = pts, true
	mt := s.mediaTimeLocked(pts)

	// Copy: the caller may reuse its buffer, the unit lives on in queues
	// and in the ring. The frame is both the payload and the packet's.
	buf := make([]byte, len(frame))
	copy(buf, frame)
	u, pk, pl := allocUnit(1, 1)
	p := &pk[0]
	p.Kind = KindAudio
	p.RTP.Header = rtpHeader(audioPayloadType(a.Codec), s.aSeq, s.aTSBase+rtpTime(mt, rate), s.aSSRC, false)
	p.RTP.Payload = buf
	s.aSeq++
	pl[0] = buf
	u.Kind, u.Codec, u.PTS = KindAudio, a.Codec, mt
	u.wire, u.mem = len(buf), len(buf)
	s.publishLocked(u)
}

// unitAlloc is a unit with room for one packet and a few NALUs: audio
// frames and small pictures take one allocation besides their bytes.
type unitAlloc struct {
	u  Unit
	pk [1]Packet
	pp [1]*Packet
	pl [unitAllocNALUs][]byte
}

const unitAllocNALUs = 4

// allocUnit returns a zero Unit whose Packets point at the npk packets
// returned and whose Payload is the nnal-long slice returned.
func allocUnit(npk, nnal int) (*Unit, []Packet, [][]byte) {
	var (
		u   *Unit
		pk  []Packet
		pp  []*Packet
		pl  [][]byte
		blk *unitAlloc
	)
	if npk == 1 || nnal <= unitAllocNALUs {
		blk = &unitAlloc{}
		u = &blk.u
	} else {
		u = &Unit{}
	}
	if npk == 1 {
		pk, pp = blk.pk[:], blk.pp[:]
	} else {
		pk, pp = make([]Packet, npk), make([]*Packet, npk)
	}
	if nnal <= unitAllocNALUs {
		pl = blk.pl[:nnal:nnal]
	} else {
		pl = make([][]byte, nnal)
	}
	for i := range pk {
		pp[i] = &pk[i]
	}
	u.Packets, u.Payload = pp, pl
	return u, pk, pl
}

// publishLocked updates counters and hands a unit to the ring and the
// subscribers.
func (s *Stream) publishLocked(u *Unit) {
	s.unitSeq++
	u.Seq = s.unitSeq
	now := s.now()
	if k := int(u.Kind); k >= 0 && k < len(s.clocks) && len(u.Packets) > 0 {
		s.clocks[k] = rtpClock{ts: u.Packets[0].RTP.Timestamp, at: now, ok: true}
	}
	s.packetsIn += uint64(len(u.Packets))
	s.bytesIn += uint64(u.wire)
	s.lastMediaAt = now
	if u.Kind == KindAudio {
		s.aLastOut, s.aOut = u.PTS, true
	}
	if u.Kind == KindVideo {
		if u.Keyframe {
			s.lastKeyAt = now
		}
		s.vLastOut, s.vOut = u.PTS, true
		s.auTimes[s.auNext] = now.UnixNano()
		s.auNext = (s.auNext + 1) % len(s.auTimes)
		if s.auCount < len(s.auTimes) {
			s.auCount++
		}
	}
	if s.mediaCh != nil {
		close(s.mediaCh)
		s.mediaCh = nil
	}
	s.ring.push(u)
	for _, sub := range s.subs {
		sub.push(u)
	}
}

// rtpClock is one RTP timestamp of a track and the time it was published.
type rtpClock struct {
	ts uint32
	at time.Time
	ok bool
}

// RTPClock maps the RTP timestamps of the stream's track of kind to
// wall-clock time: the first timestamp of the latest unit published and
// when. Every viewer of the stream is sent these timestamps, so this is what
// their RTCP sender reports carry (the RTP time at another instant follows
// from the track's clock rate). ok is false before the first unit.
func (s *Stream) RTPClock(kind Kind) (ts uint32, at time.Time, ok bool) {
	k := int(kind)
	if k < 0 || k >= len(s.clocks) {
		return 0, time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clocks[k]
	return c.ts, c.at, c.ok
}

// RecentVideo returns the published video packet with hub sequence number
// seq while the stream's retransmission history (the Ring's sequence index,
// the latest RetransmitPackets video packets) still holds it, else nil.
// Safe for concurrent use and lock-free; the packet is shared and must not
// be modified.
func (s *Stream) RecentVideo(seq uint16) *Packet { return s.ring.Video(seq) }

// Ring returns the stream's history of published units.
func (s *Stream) Ring() *Ring { return s.ring }

// Units is s.Ring().Units(since): the held units from the keyframe at or
// before PTS since.
func (s *Stream) Units(since time.Duration) []*Unit { return s.ring.Units(since) }

// keyframeRequestInterval rate-limits RequestKeyframe.
const keyframeRequestInterval = 500 * time.Millisecond

// SetKeyframeRequester registers f, which asks the stream's publisher for a
// keyframe (e.g. sends a PLI to its peer); nil clears it. A new requester
// is not rate-limited by requests made to the previous one.
func (s *Stream) SetKeyframeRequester(f func()) {
	if f == nil {
		s.kfReq.Store(nil)
		return
	}
	s.kfLast.Store(0)
	s.kfReq.Store(&f)
}

// RequestKeyframe asks the publisher for a keyframe: it calls the function
// registered with SetKeyframeRequester, at most once per 500 ms (later
// calls within that window are dropped), on the caller's goroutine without
// holding the stream's locks. A no-op when none is registered (a pulled
// source sends keyframes at its own pace). The stream calls it itself when
// a video subscriber has to wait for a live keyframe (no usable cached GOP).
func (s *Stream) RequestKeyframe() {
	f := s.kfReq.Load()
	if f == nil {
		return
	}
	now := s.now().UnixNano()
	for {
		last := s.kfLast.Load()
		if last != 0 && now-last < int64(keyframeRequestInterval) && now >= last {
			return
		}
		if s.kfLast.CompareAndSwap(last, now) {
			break
		}
	}
	(*f)()
}

// mediaSignal returns a channel closed when the next packet is published.
func (s *Stream) mediaSignal() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mediaCh == nil {
		s.mediaCh = make(chan struct{})
	}
	return s.mediaCh
}

// Subscribe adds a subscriber. Its queue starts with the cached GOP
// (FromCache copies of the video units since the latest keyframe) unless
// o.NoCache, in which case its video starts at the next live keyframe, as
// it does when there is no usable cached GOP; then the stream also asks the
// publisher for a keyframe (RequestKeyframe). Audio is live only. It fails
// with ErrNoTracks before the source declared its tracks and ErrClosed
// after Close.
func (s *Stream) Subscribe(id string, o SubscribeOptions) (*Subscriber, error) {
	sub, needKey, err := s.subscribe(id, o)
	if needKey {
		s.RequestKeyframe()
	}
	return sub, err
}

func (s *Stream) subscribe(id string, o SubscribeOptions) (sub *Subscriber, needKey bool, err error) {
	if o.VideoOnly && o.AudioOnly {
		return nil, false, errors.New("media: VideoOnly and AudioOnly are exclusive")
	}
	if o.QueuePackets <= 0 {
		o.QueuePackets = DefaultQueuePackets
	}
	// Each queued unit has at least one packet: QueuePackets slots hold any
	// queue within the bound.
	sub = &Subscriber{
		id:     id,
		st:     s,
		video:  !o.AudioOnly,
		audio:  !o.VideoOnly,
		ring:   make([]*Unit, o.QueuePackets),
		notify: make(chan struct{}, 1),
		group:  o.Group,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	if !s.tracksSet {
		return nil, false, ErrNoTracks
	}
	if sub.video && !o.Live {
		if !o.NoCache {
			sub.burst, sub.burstPkts = s.ring.gop()
		}
		if len(sub.burst) == 0 {
			sub.burst, sub.burstPkts = nil, 0
			sub.waitKey = true // initial wait: not counted as drops
			needKey = s.tracks.Video != nil
		}
	}
	s.subs = append(s.subs, sub)
	return sub, needKey, nil
}

func (s *Stream) removeSub(sub *Subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.subs {
		if x == sub {
			copy(s.subs[i:], s.subs[i+1:])
			s.subs[len(s.subs)-1] = nil
			s.subs = s.subs[:len(s.subs)-1]
			return
		}
	}
}

// Stats returns a snapshot. The source state fields come from the
// Supervisor attached to this stream, if any.
func (s *Stream) Stats() StreamStats {
	var st StreamStats
	sup := s.sup.Load()
	if sup != nil {
		ss := sup.Status()
		st.State, st.StateSince, st.LastError, st.Reconnects = ss.State, ss.Since, ss.LastError, ss.Reconnects
	}
	s.mu.Lock()
	if sup == nil {
		switch {
		case s.closed:
			st.State = SourceStopped
		case s.lastMediaAt.IsZero():
			st.State = SourceStarting
		default:
			st.State = SourceUp
		}
	}
	st.FPS = s.fpsLocked(s.now())
	st.Tracks = s.tracksCopyLocked()
	st.PacketsIn = s.packetsIn
	st.BytesIn = s.bytesIn
	st.LastMediaAt = s.lastMediaAt
	st.LastKeyframeAt = s.lastKeyAt
	st.InvalidVideo, st.LastInvalidVideo, st.LastInvalidVideoAt = s.invalidVideo, s.lastInvalid, s.lastInvalidAt
	st.Viewers = make([]SubscriberStats, 0, len(s.subs))
	var groups []func() []SubscriberStats
	for _, sub := range s.subs {
		if sub.group != nil {
			groups = append(groups, sub.group)
			continue
		}
		st.Viewers = append(st.Viewers, sub.Stats())
	}
	s.mu.Unlock()
	for _, g := range groups {
		st.Viewers = append(st.Viewers, g()...)
	}
	st.Subscribers = len(st.Viewers)
	return st
}

// fpsWindow is the span over which FPS is measured.
const fpsWindow = 2 * time.Second

func (s *Stream) fpsLocked(now time.Time) float64 {
	if s.auCount < 2 {
		return 0
	}
	n := len(s.auTimes)
	newest := s.auTimes[(s.auNext-1+n)%n]
	if now.UnixNano()-newest > int64(fpsWindow) {
		return 0
	}
	cut := now.UnixNano() - int64(fpsWindow)
	count, oldest := 1, newest
	for i := 2; i <= s.auCount; i++ {
		t := s.auTimes[(s.auNext-i+n)%n]
		if t < cut {
			break
		}
		count, oldest = i, t
	}
	if count < 2 || newest == oldest {
		return 0
	}
	return float64(count-1) / (float64(newest-oldest) / 1e9)
}

// Close ends the stream: every subscriber's Read returns ErrClosed, later
// writes are ignored and Subscribe fails with ErrClosed. Idempotent.
func (s *Stream) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	subs := s.subs
	s.subs = nil
	s.ring.reset()
	s.mu.Unlock()
	for _, sub := range subs {
		sub.close()
	}
}

// Done is closed when the stream is closed.
func (s *Stream) Done() <-chan struct{} { return s.done }

// pow2 rounds n (>= 1) up to a power of two.
func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func defaultClockRate(codec string) uint32 {
	if codec == CodecOpus {
		return 48000
	}
	return 8000
}

func audioPayloadType(codec string) uint8 {
	switch codec {
	case CodecPCMU:
		return PayloadTypePCMU
	case CodecPCMA:
		return PayloadTypePCMA
	default:
		return PayloadTypeOpus
	}
}

// rtpTime converts a media time to RTP clock units, rounded, without the
// overflow that d*rate would hit after a day or so.
func rtpTime(d time.Duration, rate uint32) uint32 {
	sec := int64(d / time.Second)
	rem := int64(d % time.Second)
	r := int64(rate)
	frac := (rem*r + int64(time.Second)/2) / int64(time.Second)
	if rem < 0 {
		frac = (rem*r - int64(time.Second)/2) / int64(time.Second)
	}
	return uint32(sec*r + frac)
}

// rateWarn aggregates a hot-path warning to at most one log line per second;
// "count" is the number of hits the line stands for (itself included).
type rateWarn struct{ limit logging.Limiter }

func (w *rateWarn) hit(log *slog.Logger, msg string, now time.Time) {
	if ok, held := w.limit.Allow(now); ok {
		log.Warn(msg, "count", held+1)
	}
}
