package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/fuzzhelp"
)

// fuzzAU is one write of the H.264 fuzz input.
type fuzzAU struct {
	nalus         [][]byte
	discontinuity bool // Discontinuity() before the write
}

// decodeFuzzAUs reads records of a 2-byte header and a NALU: the low 12
// bits are the NALU length (truncated at the end of data), 0x8000 ends the
// access unit after this NALU, 0x4000 calls Discontinuity before it.
func decodeFuzzAUs(data []byte) []fuzzAU {
	var aus []fuzzAU
	var cur fuzzAU
	for len(data) >= 2 {
		h := binary.BigEndian.Uint16(data)
		data = data[2:]
		n := min(int(h&0x0fff), len(data))
		cur.nalus = append(cur.nalus, data[:n])
		data = data[n:]
		cur.discontinuity = cur.discontinuity || h&0x4000 != 0
		if h&0x8000 != 0 {
			aus = append(aus, cur)
			cur = fuzzAU{}
		}
	}
	if len(cur.nalus) > 0 {
		aus = append(aus, cur)
	}
	return aus
}

// encodeFuzzAUs is the inverse, for seeds.
func encodeFuzzAUs(aus ...[][]byte) []byte {
	var b []byte
	for _, au := range aus {
		for i, n := range au {
			h := uint16(len(n))
			if i == len(au)-1 {
				h |= 0x8000
			}
			b = binary.BigEndian.AppendUint16(b, h)
			b = append(b, n...)
		}
	}
	return b
}

// rtpModel is what WriteH264 must emit, computed independently of the
// packetizer: the latest parameter sets, no video until an IDR with known
// SPS/PPS (at start, after a Discontinuity and after an access unit that
// h264Check rejects), AUD, filler and parameter sets removed from the
// NALUs, and the unspecified types (0, 24-31) too, SPS+PPS in front of
// every IDR, and nothing for an access unit without a slice. Which AUs are
// decodable is h264Check's call (tested on its own in h264check_test.go);
// the model asks its own instance in the order the hub does.
type rtpModel struct {
	sps, pps []byte
	waitIDR  bool
	check    h264Check
	invalid  int
}

func (m *rtpModel) write(au fuzzAU) (out [][]byte, idr bool) {
	if au.discontinuity {
		m.waitIDR = true
		m.check.reset()
	}
	bad := func() ([][]byte, bool) {
		m.waitIDR = true
		m.check.reset()
		m.invalid++
		return nil, false
	}
	waiting := m.waitIDR && !hasIDRNALU(au.nalus)
	var body [][]byte
	var pic picture
	m.check.beginAU()
	for _, n := range au.nalus {
		if len(n) == 0 {
			continue
		}
		t := n[0] & 0x1f
		if waiting && t != naluSPS && t != naluPPS {
			continue
		}
		if m.check.nalu(n, &pic) != nil {
			return bad()
		}
		switch {
		case t == naluSPS, t == naluPPS, t == naluAUD, t == naluFiller:
			continue
		case t == 0 || t >= 24:
			continue // unspecified in H.264; RTP payload structures
		}
		body = append(body, n)
	}
	if waiting || pic.slices == 0 {
		return nil, false
	}
	if m.check.picture(&pic) != nil {
		return bad()
	}
	if pic.idr {
		m.waitIDR = false
		m.sps, m.pps = pic.sps.raw, pic.pps.raw
		return append([][]byte{m.sps, m.pps}, body...), true
	}
	return body, false
}

// reassemble depacketizes the RTP payloads of one access unit by RFC 6184
// (single NAL unit, STAP-A, FU-A), strictly: a malformed payload is an
// error, not something to skip.
func reassemble(payloads [][]byte) ([][]byte, error) {
	var out [][]byte
	var fu []byte
	for k, p := range payloads {
		if len(p) == 0 {
			return nil, fmt.Errorf("payload %d empty", k)
		}
		typ := p[0] & 0x1f
		if fu != nil && typ != naluFUA {
			return nil, fmt.Errorf("payload %d (type %d) interrupts a fragmented NALU", k, typ)
		}
		switch typ {
		case naluSTAPA:
			var f, nri byte
			n0 := len(out)
			for i := 1; i < len(p); {
				if i+2 > len(p) {
					return nil, fmt.Errorf("payload %d: STAP-A size field cut", k)
				}
				n := int(binary.BigEndian.Uint16(p[i:]))
				i += 2
				if n == 0 || i+n > len(p) {
					return nil, fmt.Errorf("payload %d: STAP-A unit of %d bytes, %d left", k, n, len(p)-i)
				}
				u := p[i : i+n]
				f |= u[0] & 0x80
				nri = max(nri, u[0]&0x60)
				out = append(out, u)
				i += n
			}
			if len(out)-n0 < 2 {
				return nil, fmt.Errorf("payload %d: STAP-A of %d units", k, len(out)-n0)
			}
			if p[0]&0xe0 != f|nri {
				return nil, fmt.Errorf("payload %d: STAP-A F/NRI %#x, units give %#x", k, p[0]&0xe0, f|nri)
			}
		case naluFUA:
			if len(p) < 3 {
				return nil, fmt.Errorf("payload %d: FU-A of %d bytes", k, len(p))
			}
			start, end := p[1]&0x80 != 0, p[1]&0x40 != 0
			switch {
			case p[1]&0x20 != 0:
				return nil, fmt.Errorf("payload %d: FU-A R bit set", k)
			case start && end:
				return nil, fmt.Errorf("payload %d: FU-A with start and end bits (RFC 6184 5.8)", k)
			case start && fu != nil, !start && fu == nil:
				return nil, fmt.Errorf("payload %d: FU-A start bit %v inside/outside a fragmented NALU", k, start)
			case start:
				fu = append([]byte{p[0]&0xe0 | p[1]&0x1f}, p[2:]...)
			default:
				if fu[0] != p[0]&0xe0|p[1]&0x1f {
					return nil, fmt.Errorf("payload %d: FU-A header %#x/%#x changed within the NALU", k, p[0], p[1])
				}
				fu = append(fu, p[2:]...)
			}
			if end {
				out = append(out, fu)
				fu = nil
			}
		case 25, 26, 27, 29:
			return nil, fmt.Errorf("payload %d: type %d is not sent", k, typ)
		default:
			out = append(out, p)
		}
	}
	if fu != nil {
		return nil, errors.New("access unit ends inside a fragmented NALU")
	}
	return out, nil
}

// FuzzWriteH264: any sequence of NALUs, access units and discontinuities
// (parameter sets declared or not, any payload bound) never panics; every
// RTP payload fits the bound (1200 by default); the packets of each write
// carry one timestamp, the marker on the last, continuous sequence
// numbers and the keyframe flag on the first packet of an IDR; and
// depacketizing them gives back exactly the NALUs of rtpModel; the
// retransmission history holds the latest packets.
func FuzzWriteH264(f *testing.F) {
	f.Add(uint8(1), uint16(0), encodeFuzzAUs(
		[][]byte{testAUD, testSEI, idr(100), testFiller}, [][]byte{slice(1200)}, [][]byte{slice(1201)}, [][]byte{idr(3000)}))
	f.Add(uint8(0), uint16(0), encodeFuzzAUs(
		[][]byte{idr(10)}, [][]byte{testSPS, testPPS}, [][]byte{slice(5), slice(6), slice(7)}, [][]byte{testSPS, testPPS, idr(90)}))
	f.Add(uint8(1), uint16(64), encodeFuzzAUs([][]byte{idr(63)}, [][]byte{idr(64), slice(65), {0x41}}, [][]byte{slice(4095)}))
	f.Add(uint8(1), uint16(1), encodeFuzzAUs([][]byte{{0x65}, {}, {0x61, 1}, {0xe5, 2, 3}}))
	// Found by the fuzzer: NAL unit types 24-31 and 0 would be read as
	// STAP-A/FU-A/... by the receiver if sent as single NAL unit packets.
	f.Add(uint8(1), uint16(0), encodeFuzzAUs([][]byte{idr(30)},
		[][]byte{{0x38, 0, 1, 0x41}, {0x7c, 0x85, 1, 2}, slice(8), {0x00, 1}, {0x1f}, nalu(0x59, 2000)}))
	disc := encodeFuzzAUs([][]byte{idr(40)}, [][]byte{slice(20)})
	disc[len(disc)-22] |= 0x40 // Discontinuity before the second AU
	f.Add(uint8(1), uint16(500), disc)
	f.Fuzz(func(t *testing.T, flags uint8, maxPayload uint16, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		// A small retransmission history keeps Close cheap (it clears
		// every slot) and is checked below like a big one.
		st := NewStream(StreamConfig{MaxPayload: int(maxPayload % 1537), RetransmitPackets: 1 + int(flags>>1)%64}, nil)
		defer st.Close()
		hist := st.Config().RetransmitPackets
		bound := st.Config().MaxPayload
		if maxPayload%1537 == 0 && bound != 1200 {
			t.Fatalf("default MaxPayload %d, want 1200", bound)
		}
		m := rtpModel{waitIDR: true}
		v := &VideoParams{}
		if flags&1 != 0 {
			v.SPS, v.PPS = testSPS, testPPS
			m.sps, m.pps = testSPS, testPPS
			m.check.commitParams(testSPS, testPPS)
			if len(m.check.sps) != 1 || len(m.check.pps) != 1 {
				t.Fatal("test parameter sets rejected")
			}
		}
		st.SetTracks(Tracks{Video: v})
		sub, err := st.Subscribe("fuzz", SubscribeOptions{VideoOnly: true, QueuePackets: 2*len(data) + 64})
		if err != nil {
			t.Fatal(err)
		}
		var (
			lastSeq  uint16
			lastTS   uint32
			lastAU   = -1
			anyOut   bool
			rebased  bool
			payloads [][]byte
		)
		for i, au := range decodeFuzzAUs(data) {
			if au.discontinuity {
				st.Discontinuity()
				rebased = true
			}
			st.WriteH264(time.Duration(i)*frame30, au.nalus)
			want, idr := m.write(au)
			pkts := drain(t, sub)
			if want == nil {
				if len(pkts) > 0 {
					t.Fatalf("AU %d: %d packets, want none", i, len(pkts))
				}
				continue
			}
			if len(pkts) == 0 {
				t.Fatalf("AU %d: no packets, want %d NALUs", i, len(want))
			}
			payloads = payloads[:0]
			for k, p := range pkts {
				if p.Kind != KindVideo || p.RTP.PayloadType != PayloadTypeH264 {
					t.Fatalf("AU %d packet %d: kind %v PT %d", i, k, p.Kind, p.RTP.PayloadType)
				}
				if len(p.RTP.Payload) > bound {
					t.Fatalf("AU %d packet %d: payload %d bytes > %d", i, k, len(p.RTP.Payload), bound)
				}
				if p.RTP.Marker != (k == len(pkts)-1) {
					t.Fatalf("AU %d packet %d of %d: marker %v", i, k, len(pkts), p.RTP.Marker)
				}
				if p.Keyframe != (idr && k == 0) {
					t.Fatalf("AU %d packet %d: Keyframe %v (IDR %v)", i, k, p.Keyframe, idr)
				}
				if p.RTP.Timestamp != pkts[0].RTP.Timestamp {
					t.Fatalf("AU %d packet %d: timestamp %d, first %d", i, k, p.RTP.Timestamp, pkts[0].RTP.Timestamp)
				}
				if (anyOut || k > 0) && p.RTP.SequenceNumber != lastSeq+1 {
					t.Fatalf("AU %d packet %d: seq %d after %d", i, k, p.RTP.SequenceNumber, lastSeq)
				}
				lastSeq, anyOut = p.RTP.SequenceNumber, true
				payloads = append(payloads, p.RTP.Payload)
			}
			if ts := pkts[0].RTP.Timestamp; lastAU >= 0 && !rebased && ts-lastTS != uint32(3000*(i-lastAU)) {
				t.Fatalf("AU %d: timestamp +%d since AU %d, want +%d", i, ts-lastTS, lastAU, 3000*(i-lastAU))
			}
			lastTS, lastAU, rebased = pkts[0].RTP.Timestamp, i, false
			// NACKs are answered from the latest packets.
			for _, p := range pkts[max(0, len(pkts)-hist):] {
				if got := st.RecentVideo(p.RTP.SequenceNumber); got != p {
					t.Fatalf("AU %d: RecentVideo(%d) = %p, want the packet sent %p (history %d)", i, p.RTP.SequenceNumber, got, p, hist)
				}
			}
			got, err := reassemble(payloads)
			if err != nil {
				t.Fatalf("AU %d: %v", i, err)
			}
			if !equalAU(got, want) {
				t.Fatalf("AU %d: depacketized %d NALUs (types %v), want %d (types %v)", i, len(got), naluTypes(got), len(want), naluTypes(want))
			}
		}
		if s := sub.Stats(); s.Dropped != 0 {
			t.Fatalf("subscriber dropped %d packets: the check saw a partial stream", s.Dropped)
		}
		if n := st.Stats().InvalidVideo; n != uint64(m.invalid) {
			t.Fatalf("InvalidVideo %d, the model rejected %d access units", n, m.invalid)
		}
	})
}

// FuzzRedactError: an error whose text carries a URL with a password keeps
// its identity (errors.Is) through redactError but not the password.
func FuzzRedactError(f *testing.F) {
	f.Add("dial ", "rtsp", "admin", "hunter2", "10.0.0.5:554/live", ": timeout")
	f.Add(`open "`, "rtsps", "u", "p%40ss@x", "cam.local", `": 401`)
	f.Add("'", "rtsp", "u", "it's", "h", "'")
	if redactError(nil) != nil {
		f.Fatal("redactError(nil) != nil")
	}
	f.Fuzz(func(t *testing.T, prefix, scheme, user, pass, rest, suffix string) {
		raw, ok := fuzzhelp.UserinfoURL(scheme, user, pass, rest)
		if !ok || pass == "" {
			return
		}
		base := errors.New(prefix + raw + suffix)
		err := redactError(fmt.Errorf("source: %w", base))
		if !errors.Is(err, base) {
			t.Fatal("redactError lost the wrapped error")
		}
		public := "source: " + prefix + scheme + "://" + rest + suffix
		for what, s := range map[string]string{"Error()": err.Error(), "RedactURL": RedactURL(base.Error())} {
			if fuzzhelp.PasswordLeft(s, pass, public) {
				t.Fatalf("%s of %q = %q: password %q left", what, base, s, pass)
			}
		}
	})
}
