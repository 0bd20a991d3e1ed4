package signaling

import (
	"encoding/hex"
	"strings"
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
)

// viewerTrack is a per-viewer TrackLocal that writes the hub's shared packets
// with this viewer's SSRC, payload type and its own continuous sequence
// numbers (so packets the hub dropped for this viewer leave no gap the
// browser would NACK or conceal). The shared media.Packet is never mutated:
// each write uses a fresh header, which the NACK responder keeps by
// reference.
type viewerTrack struct {
	kind     webrtc.RTPCodecType
	mime     string // media codec this track carries (webrtc MIME type)
	profile  byte   // H.264 profile_idc of the stream (0 unknown)
	id       string
	streamID string

	mu      sync.Mutex
	binding *trackBinding

	// Owned by the session's pump goroutine.
	seq uint16
}

type trackBinding struct {
	id    string
	ssrc  uint32
	pt    uint8
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
		if t.kind == webrtc.RTPCodecTypeVideo {
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
	t.binding = &trackBinding{id: ctx.ID(), ssrc: uint32(ctx.SSRC()), pt: uint8(best.PayloadType), write: ctx.WriteStream()}
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
func (t *viewerTrack) write(b *trackBinding, p *media.Packet) error {
	h := new(rtp.Header)
	*h = p.RTP.Header
	h.SequenceNumber = t.seq
	t.seq++
	h.SSRC = b.ssrc
	h.PayloadType = b.pt
	// Extension IDs are negotiated per peer; the source's are meaningless
	// here (and interceptors append their own to this header).
	h.Extension, h.Extensions, h.ExtensionProfile = false, nil, 0
	if p.RTP.PaddingSize != 0 && h.PaddingSize == 0 {
		h.PaddingSize = p.RTP.PaddingSize
	}
	_, err := b.write.WriteRTP(h, p.RTP.Payload)
	return err
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
