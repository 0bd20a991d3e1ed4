package signaling

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	ilog "github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/internal/udpgso"
	"github.com/icey/icey-server/media"
)

// Session is one peer connection: a viewer (hub units → peer) or a
// publisher (peer → path's stream).
type Session struct {
	m         *Manager
	path      string        // the path it is attached to
	st        *media.Stream // that path's stream
	release   func()        // from the Router; called once when the session is gone
	id        string        // opaque: shown in status, events, metrics and logs
	selector  string        // resource capability, see newResource: never shown
	verifier  []byte
	client    string // clientKey(remote), for the per-client pending limit
	etag      string
	role      string
	remote    string
	createdAt time.Time

	pc           *webrtc.PeerConnection
	video, audio *viewerTrack
	pub          *publisher // the receive side of a publisher (role "publisher")
	remoteUfrag  string

	ctx    context.Context // canceled when the session ends
	cancel context.CancelFunc

	connected     chan struct{} // ICE+DTLS connected
	connectedOnce sync.Once
	srtpReady     chan struct{} // SRTP keys derived: writes are no longer dropped
	srtpOnce      sync.Once
	done          chan struct{}
	endOnce       sync.Once
	rtcpWG        sync.WaitGroup

	mu        sync.Mutex
	err       error
	onCand    func(*webrtc.ICECandidate)
	gathered  bool
	isActive  bool
	finalStat media.SubscriberStats

	sub atomic.Pointer[media.Subscriber]
	// The write side, owned by the session's pump, then (after the
	// handover, see fanout.go) by its shard's writer.
	vb, ab      *trackBinding
	gb          *udpgso.Batch
	sawKeyframe bool
	errLog      ilog.Limiter
	lastSeq     uint64 // Seq of the last unit written
	handover    uint64 // the shard writes units after this one
	// The shard the viewer was handed over to (nil before), and its drop
	// counter's value then; shardDrops is what it dropped there (set when
	// it leaves).
	shard                     atomic.Pointer[shard]
	fan                       *fanout
	inShard                   bool // in shard.viewers (under the shard's lock)
	shardDropBase, shardDrops uint64
	writeErrs                 atomic.Uint64
	// NACK answers, added when the RTCP reader ends (before rtcpWG.Done).
	retransmits, nackMisses atomic.Uint64
	live                    atomic.Bool // setup finished: visible to Manager.Session

	// Admission state, guarded by m.mu.
	pending, activeCounted bool
}

// ID is the opaque session id: safe to show (status, events, metrics,
// logs), useless for acting on the session.
func (s *Session) ID() string { return s.id }

// resource is the session's capability: the last element of its WHEP
// Location. Whoever holds it can PATCH and DELETE the session.
func (s *Session) resource() string { return s.selector + hex.EncodeToString(s.verifier) }

// Done is closed once the session has ended and released its resources.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err reports why the session ended (nil while it runs): one of
// ErrHandshakeTimeout, ErrConnectionFailed, ErrPeerClosed, ErrSourceClosed,
// or an error carrying the reason given to Close.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close hangs up the session with a reason (e.g. "hangup", "shutdown"). It
// does not wait; see Done.
func (s *Session) Close(reason string) {
	if reason == "" {
		reason = "hangup"
	}
	s.end(closeError(reason))
}

// closeError is the error of a session ended by Close: its text is the
// reason given (what a Symple call:hangup carries).
type closeError string

func (e closeError) Error() string { return string(e) }

// EndReason classifies why a session ended, for metrics and events: a
// bounded set, unlike the human-readable reason text.
type EndReason string

// End reasons.
const (
	EndHangup           EndReason = "hangup"            // the client or the app hung up (DELETE, call:hangup)
	EndShutdown         EndReason = "shutdown"          // the server is shutting down
	EndHandshakeTimeout EndReason = "handshake_timeout" // ICE/DTLS did not complete in time
	EndConnectionFailed EndReason = "connection_failed" // ICE or DTLS failed after connecting
	EndPeerClosed       EndReason = "peer_closed"       // the peer closed its side
	EndSourceClosed     EndReason = "source_closed"     // the stream it watched closed
	EndOther            EndReason = "other"
)

// ReasonOf classifies a session's Err.
func ReasonOf(err error) EndReason {
	var ce closeError
	switch {
	case errors.Is(err, ErrHandshakeTimeout):
		return EndHandshakeTimeout
	case errors.Is(err, ErrConnectionFailed):
		return EndConnectionFailed
	case errors.Is(err, ErrPeerClosed):
		return EndPeerClosed
	case errors.Is(err, ErrSourceClosed):
		return EndSourceClosed
	case errors.As(err, &ce) && ce == "shutdown":
		return EndShutdown
	case errors.As(err, &ce) && ce == "hangup":
		return EndHangup
	}
	return EndOther
}

// AddICECandidate adds a remote candidate trickled by the client.
func (s *Session) AddICECandidate(c webrtc.ICECandidateInit) error {
	return s.pc.AddICECandidate(c)
}

// OnLocalCandidate registers f for local candidates; nil means end of
// candidates. Gathering on the shared UDP mux completes before NewViewer
// returns and the answer already carries every candidate, so f is normally
// called once, synchronously, with nil.
func (s *Session) OnLocalCandidate(f func(*webrtc.ICECandidate)) {
	s.mu.Lock()
	s.onCand = f
	gathered := s.gathered
	s.mu.Unlock()
	if gathered && f != nil {
		f(nil)
	}
}

func (s *Session) end(err error) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		s.cancel()
	})
}

func (s *Session) info() SessionInfo {
	s.mu.Lock()
	state := "connecting"
	if s.isActive {
		state = "connected"
	}
	if s.err != nil {
		state = "closing"
	}
	st := s.finalStat
	s.mu.Unlock()
	if sub := s.sub.Load(); sub != nil {
		st = sub.Stats()
	} else if sh := s.shard.Load(); sh != nil {
		// Handed over: what the shard sent it since, and dropped.
		sh.mu.Lock()
		drops := s.shardDrops
		if s.inShard {
			drops = sh.dropped - s.shardDropBase
		}
		sh.mu.Unlock()
		st.Dropped += drops
		st.Sent, _ = s.sentCounts()
	}
	return SessionInfo{ID: s.id, Role: s.role, Path: s.path, Remote: s.remote, State: state,
		CreatedAt: s.createdAt, Sent: st.Sent, Drops: st.Dropped}
}

// NewViewer answers a viewer's (recvonly) offer and starts the session. The
// answer is returned only after ICE gathering completed (instant on the UDP
// mux), so clients without trickle ICE work. ctx bounds the setup only.
func (m *Manager) NewViewer(ctx context.Context, offer string, meta SessionMeta) (*Session, string, error) {
	parsed, err := checkOffer(offer)
	if err != nil {
		return nil, "", err
	}
	meta.Role = "viewer"
	if meta.Path == "" {
		meta.Path = DefaultPath
	}
	s := m.newSession(parsed, meta)
	if err := m.add(s); err != nil {
		s.cancel()
		return nil, "", err
	}
	// Resolve the path after admission: a first viewer of an on-demand
	// path waits here for its source (bounded by ctx), counted as pending.
	st, release, err := m.paths.View(ctx, meta.Path)
	if err == nil {
		s.release = release
		var relR func()
		if st, relR, err = m.chooseVideo(ctx, parsed, meta.Path, st); relR != nil {
			s.release = func() { relR(); release() }
		}
	}
	if err == nil {
		s.st = st
		tracks := st.Tracks()
		switch {
		case tracks.Video == nil && tracks.Audio == nil:
			err = fmt.Errorf("%w: the stream has no tracks yet", ErrNoSource)
		case !offerReceives(parsed, tracks):
			err = fmt.Errorf("%w: offer receives neither the stream's video nor its audio", ErrBadOffer)
		default:
			var answer string
			if answer, err = s.setup(ctx, tracks, offer, parsed); err == nil {
				m.total.Add(1)
				s.live.Store(true)
				go s.run()
				return s, answer, nil
			}
		}
	}
	s.abort(err)
	return nil, "", err
}

// newSession builds a session record (not yet admitted).
func (m *Manager) newSession(parsed *sdp.SessionDescription, meta SessionMeta) *Session {
	sel, ver := newResource()
	s := &Session{
		m: m, id: randomID(8), selector: sel, verifier: ver, client: clientKey(meta.Remote),
		path: meta.Path, etag: `"` + randomID(16) + `"`,
		role: meta.Role, remote: meta.Remote, createdAt: time.Now(),
		connected: make(chan struct{}), srtpReady: make(chan struct{}), done: make(chan struct{}),
		remoteUfrag: offerUfrag(parsed),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// abort undoes an admitted session whose setup failed.
func (s *Session) abort(err error) {
	s.end(err)
	if s.pc != nil {
		_ = s.pc.GracefulClose()
	}
	if s.pub != nil {
		s.pub.stop()
	}
	s.rtcpWG.Wait()
	s.m.remove(s)
	s.releasePath()
	close(s.done)
	s.m.wg.Done()
}

// releasePath hands the session's hold on its path back to the Router.
func (s *Session) releasePath() {
	if s.release != nil {
		s.release()
		s.release = nil
	}
}

// Path is the name of the path the session is attached to.
func (s *Session) Path() string { return s.path }
func (s *Session) setup(ctx context.Context, tracks media.Tracks, offer string, parsed *sdp.SessionDescription) (string, error) {
	m := s.m
	pc, err := m.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", fmt.Errorf("signaling: new peer connection: %w", err)
	}
	s.pc = pc
	streamID := "icey"
	type sent struct {
		tr  *viewerTrack
		snd *webrtc.RTPSender
	}
	var senders []sent
	if v := tracks.Video; v != nil {
		var profile byte
		if len(v.SPS) > 1 && v.VideoCodec() == media.CodecH264 {
			profile = v.SPS[1]
		}
		s.video = newViewerTrack(webrtc.RTPCodecTypeVideo, videoMime(v.VideoCodec()), profile, streamID, randomSeq())
		s.video.hist = &seqMap{}
		snd, err := pc.AddTrack(s.video)
		if err != nil {
			return "", fmt.Errorf("signaling: add video track: %w", err)
		}
		// Answer with the codec this viewer is sent only, not every codec
		// both sides know: a receiver may take the first one listed.
		for _, tr := range pc.GetTransceivers() {
			if tr.Sender() == snd {
				if err := tr.SetCodecPreferences(offerCodecs(parsed, s.video.mime)); err != nil {
					return "", fmt.Errorf("signaling: video codecs: %w", err)
				}
			}
		}
		senders = append(senders, sent{s.video, snd})
	}
	if a := tracks.Audio; a != nil {
		mime, ok := audioMime(a.Codec)
		if !ok {
			return "", fmt.Errorf("%w: audio codec %q", media.ErrUnsupportedCodec, a.Codec)
		}
		s.audio = newViewerTrack(webrtc.RTPCodecTypeAudio, mime, 0, streamID, randomSeq())
		snd, err := pc.AddTrack(s.audio)
		if err != nil {
			return "", fmt.Errorf("signaling: add audio track: %w", err)
		}
		senders = append(senders, sent{s.audio, snd})
	}
	s.watchPeer(pc, false)
	gathered, err := s.negotiate(pc, offer)
	if errors.Is(err, webrtc.ErrUnsupportedCodec) {
		return "", fmt.Errorf("%w: no codec in common with the stream (%s, %s)", ErrBadOffer, videoName(tracks), audioName(tracks))
	}
	if err != nil {
		return "", err
	}
	if (s.video == nil || s.video.bound() == nil) && (s.audio == nil || s.audio.bound() == nil) {
		return "", fmt.Errorf("%w: no codec in common with the stream (%s, %s)", ErrBadOffer, videoName(tracks), audioName(tracks))
	}
	// Read RTCP per sender: the video sender's carries the NACKs we answer,
	// and interceptors only see incoming RTCP when someone reads it.
	for _, x := range senders {
		if x.tr.bound() != nil { // an unanswered track has no RTCP
			s.rtcpWG.Add(1)
			go s.readRTCP(x.snd, x.tr)
		}
	}
	return s.awaitAnswer(ctx, gathered)
}

// watchPeer follows pc's connection state (connected, failed, closed) and
// hands its local candidates to the trickle callback. For a publisher,
// to which nothing but RTCP is written, connected also means ready.
func (s *Session) watchPeer(pc *webrtc.PeerConnection, connectedIsReady bool) {
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connectedOnce.Do(func() { close(s.connected) })
			if connectedIsReady {
				s.srtpOnce.Do(func() { close(s.srtpReady) })
			}
		case webrtc.PeerConnectionStateFailed:
			s.end(ErrConnectionFailed)
		case webrtc.PeerConnectionStateClosed:
			s.end(ErrPeerClosed)
		}
	})
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		s.mu.Lock()
		if c == nil {
			s.gathered = true
		}
		f := s.onCand
		s.mu.Unlock()
		if f != nil {
			f(c)
		}
	})
}

// negotiate applies the offer and sets the answer as the local
// description. It returns gathering's completion; a failure wraps
// ErrBadOffer (and webrtc.ErrUnsupportedCodec when that was the cause).
func (s *Session) negotiate(pc *webrtc.PeerConnection, offer string) (<-chan struct{}, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	return gathered, nil
}

// awaitAnswer waits for ICE gathering (instant on the UDP mux, so clients
// without trickle ICE get every candidate in the answer) and returns the
// answer.
func (s *Session) awaitAnswer(ctx context.Context, gathered <-chan struct{}) (string, error) {
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-s.ctx.Done():
		return "", fmt.Errorf("%w: %v", ErrClosed, s.Err())
	}
	return s.pc.LocalDescription().SDP, nil
}

// readRTCP feeds incoming RTCP through the interceptors and answers NACKs
// for tr (if it keeps a sequence map) until the sender stops. Its first
// call returns only once SRTP is ready, which is what gates the first media
// write (pion drops writes made before that, and "connected" can be
// reported slightly earlier).
func (s *Session) readRTCP(snd *webrtc.RTPSender, tr *viewerTrack) {
	defer s.rtcpWG.Done()
	if err := snd.SetReadDeadline(time.Time{}); err != nil {
		return
	}
	s.srtpOnce.Do(func() { close(s.srtpReady) })
	var rt *retransmitter
	if tr.hist != nil {
		rt = &retransmitter{t: tr, recent: s.st.RecentVideo, pli: s.st.RequestKeyframe}
		defer func() {
			s.retransmits.Add(rt.sent)
			s.nackMisses.Add(rt.missed)
		}()
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := snd.Read(buf)
		if err != nil {
			return
		}
		if rt != nil {
			rt.handleRTCP(buf[:n])
		}
	}
}

// run is the session's one goroutine: it waits for the handshake, then pumps
// hub packets to the peer (a publisher: runs its ingest, see publisher.run)
// until the session ends, then cleans up.
func (s *Session) run() {
	m := s.m
	timer := time.NewTimer(m.cfg.HandshakeTimeout)
	ready := false
	for !ready {
		select {
		case <-s.connected:
			select {
			case <-s.srtpReady:
				ready = true
			case <-timer.C:
				s.end(ErrHandshakeTimeout)
			case <-s.ctx.Done():
			}
		case <-timer.C:
			s.end(ErrHandshakeTimeout)
		case <-s.ctx.Done():
		}
		if s.ctx.Err() != nil {
			break
		}
	}
	timer.Stop()
	if ready && s.ctx.Err() == nil && m.promote(s) {
		s.mu.Lock()
		s.isActive = true
		s.mu.Unlock()
		m.log.Info("session connected", "id", s.id, "role", s.role, "remote", s.remote,
			"setup", time.Since(s.createdAt).Round(time.Millisecond))
		if m.cfg.Observer != nil {
			m.cfg.Observer.SessionStarted(s.info())
		}
		if s.pub != nil {
			s.pub.run()
		} else {
			s.pump()
			if s.shard.Load() != nil {
				// Handed over: the shard writes until the session ends,
				// and this goroutine is not needed till then.
				context.AfterFunc(s.ctx, s.finish)
				return
			}
		}
	}
	s.finish()
}

// finish cleans up after the session ended, in order: stop writing (leave
// the shard) and reading the hub, close the peer (which stops the RTCP
// readers), then forget the session.
func (s *Session) finish() {
	m := s.m
	defer m.wg.Done()
	m.leave(s)
	s.gb.Close()
	s.closeSub()
	_ = s.pc.GracefulClose()
	if s.pub != nil {
		s.pub.stop() // nothing of it writes into the stream after this
	}
	s.rtcpWG.Wait()
	m.remove(s) // releases the pending or active count
	s.releasePath()
	s.mu.Lock()
	s.isActive = false
	st := s.finalStat
	s.mu.Unlock()
	st.Dropped += s.shardDrops // set by leave, above
	pkts, bytes := s.sentCounts()
	m.endedPackets.Add(pkts)
	m.endedBytes.Add(bytes)
	m.endedDrops.Add(st.Dropped)
	reason := "ended"
	if err := s.Err(); err != nil {
		reason = err.Error()
	}
	m.log.Info("session ended", "id", s.id, "role", s.role, "remote", s.remote, "reason", reason,
		"duration", time.Since(s.createdAt).Round(time.Millisecond),
		"sent", pkts, "dropped", st.Dropped, "writeErrors", s.writeErrs.Load(),
		"retransmitted", s.retransmits.Load(), "nackMissed", s.nackMisses.Load())
	if m.cfg.Observer != nil {
		info := s.info()
		info.State = "closed"
		info.EndReason = ReasonOf(s.Err())
		m.cfg.Observer.SessionEnded(info, reason)
	}
	close(s.done)
}

// rtpHeaderLen is the fixed RTP header size counted in sentCounts' bytes.
const rtpHeaderLen = 12

// sentCounts is what the session's writer sent the peer: RTP packets, and
// bytes counting a fixed 12-byte header each (retransmissions not counted).
func (s *Session) sentCounts() (packets, bytes uint64) {
	for _, t := range []*viewerTrack{s.video, s.audio} {
		if t != nil {
			n := t.packets.Load()
			packets += n
			bytes += t.octets.Load() + n*rtpHeaderLen
		}
	}
	return packets, bytes
}

// pumpBatch is how many hub units one Read may return.
const pumpBatch = 64

// pump copies the packets of the hub's units to the peer's tracks from the
// session's own subscriber until the viewer is live (the cached GOP sent,
// paced), then hands the viewer over to its stream's shared fan-out (see
// fanout.go) and returns; or until the session ends.
func (s *Session) pump() {
	if s.video != nil {
		s.vb = s.video.bound()
	}
	if s.audio != nil {
		s.ab = s.audio.bound()
	}
	sub, err := s.st.Subscribe(s.id, media.SubscribeOptions{
		QueuePackets: s.m.cfg.SubscriberQueue,
		VideoOnly:    s.ab == nil,
		AudioOnly:    s.vb == nil,
	})
	if err != nil {
		s.end(fmt.Errorf("%w: %v", ErrSourceClosed, err))
		return
	}
	s.sub.Store(sub)
	s.errLog = ilog.Limiter{Interval: 10 * time.Second}
	buf := make([]*media.Unit, pumpBatch)
	pace := burstPacer{speed: s.m.cfg.CacheBurstSpeed}
	defer pace.stop()
	// What one Read returns leaves in as few system calls as the kernel
	// allows: the writes below are held by the media socket and sent at
	// Flush, a frame's equal-sized packets in one GSO send. Closed when the
	// session ends (run), not at the handover: the shard uses it too.
	s.gb = s.openBatch()
	for {
		n, err := sub.Read(s.ctx, buf)
		if err != nil {
			if s.ctx.Err() == nil {
				s.end(ErrSourceClosed)
			}
			return
		}
		s.gb.Begin()
		for i, u := range buf[:n] {
			buf[i] = nil
			// Cached units are paced by their (whole-frame) timestamps;
			// nothing is held while waiting.
			if u.FromCache {
				s.gb.Flush()
				if !pace.wait(s.ctx, u.Packets[0].RTP.Timestamp) {
					return
				}
				s.gb.Begin()
			}
			if !s.writeUnit(u) {
				s.gb.Flush()
				return
			}
		}
		s.gb.Flush()
		if !s.m.cfg.PerViewerPumps && (s.sawKeyframe || s.vb == nil) && s.m.join(s, sub) {
			s.closeSub() // the shard writes from now on
			return
		}
	}
}

// closeSub detaches the session's own subscriber, if any, keeping its
// final counters for info.
func (s *Session) closeSub() {
	sub := s.sub.Load()
	if sub == nil {
		return
	}
	st := sub.Stats()
	sub.Close()
	s.mu.Lock()
	s.finalStat = st
	s.mu.Unlock()
	s.sub.Store(nil)
}

// writeUnits writes units that follow the viewer's handover (the shard's
// writer calls it; see fanout.go).
func (s *Session) writeUnits(units []*media.Unit) {
	if s.ctx.Err() != nil {
		return
	}
	s.gb.Begin()
	for _, u := range units {
		if u.Seq <= s.handover {
			continue
		}
		if !s.writeUnit(u) {
			break
		}
	}
	s.gb.Flush()
}

// writeUnit writes one unit's packets to the track of its kind (if the
// viewer has one). false means the peer is gone (the session is ended).
// One goroutine at a time: the pump, then the shard.
func (s *Session) writeUnit(u *media.Unit) bool {
	s.lastSeq = u.Seq
	var tr *viewerTrack
	var b *trackBinding
	switch {
	case u.Kind == media.KindVideo && s.vb != nil:
		tr, b = s.video, s.vb
	case u.Kind == media.KindAudio && s.ab != nil:
		tr, b = s.audio, s.ab
	default:
		return true
	}
	for _, p := range u.Packets {
		werr := tr.write(b, p)
		if werr == nil {
			if !s.sawKeyframe && p.Keyframe && p.Kind == media.KindVideo {
				s.sawKeyframe = true
				if obs := s.m.cfg.Observer; obs != nil {
					obs.FirstKeyframe(s.id, time.Since(s.createdAt))
				}
			}
			continue
		}
		if errors.Is(werr, io.ErrClosedPipe) {
			s.end(ErrPeerClosed)
			return false
		}
		// Per-packet failures are counted and logged at most every 10 s.
		s.writeErrs.Add(1)
		if ok, held := s.errLog.Allow(time.Now()); ok {
			s.m.log.Warn("writing media to peer failed", "id", s.id, "err", werr, "count", held+1)
		}
	}
	return true
}

// openBatch registers the session's peer with the media socket's GSO
// coalescing when the peer is reached directly over UDP through the shared
// socket (not through a TURN relay, not over TCP). nil (no coalescing) is a
// valid *udpgso.Batch whose methods do nothing.
func (s *Session) openBatch() *udpgso.Batch {
	if s.m.gso == nil {
		return nil
	}
	pair, err := s.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local == nil || pair.Remote == nil {
		return nil
	}
	if pair.Remote.Protocol != webrtc.ICEProtocolUDP || pair.Local.Protocol != webrtc.ICEProtocolUDP ||
		pair.Remote.Typ == webrtc.ICECandidateTypeRelay || pair.Local.Typ != webrtc.ICECandidateTypeHost {
		return nil
	}
	ip, err := netip.ParseAddr(pair.Remote.Address)
	if err != nil || pair.Remote.Port == 0 {
		return nil
	}
	return s.m.gso.Open(netip.AddrPortFrom(ip, pair.Remote.Port))
}

// burstPacer spreads the cached-GOP burst: cached packets go out at most
// speed times faster than their media time (whole frames at once, so the
// keyframe still leaves immediately). Unpaced, a 4 s GOP leaves in a few
// milliseconds, overflows socket buffers on the way and comes back as NACKs;
// paced at ~8x the browser still shows the first picture at once and
// reaches the live edge after ~1/8 of the cache's age.
type burstPacer struct {
	speed   float64
	started bool
	t0      time.Time
	ts0     uint32
	timer   *time.Timer
}

// wait blocks until the cached packet with RTP timestamp ts is due. It
// returns false if ctx ended first.
func (b *burstPacer) wait(ctx context.Context, ts uint32) bool {
	if b.speed <= 0 {
		return true
	}
	if !b.started {
		b.started, b.t0, b.ts0 = true, time.Now(), ts
		return true
	}
	ahead := float64(int32(ts-b.ts0)) / 90000 / b.speed // H.264 RTP clock
	d := time.Until(b.t0.Add(time.Duration(ahead * float64(time.Second))))
	if d <= time.Millisecond {
		return true
	}
	if b.timer == nil {
		b.timer = time.NewTimer(d)
	} else {
		b.timer.Reset(d)
	}
	select {
	case <-b.timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (b *burstPacer) stop() {
	if b.timer != nil {
		b.timer.Stop()
	}
}

// checkOffer parses an offer enough to reject garbage with a clear reason
// before pion sees it.
func checkOffer(offer string) (*sdp.SessionDescription, error) {
	if strings.TrimSpace(offer) == "" {
		return nil, fmt.Errorf("%w: empty offer", ErrBadOffer)
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(offer); err != nil {
		return nil, fmt.Errorf("%w: malformed SDP: %v", ErrBadOffer, err)
	}
	if len(d.MediaDescriptions) == 0 {
		return nil, fmt.Errorf("%w: offer has no media sections", ErrBadOffer)
	}
	return &d, nil
}

// offerReceives reports whether the offer can receive a kind the stream has.
func offerReceives(d *sdp.SessionDescription, tr media.Tracks) bool {
	for _, md := range d.MediaDescriptions {
		if md.MediaName.Port.Value == 0 {
			continue
		}
		kind := md.MediaName.Media
		if !(kind == "video" && tr.Video != nil) && !(kind == "audio" && tr.Audio != nil) {
			continue
		}
		if _, ok := md.Attribute("sendonly"); ok {
			continue
		}
		if _, ok := md.Attribute("inactive"); ok {
			continue
		}
		return true
	}
	return false
}

// offerUfrag returns the offer's ICE username fragment (session or first
// media level), used to tell trickle from ICE restart in PATCH.
func offerUfrag(d *sdp.SessionDescription) string {
	if v, ok := d.Attribute("ice-ufrag"); ok {
		return v
	}
	for _, md := range d.MediaDescriptions {
		if v, ok := md.Attribute("ice-ufrag"); ok {
			return v
		}
	}
	return ""
}

func audioMime(codec string) (string, bool) {
	switch strings.ToLower(codec) {
	case strings.ToLower(media.CodecOpus):
		return webrtc.MimeTypeOpus, true
	case strings.ToLower(media.CodecPCMU):
		return webrtc.MimeTypePCMU, true
	case strings.ToLower(media.CodecPCMA):
		return webrtc.MimeTypePCMA, true
	}
	return "", false
}

func videoName(tr media.Tracks) string {
	switch c := tr.Video.VideoCodec(); {
	case tr.Video == nil:
		return "no video"
	case c == media.CodecH264:
		return "H.264 packetization-mode=1"
	default:
		return c
	}
}

func audioName(tr media.Tracks) string {
	if tr.Audio == nil {
		return "no audio"
	}
	return tr.Audio.Codec
}

// randomSeq starts each viewer track at a random sequence number (RFC 3550
// §5.1) so a known-plaintext attack on SRTP gains nothing.
func randomSeq() uint16 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint16(b[:])
}
