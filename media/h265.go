package media

import (
	"bytes"
	"time"
)

// H.265 NAL unit types (ITU-T H.265 Table 7-1) and RTP payload structures
// (RFC 7798 §4.4).
const (
	h265IRAPFirst = 16 // BLA_W_LP
	h265IRAPLast  = 23 // RSV_IRAP_VCL23
	h265VPS       = 32
	h265SPS       = 33
	h265PPS       = 34
	h265AUD       = 35
	h265FD        = 38
	h265AP        = 48
	h265FU        = 49
	h265PACI      = 50
)

func h265Type(n []byte) uint8 { return (n[0] >> 1) & 0x3f }

// WriteH265 publishes one H.265 access unit (NALUs without start codes, in
// decoding order). Like WriteH264: the parameter sets are learned and put
// in front of every random-access (IRAP) picture, access unit delimiters,
// filler data and the RTP-only NAL types are dropped, video before the
// first IRAP of a run is dropped, and the NALUs are packetized as single
// NAL unit packets or fragmentation units (RFC 7798 §4.4.1, §4.4.3) of
// equal sizes no larger than MaxPayload. The caller may reuse au.
func (s *Stream) WriteH265(pts time.Duration, au [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	nalus := append(s.nalus[:0], nil, nil, nil) // VPS, SPS, PPS in front of an IRAP
	irap := false
	for _, n := range au {
		if len(n) < 2 {
			continue
		}
		switch t := h265Type(n); {
		case t == h265VPS:
			if !bytes.Equal(n, s.vps) {
				s.vps = clone(n)
			}
			continue
		case t == h265SPS:
			if !bytes.Equal(n, s.sps) {
				s.sps = clone(n)
				s.paramsChangedLocked()
			}
			continue
		case t == h265PPS:
			if !bytes.Equal(n, s.pps) {
				s.pps = clone(n)
			}
			continue
		case t == h265AUD, t == h265FD, t >= h265AP:
			// Over RTP a receiver reads 48-63 as aggregation or
			// fragmentation packets (RFC 7798 §4.4) and mangles the picture.
			continue
		case t >= h265IRAPFirst && t <= h265IRAPLast:
			irap = true
		}
		nalus = append(nalus, n)
	}
	defer s.releaseNALUs(nalus)
	if len(nalus) == 3 {
		return
	}
	s.notePTSLocked(pts)
	mt := s.mediaTimeLocked(pts)
	if !irap && s.waitIDR {
		return
	}
	if irap {
		if len(s.vps) == 0 || len(s.sps) == 0 || len(s.pps) == 0 {
			s.skipNoParams.hit(s.log, "H.265 random-access picture without known VPS/SPS/PPS dropped", time.Now())
			s.waitIDR = true
			return
		}
		s.waitIDR = false
		nalus[0], nalus[1], nalus[2] = s.vps, s.sps, s.pps
	} else {
		nalus = nalus[3:]
	}
	s.refreshInfoLocked()

	max := s.cfg.MaxPayload
	npk, size := 0, 0
	for _, n := range nalus {
		if len(n) <= max {
			npk++
			size += len(n)
			continue
		}
		k := fragments(len(n)-2, max-3)
		npk += k
		size += len(n) + (len(n) - 2) + 3*k // the NALU copy, then the fragments
	}
	buf := make([]byte, size)
	u, pk, pl := allocUnit(npk, len(nalus))
	ts := s.vTSBase + rtpTime(mt, VideoClockRate)
	off, k, wire := 0, 0, 0
	emit := func(b []byte) {
		p := &pk[k]
		p.Kind = KindVideo
		p.Keyframe = irap && k == 0
		p.RTP.Header = rtpHeader(PayloadTypeH265, s.vSeq, ts, s.vSSRC, k == npk-1)
		p.RTP.Payload = b
		s.vSeq++
		k++
		wire += len(b)
	}
	for i, n := range nalus {
		c := buf[off : off+len(n) : off+len(n)]
		copy(c, n)
		off += len(n)
		pl[i] = c
		if len(n) <= max {
			emit(c)
			continue
		}
		body := n[2:]
		nf := fragments(len(body), max-3)
		per := (len(body) + nf - 1) / nf
		for f := 0; f < nf; f++ {
			part := body[f*per : min((f+1)*per, len(body))]
			b := buf[off : off+3+len(part) : off+3+len(part)]
			off += len(b)
			b[0] = n[0]&0x81 | h265FU<<1 // F and LayerId high bit kept
			b[1] = n[1]                  // LayerId low bits, TID
			b[2] = h265Type(n)
			if f == 0 {
				b[2] |= 0x80
			}
			if f == nf-1 {
				b[2] |= 0x40
			}
			copy(b[3:], part)
			emit(b)
		}
	}
	u.Kind, u.Codec, u.PTS, u.Keyframe = KindVideo, CodecH265, mt, irap
	u.wire, u.mem = wire, len(buf)
	s.publishLocked(u)
}

// fragments is how many fragments of at most per bytes n bytes take.
func fragments(n, per int) int {
	if per < 1 {
		per = 1
	}
	return max(1, (n+per-1)/per)
}
