package media

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/pion/rtp"
)

// H.264 NAL unit types (ITU-T H.264 Table 7-1) and RTP payload structures
// (RFC 6184 §5.4).
const (
	naluNonIDR = 1
	naluIDR    = 5
	naluSPS    = 7
	naluPPS    = 8
	naluAUD    = 9
	naluFiller = 12
	naluSTAPA  = 24
	naluFUA    = 28
)

// VideoClockRate is the RTP clock of H.264 (RFC 6184 §8.2.1).
const VideoClockRate = 90000

type segKind uint8

const (
	segSingle segKind = iota // single NAL unit packet (RFC 6184 §5.6)
	segSTAPA                 // aggregation of small NALUs (RFC 6184 §5.7.1)
	segFUA                   // one fragment of a large NALU (RFC 6184 §5.8)
)

// segment plans one RTP payload of an access unit.
type segment struct {
	kind   segKind
	i, j   int // single/FU-A: nalus[i]; STAP-A: nalus[i:j]
	off, n int // FU-A: bytes [off, off+n) of the NALU body (after its header byte)
	size   int // payload bytes
}

// WriteH264 publishes one access unit (NALUs without start codes, in
// decoding order, pts in the source's timeline). The hub learns SPS/PPS
// from it, drops AUD, filler data and the NAL unit types H.264 leaves
// unspecified (0, 24-31), puts SPS+PPS in front of every IDR
// and packetizes to RTP with payloads <= MaxPayload and the marker bit on
// the last packet. Video before the first IDR (and after a Discontinuity,
// until the next IDR) is dropped, since no decoder can start from it.
// So is an access unit that is not decodable (see h264Check: broken
// parameter sets or slice headers, a lost reference picture): it is
// counted (StreamStats.InvalidVideo), and video resumes at the next IDR.
// The NALU buffers are copied; the caller may reuse them on return.
func (s *Stream) WriteH264(pts time.Duration, au [][]byte) {
	if s.writeH264(pts, au) {
		s.RequestKeyframe() // a publisher can send the IDR now
	}
}

// writeH264 is WriteH264 under the lock; it reports whether the access unit
// was not decodable.
func (s *Stream) writeH264(pts time.Duration, au [][]byte) (invalid bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	// While waiting for an IDR, pictures that are not one are dropped
	// unchecked: only their parameter sets are learned.
	waiting := s.waitIDR && !hasIDRNALU(au)
	// Two slots in front are reserved for SPS and PPS.
	nalus := append(s.nalus[:0], nil, nil)
	var pic picture
	s.check.beginAU()
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		t := n[0] & 0x1f
		if waiting && t != naluSPS && t != naluPPS {
			continue
		}
		if err := s.check.nalu(n, &pic); err != nil {
			s.releaseNALUs(nalus)
			s.invalidVideoLocked(err)
			return true
		}
		switch t {
		case naluSPS, naluPPS:
			continue // re-inserted in front of IDRs only, once an IDR used them
		case naluAUD, naluFiller:
			continue // useless over RTP, and AUD confuses some decoders mid-AU
		case 0, naluSTAPA, 25, 26, 27, naluFUA, 29, 30, 31:
			// Unspecified in H.264 (decoders ignore them), but over RTP a
			// receiver would read them as aggregation or fragmentation
			// packets (RFC 6184 §5.2) and mangle the picture.
			continue
		}
		nalus = append(nalus, n)
	}
	defer s.releaseNALUs(nalus)
	if waiting {
		// Before the first IDR, or after a discontinuity or an invalid AU:
		// no decoder can use it (dropped, not counted again).
		s.notePTSLocked(pts)
		s.mediaTimeLocked(pts)
		return false
	}
	if pic.slices == 0 {
		return false // parameter sets, SEI and the like: learned or no picture
	}
	if err := s.check.picture(&pic); err != nil {
		s.invalidVideoLocked(err)
		return true
	}
	s.notePTSLocked(pts)
	mt := s.mediaTimeLocked(pts)
	idr := pic.idr
	if idr {
		// The parameter sets this IDR decodes against are the stream's now.
		if !bytes.Equal(pic.sps.raw, s.sps) {
			s.sps = clone(pic.sps.raw)
			s.paramsChangedLocked()
		}
		if !bytes.Equal(pic.pps.raw, s.pps) {
			s.pps = clone(pic.pps.raw)
		}
		s.waitIDR = false
		nalus[0], nalus[1] = s.sps, s.pps
	} else {
		nalus = nalus[2:]
	}

	plan, total, frag := planH264(s.plan[:0], nalus, s.cfg.MaxPayload)
	s.plan = plan

	// One buffer and one unit (with its packets) per access unit, shared by
	// every subscriber and the ring: nothing is allocated per subscriber.
	// The buffer holds the RTP payloads, then a copy of each NALU too large
	// for one packet; every other NALU of Payload is a slice of the packet
	// that carries it (single or STAP-A), so the AU is not copied twice.
	buf := make([]byte, total+frag)
	u, pk, pl := allocUnit(len(plan), len(nalus))
	ts := s.vTSBase + rtpTime(mt, VideoClockRate)
	off, fragOff := 0, total
	for k, sg := range plan {
		b := buf[off : off+sg.size : off+sg.size]
		off += sg.size
		fillPayload(b, sg, nalus, pl)
		if sg.kind == segFUA && sg.off == 0 {
			n := nalus[sg.i]
			pl[sg.i] = buf[fragOff : fragOff+len(n) : fragOff+len(n)]
			copy(pl[sg.i], n)
			fragOff += len(n)
		}
		p := &pk[k]
		p.Kind = KindVideo
		p.Keyframe = idr && k == 0
		p.RTP.Header = rtpHeader(PayloadTypeH264, s.vSeq, ts, s.vSSRC, k == len(plan)-1)
		p.RTP.Payload = b
		s.vSeq++
	}
	u.Kind, u.Codec, u.PTS, u.Keyframe = KindVideo, CodecH264, mt, idr
	u.wire, u.mem = total, len(buf)
	s.publishLocked(u)
	return false
}

// hasIDRNALU reports whether an access unit holds an IDR slice.
func hasIDRNALU(au [][]byte) bool {
	for _, n := range au {
		if len(n) > 0 && n[0]&0x1f == naluIDR {
			return true
		}
	}
	return false
}

// releaseNALUs keeps the scratch slice but not the caller's buffers.
func (s *Stream) releaseNALUs(all [][]byte) {
	clear(all)
	s.nalus = all[:0]
}

// planH264 splits an access unit into RTP payloads of at most max bytes:
// runs of small NALUs are aggregated into STAP-A, NALUs larger than max are
// fragmented into FU-A, the rest travel as single NAL unit packets. It
// returns the plan, the payload bytes and the bytes of the fragmented NALUs.
func planH264(plan []segment, nalus [][]byte, max int) ([]segment, int, int) {
	total, frag := 0, 0
	for i := 0; i < len(nalus); {
		n := nalus[i]
		if len(n) > max {
			frag += len(n)
			body, chunk := len(n)-1, max-2
			for off := 0; off < body; off += chunk {
				c := min(chunk, body-off)
				plan = append(plan, segment{kind: segFUA, i: i, off: off, n: c, size: 2 + c})
				total += 2 + c
			}
			i++
			continue
		}
		j, size := i, 1
		for j < len(nalus) && size+2+len(nalus[j]) <= max {
			size += 2 + len(nalus[j])
			j++
		}
		if j-i >= 2 {
			plan = append(plan, segment{kind: segSTAPA, i: i, j: j, size: size})
			total += size
			i = j
			continue
		}
		plan = append(plan, segment{kind: segSingle, i: i, size: len(n)})
		total += len(n)
		i++
	}
	return plan, total, frag
}

// fillPayload writes the RTP payload b of segment sg and points the
// published NALUs pl of a single or STAP-A segment at their bytes in b.
func fillPayload(b []byte, sg segment, nalus [][]byte, pl [][]byte) {
	switch sg.kind {
	case segSingle:
		copy(b, nalus[sg.i])
		pl[sg.i] = b
	case segSTAPA:
		// F is the OR and NRI the maximum of the aggregated units (§5.7).
		var f, nri byte
		p := 1
		for k, n := range nalus[sg.i:sg.j] {
			f |= n[0] & 0x80
			nri = max(nri, n[0]&0x60)
			binary.BigEndian.PutUint16(b[p:], uint16(len(n)))
			p += 2
			pl[sg.i+k] = b[p : p+len(n) : p+len(n)]
			p += copy(b[p:], n)
		}
		b[0] = f | nri | naluSTAPA
	case segFUA:
		n := nalus[sg.i]
		b[0] = n[0]&0xe0 | naluFUA
		h := n[0] & 0x1f
		if sg.off == 0 {
			h |= 0x80 // start
		}
		if sg.off+sg.n == len(n)-1 {
			h |= 0x40 // end
		}
		b[1] = h
		copy(b[2:], n[1+sg.off:1+sg.off+sg.n])
	}
}

func rtpHeader(pt uint8, seq uint16, ts, ssrc uint32, marker bool) rtp.Header {
	return rtp.Header{
		Version:        2,
		PayloadType:    pt,
		SequenceNumber: seq,
		Timestamp:      ts,
		SSRC:           ssrc,
		Marker:         marker,
	}
}
