package signaling

import (
	"encoding/binary"
	"sync"
)

// Retransmission (RFC 4585 generic NACK) without a per-viewer packet
// history: every viewer of a stream is sent the same hub packets, so the
// hub keeps one shared history (media.Stream.RecentVideo, by hub sequence
// number) and each viewer keeps only the mapping from its own outgoing
// sequence numbers to hub sequence numbers (a few anchors, see seqMap). A NACK is answered by sending
// the hub packet again with the viewer's SSRC, payload type and the NACKed
// sequence number, through the same interceptor chain and SRTP context as
// the original (plain retransmission, what pion's NACK responder does).
// This replaces pion's responder, which kept a copy of every packet header
// in a 4096-entry ring per viewer (about two thirds of the live heap).

// seqMap maps a viewer track's outgoing sequence numbers to the hub
// sequence numbers of the packets sent with them. Both advance by one per
// packet except where the hub skipped packets for this viewer (queue
// overflow, waiting for a keyframe), so the map is a short list of anchors
// (viewer seq, hub seq), one per run of consecutive packets: the per-packet
// cost is one comparison, and a viewer needs 256 bytes instead of a slot
// per packet. The pump goroutine records, the RTCP goroutine looks up.
type seqMap struct {
	mu      sync.Mutex
	anchors [seqAnchors]seqAnchor // ring; newest at head
	head, n int

	// Owned by the recording (pump) goroutine.
	primed  bool
	nextHub uint16 // the hub seq that continues the newest run
}

type seqAnchor struct{ viewer, hub uint16 }

// seqAnchors bounds the runs remembered: a viewer whose hub queue skipped
// more often than this within the retransmission window loses NACK answers
// for its oldest packets, nothing else.
const seqAnchors = 64

// record notes that viewerSeq (always the previous one plus one) carried
// hub packet hubSeq.
func (m *seqMap) record(viewerSeq, hubSeq uint16) {
	if m.primed && hubSeq == m.nextHub {
		m.nextHub++
		return
	}
	m.primed, m.nextHub = true, hubSeq+1
	m.mu.Lock()
	m.head = (m.head + 1) % seqAnchors
	m.anchors[m.head] = seqAnchor{viewer: viewerSeq, hub: hubSeq}
	m.n = min(m.n+1, seqAnchors)
	m.mu.Unlock()
}

// lookup returns the hub seq sent as viewerSeq. A number past the last one
// sent maps onto the newest run (the hub's history then says whether such a
// packet exists); one before the oldest run remembered is not found.
func (m *seqMap) lookup(viewerSeq uint16) (hubSeq uint16, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < m.n; i++ {
		a := m.anchors[(m.head-i+seqAnchors)%seqAnchors]
		d := viewerSeq - a.viewer
		if i == 0 {
			if d < 1<<15 { // at or after the newest run's start
				return a.hub + d, true
			}
			continue
		}
		// Runs end where the next one starts.
		next := m.anchors[(m.head-i+1+seqAnchors)%seqAnchors]
		if d < next.viewer-a.viewer {
			return a.hub + d, true
		}
	}
	return 0, false
}

// RTCP constants (RFC 3550 §6.1, RFC 4585 §6.1-6.3.1, RFC 5104 §4.3.1).
const (
	rtcpTypeRTPFB   = 205
	rtcpTypePSFB    = 206
	rtcpFmtNACK     = 1
	rtcpFmtPLI      = 1 // with PSFB
	rtcpFmtFIR      = 4 // with PSFB
	rtcpHeaderBytes = 4
	nackFixedBytes  = 8 // sender SSRC + media SSRC
	firEntryBytes   = 8 // SSRC + seq nr + reserved
)

// keyframeRequested reports whether the compound RTCP packet b holds a
// Picture Loss Indication (RFC 4585 §6.3.1) for media SSRC ssrc or a Full
// Intra Request (RFC 5104 §4.3.1) with an entry for ssrc. Like
// forEachNACK it parses in place and stops at the first malformed packet.
func keyframeRequested(b []byte, ssrc uint32) bool {
	for len(b) >= rtcpHeaderBytes {
		if b[0]>>6 != 2 {
			return false
		}
		n := (int(binary.BigEndian.Uint16(b[2:4])) + 1) * 4
		if n > len(b) {
			return false
		}
		pkt := b[:n]
		b = b[n:]
		if pkt[1] != rtcpTypePSFB || n < rtcpHeaderBytes+nackFixedBytes {
			continue
		}
		if pkt[0]&0x20 != 0 { // padding: the last byte counts it
			pad := int(pkt[n-1])
			if pad == 0 || pad > n-rtcpHeaderBytes-nackFixedBytes {
				return false
			}
			pkt = pkt[:n-pad]
		}
		switch pkt[0] & 0x1f {
		case rtcpFmtPLI:
			if binary.BigEndian.Uint32(pkt[8:12]) == ssrc {
				return true
			}
		case rtcpFmtFIR:
			// The media SSRC field is unused (0); each FCI entry names one.
			for fci := pkt[rtcpHeaderBytes+nackFixedBytes:]; len(fci) >= firEntryBytes; fci = fci[firEntryBytes:] {
				if binary.BigEndian.Uint32(fci[0:4]) == ssrc {
					return true
				}
			}
		}
	}
	return false
}

// forEachNACK calls f for every sequence number that the generic NACKs in
// the compound RTCP packet b report lost for media SSRC ssrc. It parses in
// place (no allocation) and stops at the first malformed packet.
func forEachNACK(b []byte, ssrc uint32, f func(seq uint16)) {
	for len(b) >= rtcpHeaderBytes {
		if b[0]>>6 != 2 {
			return
		}
		n := (int(binary.BigEndian.Uint16(b[2:4])) + 1) * 4
		if n > len(b) {
			return
		}
		pkt := b[:n]
		b = b[n:]
		if pkt[1] != rtcpTypeRTPFB || pkt[0]&0x1f != rtcpFmtNACK || n < rtcpHeaderBytes+nackFixedBytes {
			continue
		}
		if pkt[0]&0x20 != 0 { // padding: the last byte counts it
			pad := int(pkt[n-1])
			if pad == 0 || pad > n-rtcpHeaderBytes-nackFixedBytes {
				return
			}
			pkt = pkt[:n-pad]
		}
		if binary.BigEndian.Uint32(pkt[8:12]) != ssrc {
			continue
		}
		for fci := pkt[rtcpHeaderBytes+nackFixedBytes:]; len(fci) >= 4; fci = fci[4:] {
			pid := binary.BigEndian.Uint16(fci[0:2])
			blp := binary.BigEndian.Uint16(fci[2:4])
			f(pid)
			for i := uint16(0); i < 16; i++ {
				if blp&(1<<i) != 0 {
					f(pid + i + 1)
				}
			}
		}
	}
}
