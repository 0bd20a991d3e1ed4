package signaling

import (
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
)

// viewerTrack is a per-viewer TrackLocal that writes the hub's shared packets
// with this viewer's SSRC, payload type and its own continuous sequence
// numbers (so packets the hub dropped for this viewer leave no gap the
// browser would NACK or conceal). The shared media.Packet is never mutated:
// the header is copied into one reused per-track header (nothing down the
// write path keeps it), so a write allocates nothing here.
type viewerTrack struct {
	kind     webrtc.RTPCodecType
	mime     string // media codec this track carries (webrtc MIME type)
	profile  byte   // H.264 profile_idc of the stream (0 unknown)
	id       string
	streamID string

	mu      sync.Mutex
	binding *trackBinding

	// hist maps sent sequence numbers to hub packets for NACKs (video
	// only; nil when the track is not retransmitted).
	hist *seqMap

	// Owned by the session's writer (its pump, then its shard).
	seq uint16
	hdr rtp.Header

	// What was sent, for the RTCP sender reports (reports.go): packets and
	// payload octets written by the writer, and retransmitted.
	packets, octets       atomic.Uint64
	rtxPackets, rtxOctets atomic.Uint64
}

type trackBinding struct {
	id    string
	ssrc  uint32
	pt    uint8
	clock uint32 // the codec's RTP clock rate
	write webrtc.TrackLocalWriter
}

func newViewerTrack(kind webrtc.RTPCodecType, mime string, profile byte, streamID string, seq uint16) *viewerTrack {
	return &viewerTrack{kind: kind, mime: mime, profile: profile, id: kind.String(), streamID: streamID, seq: seq}
}

func (t *viewerTrack) ID() string                { return t.id }
func (t *viewerTrack) RID() string               { return "" }
func (t *viewerTrack) StreamID() string          { return t.streamID }
func (t *viewerTrack) Kind() webrtc.RTPCodecType { return t.kind }

// Bind picks the negotiated codec to send with: same MIME type, and for H.264
// packetization-mode=1 with the stream's profile if the browser accepted
// it, else constrained baseline, else any mode-1 format (decoders do not
// enforce the signalled profile).
func (t *viewerTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	var best webrtc.RTPCodecParameters
	bestScore := -1
	for _, c := range ctx.CodecParameters() {
		if !strings.EqualFold(c.MimeType, t.mime) {
			continue
		}
		score := 0
		if strings.EqualFold(t.mime, webrtc.MimeTypeH264) {
			pm, plid := h264Fmtp(c.SDPFmtpLine)
			if pm != "1" {
				continue
			}
			switch {
			case len(plid) >= 2 && t.profile != 0 && plid[0] == t.profile:
				score = 3
			case len(plid) >= 2 && plid[0] == 0x42 && plid[1]&0x40 != 0:
				score = 2
			default:
				score = 1
			}
		}
		if score > bestScore {
			best, bestScore = c, score
		}
	}
	if bestScore < 0 {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	t.mu.Lock()
	t.binding = &trackBinding{id: ctx.ID(), ssrc: uint32(ctx.SSRC()), pt: uint8(best.PayloadType),
		clock: best.ClockRate, write: ctx.WriteStream()}
	t.mu.Unlock()
	return best, nil
}

func (t *viewerTrack) Unbind(ctx webrtc.TrackLocalContext) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.binding != nil && t.binding.id == ctx.ID() {
		t.binding = nil
	}
	return nil
}

func (t *viewerTrack) bound() *trackBinding {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.binding
}

// write sends one hub packet on binding b with the next sequence number.
// Only the pump goroutine calls it.
func (t *viewerTrack) write(b *trackBinding, p *media.Packet) error {
	seq := t.seq
	t.seq++
	if t.hist != nil {
		// Before the write: a NACK may follow it at once.
		t.hist.record(seq, p.RTP.SequenceNumber)
	}
	h := &t.hdr
	fillHeader(h, b, p, seq)
	_, err := b.write.WriteRTP(h, p.RTP.Payload)
	if err == nil {
		t.packets.Add(1)
		t.octets.Add(uint64(len(p.RTP.Payload)))
	}
	return err
}

// fillHeader sets h to p's header as this viewer sends it. h's extension
// slice is kept for its capacity: the TWCC interceptor appends to it.
func fillHeader(h *rtp.Header, b *trackBinding, p *media.Packet, seq uint16) {
	ext := h.Extensions[:0]
	*h = p.RTP.Header
	h.SequenceNumber = seq
	h.SSRC = b.ssrc
	h.PayloadType = b.pt
	// Extension IDs are negotiated per peer; the source's are meaningless
	// here (and interceptors add their own to this header).
	h.Extension, h.Extensions, h.ExtensionProfile = false, ext, 0
	if p.RTP.PaddingSize != 0 && h.PaddingSize == 0 {
		h.PaddingSize = p.RTP.PaddingSize
	}
}

// retransmitter answers one video track's NACKs from the stream's shared
// history and passes its keyframe requests (PLI, FIR) on to the stream. It
// is owned by the track's RTCP goroutine.
type retransmitter struct {
	t      *viewerTrack
	recent func(hubSeq uint16) *media.Packet
	// pli asks the stream's publisher for a keyframe (media.Stream's
	// RequestKeyframe, rate limited there); nil ignores keyframe requests.
	pli    func()
	hdr    rtp.Header
	sent   uint64 // packets sent again
	missed uint64 // NACKed packets no longer (or never) held
}

// handleRTCP answers the generic NACKs in the compound RTCP packet b and
// forwards a PLI or FIR for this track to pli.
func (r *retransmitter) handleRTCP(b []byte) {
	bnd := r.t.bound()
	if bnd == nil {
		return
	}
	if r.pli != nil && keyframeRequested(b, bnd.ssrc) {
		r.pli()
	}
	forEachNACK(b, bnd.ssrc, func(seq uint16) {
		hubSeq, ok := r.t.hist.lookup(seq)
		var p *media.Packet
		if ok {
			p = r.recent(hubSeq)
		}
		if p == nil {
			r.missed++
			return
		}
		fillHeader(&r.hdr, bnd, p, seq)
		// A failed write is the peer going away; the pump notices that.
		if _, err := bnd.write.WriteRTP(&r.hdr, p.RTP.Payload); err == nil {
			r.sent++
			r.t.rtxPackets.Add(1)
			r.t.rtxOctets.Add(uint64(len(p.RTP.Payload)))
		}
	})
}

// h264Fmtp extracts packetization-mode and the decoded profile-level-id
// bytes from an H.264 fmtp line.
func h264Fmtp(line string) (pm string, plid []byte) {
	pm = "0" // RFC 6184 §8.1: absent means mode 0
	for _, kv := range strings.Split(line, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "packetization-mode":
			pm = v
		case "profile-level-id":
			if b, err := hex.DecodeString(v); err == nil && len(b) == 3 {
				plid = b
			}
		}
	}
	return pm, plid
}
