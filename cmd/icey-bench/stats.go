package main

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"time"
)

// errShortRTP is returned for buffers too short to hold the RTP header they
// announce.
var errShortRTP = errors.New("icey-bench: truncated RTP packet")

// rtpHeader is the part of an RTP header the bench needs. It is parsed by
// hand, without allocating, because it runs for every packet of every viewer
// and the generator shares two cores with the server it measures.
type rtpHeader struct {
	seq     uint16
	ssrc    uint32
	payload []byte // aliases the read buffer
}

// parseRTP parses the fixed header, CSRCs, extension and padding of buf.
func parseRTP(buf []byte) (rtpHeader, error) {
	var h rtpHeader
	if len(buf) < 12 || buf[0]>>6 != 2 {
		return h, errShortRTP
	}
	n := 12 + 4*int(buf[0]&0x0f)
	if buf[0]&0x10 != 0 { // header extension: 4-byte preamble + length words
		if len(buf) < n+4 {
			return h, errShortRTP
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(buf[n+2:]))
	}
	end := len(buf)
	if buf[0]&0x20 != 0 && end > n { // padding: the last byte counts it
		end -= int(buf[end-1])
	}
	if n > end {
		return h, errShortRTP
	}
	h.seq = binary.BigEndian.Uint16(buf[2:])
	h.ssrc = binary.BigEndian.Uint32(buf[8:])
	h.payload = buf[n:end]
	return h, nil
}

// h264KeyframeStart reports whether an H.264 RTP payload (RFC 6184) starts a
// keyframe: an IDR slice (NAL type 5) or an SPS (7, which encoders and
// servers put right in front of an IDR), as a single NAL unit, inside a
// STAP-A aggregate, or as the first fragment of an FU-A.
func h264KeyframeStart(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	switch t := p[0] & 0x1f; t {
	case 5, 7:
		return true
	case 24: // STAP-A: 16-bit size, then the NAL unit, repeated
		for i := 1; i+2 < len(p); {
			size := int(binary.BigEndian.Uint16(p[i:]))
			i += 2
			if size == 0 || i+size > len(p) {
				return false
			}
			if nt := p[i] & 0x1f; nt == 5 || nt == 7 {
				return true
			}
			i += size
		}
	case 28: // FU-A: the FU header's start bit and original NAL type
		if len(p) >= 2 && p[1]&0x80 != 0 {
			nt := p[1] & 0x1f
			return nt == 5 || nt == 7
		}
	}
	return false
}

// vp8KeyframeStart reports whether a VP8 RTP payload (RFC 7741) is the
// first packet of a key frame.
func vp8KeyframeStart(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	if p[0]&0x10 == 0 || p[0]&0x07 != 0 { // S bit, partition 0
		return false
	}
	i := 1
	if p[0]&0x80 != 0 { // X: extension byte
		if len(p) < 2 {
			return false
		}
		x := p[1]
		i = 2
		if x&0x80 != 0 { // I: picture ID, 7 or 15 bits
			if len(p) <= i {
				return false
			}
			if p[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K: TID/KEYIDX byte
			i++
		}
	}
	return len(p) > i && p[i]&0x01 == 0 // P bit clear: key frame
}

// seqCounter counts received packets and sequence-number gaps for one SSRC,
// the way RFC 3550 does: expected = highest - lowest extended sequence
// number + 1 and lost = expected - received, so a reordered packet fills
// the gap it left and is not counted as lost. It extends the 16-bit
// sequence number across wraps.
type seqCounter struct {
	started  bool
	first    int64 // lowest extended sequence number seen
	max      int64 // highest extended sequence number seen
	received int64
}

func (c *seqCounter) add(seq uint16) {
	if !c.started {
		c.started = true
		c.first, c.max = int64(seq), int64(seq)
		c.received = 1
		return
	}
	// The signed 16-bit distance from the highest number seen decides the
	// direction, which is what makes the wrap from 65535 to 0 work.
	d := int64(int16(seq - uint16(c.max)))
	ext := c.max + d
	if d > 0 {
		c.max = ext
	} else if ext < c.first {
		c.first = ext
	}
	c.received++
}

// expected returns how many packets the sequence numbers say were sent.
func (c *seqCounter) expected() int64 {
	if !c.started {
		return 0
	}
	return c.max - c.first + 1
}

// lost returns the number of packets missing; duplicates can push received
// above expected, which counts as no loss.
func (c *seqCounter) lost() int64 {
	return max(c.expected()-c.received, 0)
}

// dist summarises a set of durations.
type dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	Max float64 `json:"max_ms"`
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted values: the smallest value with at least p % of the values at or
// below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func summarise(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }
	return dist{
		N:   len(s),
		P50: ms(percentile(s, 50)),
		P95: ms(percentile(s, 95)),
		Max: ms(s[len(s)-1]),
	}
}

// gapWindow is how many sequence numbers a gapTracker remembers to tell a
// duplicate from a late packet.
const gapWindow = 4096

// recoverWithin is how long a missing packet may take to arrive (by NACK
// and retransmission, or plain reordering) and still count as recovered.
// A browser's jitter buffer waits a few hundred milliseconds at most, so a
// second is generous.
const recoverWithin = time.Second

// missingSeq is a sequence number found missing at a given time.
type missingSeq struct {
	seq int64
	at  time.Time
}

// gapTracker tells raw loss from loss that stayed: every sequence number a
// later packet skipped over is a gap; a gap is recovered when its packet
// arrives within recoverWithin of the gap being seen, and unrecovered when
// it does not. Duplicates (a retransmission of a packet that had arrived,
// e.g. when a NACK crossed the retransmission) are counted apart and never
// offset a loss, unlike RFC 3550's expected − received. time.Now is read
// only while some packet is missing, so the steady state costs nothing.
type gapTracker struct {
	started bool
	max     int64 // highest extended sequence number seen
	seen    [gapWindow / 64]uint64
	missing []missingSeq // outstanding gaps, oldest first
	now     func() time.Time

	gaps        int64 // sequence numbers skipped by a later packet
	recovered   int64 // of those, arrived within recoverWithin
	unrecovered int64 // of those, not arrived within recoverWithin
	late        int64 // arrived after recoverWithin (already unrecovered)
	duplicates  int64
}

func (g *gapTracker) clock() time.Time {
	if g.now != nil {
		return g.now()
	}
	return time.Now()
}

func (g *gapTracker) bit(ext int64) (word int, mask uint64) {
	i := uint64(ext) % gapWindow
	return int(i / 64), 1 << (i % 64)
}

func (g *gapTracker) add(seq uint16) {
	if !g.started {
		g.started = true
		g.max = int64(seq)
		w, m := g.bit(g.max)
		g.seen[w] |= m
		return
	}
	d := int64(int16(seq - uint16(g.max)))
	ext := g.max + d
	switch {
	case d > gapWindow:
		// A jump longer than the memory: nothing in it can be told
		// apart any more, so it is lost for good.
		g.gaps += d - 1
		g.unrecovered += d - 1
		g.seen = [gapWindow / 64]uint64{}
		g.max = ext
	case d > 0:
		var now time.Time
		if d > 1 || len(g.missing) > 0 {
			now = g.clock()
			g.expire(now)
		}
		for k := g.max + 1; k < ext; k++ {
			w, m := g.bit(k)
			g.seen[w] &^= m
			g.missing = append(g.missing, missingSeq{seq: k, at: now})
			g.gaps++
		}
		g.max = ext
	case g.max-ext >= gapWindow:
		g.late++ // too old to tell; any gap it filled has expired
		return
	default:
		w, m := g.bit(ext)
		if g.seen[w]&m != 0 {
			g.duplicates++
			return
		}
		g.fill(ext)
	}
	w, m := g.bit(ext)
	g.seen[w] |= m
}

// fill settles the gap that a late packet ext closes, if it is still
// outstanding.
func (g *gapTracker) fill(ext int64) {
	for i, ms := range g.missing {
		if ms.seq == ext {
			if g.clock().Sub(ms.at) <= recoverWithin {
				g.recovered++
			} else {
				g.late++
				g.unrecovered++
			}
			g.missing = append(g.missing[:i], g.missing[i+1:]...)
			return
		}
	}
	// Its gap expired already (counted unrecovered then), or it precedes
	// the first packet seen (never a gap).
	g.late++
}

// expire counts the gaps older than recoverWithin as unrecovered.
func (g *gapTracker) expire(now time.Time) {
	i := 0
	for i < len(g.missing) && now.Sub(g.missing[i].at) > recoverWithin {
		i++
	}
	if i > 0 {
		g.unrecovered += int64(i)
		g.missing = append(g.missing[:0], g.missing[i:]...)
	}
}
