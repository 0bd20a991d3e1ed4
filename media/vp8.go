package media

import "time"

// WriteVP8 publishes one VP8 frame (a rendition's output) as RTP packets
// with the RFC 7741 payload descriptor: one byte, S set on the first packet
// of the frame, partition index 0; the frame split into equal parts no
// larger than MaxPayload, the marker bit on the last. A key frame (P bit
// clear, RFC 6386 §9.1) is a keyframe of the stream; frames before the
// first one of a run are dropped. The caller may reuse frame.
func (s *Stream) WriteVP8(pts time.Duration, frame []byte) {
	if len(frame) < 3 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	key := frame[0]&0x01 == 0
	s.notePTSLocked(pts)
	mt := s.mediaTimeLocked(pts)
	if !key && s.waitIDR {
		return
	}
	if key {
		s.waitIDR = false
		s.refreshInfoLocked()
		if w, h, ok := vp8Size(frame); ok && (s.info.Width != w || s.info.Height != h || s.info.Codec != CodecVP8) {
			s.info = VideoInfo{Codec: CodecVP8, Width: w, Height: h}
		}
	}
	per := s.cfg.MaxPayload - 1
	nf := fragments(len(frame), per)
	per = (len(frame) + nf - 1) / nf
	buf := make([]byte, len(frame)+nf)
	u, pk, pl := allocUnit(nf, 1)
	ts := s.vTSBase + rtpTime(mt, VideoClockRate)
	off := 0
	for f := 0; f < nf; f++ {
		part := frame[f*per : min((f+1)*per, len(frame))]
		b := buf[off : off+1+len(part) : off+1+len(part)]
		off += len(b)
		if f == 0 {
			b[0] = 0x10
		}
		copy(b[1:], part)
		p := &pk[f]
		p.Kind = KindVideo
		p.Keyframe = key && f == 0
		p.RTP.Header = rtpHeader(PayloadTypeVP8, s.vSeq, ts, s.vSSRC, f == nf-1)
		p.RTP.Payload = b
		s.vSeq++
	}
	// Payload is the frame itself; the packets hold it in parts, so it is
	// kept once more (frames are small next to H.264 GOPs of the source).
	c := clone(frame)
	pl[0] = c
	u.Kind, u.Codec, u.PTS, u.Keyframe = KindVideo, CodecVP8, mt, key
	u.wire, u.mem = len(buf), len(buf)+len(c)
	s.publishLocked(u)
}

// vp8Size reads the size of a key frame (RFC 6386 §9.1: 3-byte frame tag,
// start code 9d 01 2a, 14-bit width and height).
func vp8Size(f []byte) (w, h int, ok bool) {
	if len(f) < 10 || f[3] != 0x9d || f[4] != 0x01 || f[5] != 0x2a {
		return 0, 0, false
	}
	w = int(f[6]) | int(f[7]&0x3f)<<8
	h = int(f[8]) | int(f[9]&0x3f)<<8
	return w, h, true
}
